"""Run the study: each grid point trained, exported to ONNX Runtime, timed; rows appended to
points.jsonl as they finish so `--resume` continues where an interrupted run stopped.

The work happens in `OUT.partial/`; only a finished study is swapped into OUT, so OUT is always a
complete study (an existing OUT is replaced only with --force, or extended with --resume).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from edgemed.data import Dataset, load_dataset
from edgemed.errors import InputError
from edgemed.executors import ExecutorSpec, check_available
from edgemed.fileio import append_jsonl, read_jsonl
from edgemed.progress import Progress
from edgemed.study import (
    GridPoint,
    StudyConfig,
    check_config,
    default_grid,
    extended_points,
    quick_grid,
)

POINTS = "points.jsonl"
LATENCY_PRECISION = "int8"  # every point is timed as its ONNX Runtime static INT8 export
STUDY_FOLDER_SIZE = (
    64  # folders (brain MRI) are studied at 64 x 64 unless --image-size says otherwise
)


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def run_study(cfg: StudyConfig, executor: ExecutorSpec | None = None) -> dict:
    """Train/export/time every grid point not yet done; write study.json, study.md, pareto.svg.
    `executor` (default local, in this process) says where the points run."""
    from edgemed.study.report import write_report

    check_config(cfg)
    check_available(executor or ExecutorSpec("local"))
    _refuse_outputs(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    ds = load_dataset(cfg.data, _image_size(cfg), cfg.channels, cfg.seed, cfg.near_duplicates)
    grid = grid_for(cfg, ds)
    work = _prepare_work(cfg, ds)
    done = read_points(work / POINTS)
    todo = [p for p in grid if p.name not in done]
    precision = LATENCY_PRECISION
    bar = Progress(len(grid), "study")
    if len(todo) < len(grid):
        bar.advance(len(grid) - len(todo))
        bar.note(f"resuming: {len(grid) - len(todo)} of {len(grid)} points already done")

    def record(row: dict) -> None:
        append_jsonl(work / POINTS, row)
        done[row["name"]] = row
        bar.advance(1, f"{row['name']}: AUC {row['test_auc']:.4f}, {row['latency_ms']:.3f} ms")

    if executor is None or executor.kind == "local":
        for pt in todo:
            bar.note(f"{pt.name}: training")
            record(run_point(pt, ds, cfg, work, precision))
    else:
        _run_distributed(executor, todo, ds, cfg, work, precision, record, bar)
    bar.close()
    if todo:
        label = executor.label if executor else "local"
        append_jsonl(work / POINTS, {**_session(t0, c0, len(todo)), "executor": label})
    study = write_report(work, cfg, ds, grid, done, read_sessions(work / POINTS))
    _swap(work, Path(cfg.out))
    return study


def _run_distributed(spec, todo, ds, cfg, work, precision, record, bar) -> None:
    """The points on Ray; unfinished ones (a node gone) leave OUT.partial for --resume."""
    from edgemed.executors import open_executor
    from edgemed.study.distributed import run_points

    with open_executor(spec) as ex:
        bar.note(f"{len(todo)} points on {ex.label}")
        outcome = run_points(ex, todo, ds, cfg, work, precision, record)
    if outcome.unfinished:
        raise outcome.error("study points", str(work))


def _image_size(cfg: StudyConfig) -> tuple[int, int] | None:
    if cfg.image_size:
        return (cfg.image_size, cfg.image_size)
    p = Path(cfg.data).expanduser()
    return (STUDY_FOLDER_SIZE, STUDY_FOLDER_SIZE) if p.is_dir() else None


def grid_for(cfg: StudyConfig, ds: Dataset) -> tuple[GridPoint, ...]:
    grid = quick_grid() if cfg.quick else default_grid()
    if cfg.extended:
        outputs = 1 if ds.task == "binary" else len(ds.class_names)
        grid = (*grid, *extended_points(cfg.channels, outputs))
    return grid


def _refuse_outputs(cfg: StudyConfig) -> None:
    out, part = Path(cfg.out), partial_dir(Path(cfg.out))
    if cfg.resume:
        if not part.is_dir() and not (out / POINTS).is_file():
            raise InputError(
                f"nothing to resume: neither {part} nor a finished study at {out}; drop --resume"
            )
        return
    if out.exists() and not cfg.force:
        raise InputError(
            f"output {out} already exists; pass --resume to extend it or --force to start over"
        )
    if part.exists() and not cfg.force:
        raise InputError(
            f"an interrupted study is waiting in {part}; pass --resume to continue it or --force to start over"
        )


def _prepare_work(cfg: StudyConfig, ds: Dataset) -> Path:
    """The working dir: a fresh OUT.partial, or the one being resumed (header must match)."""
    out, part = Path(cfg.out), partial_dir(Path(cfg.out))
    header = {
        "kind": "header",
        "identity": cfg.identity(),
        "data_hash": ds.data_hash,
        "data": ds.path,
    }
    if cfg.resume:
        _check_header((part if part.is_dir() else out) / POINTS, header)
        if not part.is_dir():
            shutil.copytree(out, part)
        return part
    if part.exists():
        shutil.rmtree(part)
    part.mkdir(parents=True)
    append_jsonl(part / POINTS, header)
    return part


def _check_header(path: Path, header: dict) -> None:
    records = read_jsonl(path)
    first = records[0] if records else {}
    for key in ("identity", "data_hash"):
        if first.get(key) != header[key]:
            raise InputError(
                f"the study in {path.parent} was run with other settings or data ({key}: "
                f"{first.get(key)} vs {header[key]}); pass --force to start over"
            )


def read_points(path: Path) -> dict[str, dict]:
    """Finished grid points by name (a torn last line from an interrupted write is ignored)."""
    return {r["name"]: r for r in read_jsonl(path, repair=True) if r.get("kind") == "point"}


def read_sessions(path: Path) -> list[dict]:
    return [r for r in read_jsonl(path) if r.get("kind") == "session"]


def _session(t0: float, c0: float, points: int) -> dict:
    return {
        "kind": "session",
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(time.process_time() - c0, 1),
        "points": points,
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
    }


def _swap(work: Path, out: Path) -> None:
    """Move the finished study into place; an old OUT is removed only after the rename."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(work, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, out)


def run_point(pt: GridPoint, ds: Dataset, cfg: StudyConfig, work: Path, precision: str) -> dict:
    """Train one grid point, export it to ONNX Runtime at `precision`, time it; the result row."""
    from edgemed.export import ExportRequest, run_export
    from edgemed.models import ModelSpec
    from edgemed.training import TrainConfig, train, write_training_dir

    t0, cpu0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()
    tcfg = TrainConfig(
        data=ds.path,
        model=ModelSpec(pt.model, dict(pt.kwargs)),
        epochs=cfg.epochs,
        patience=cfg.patience,
        seed=cfg.seed,
        image_size=tuple(ds.split("train").images.shape[1:3]),
        channels=cfg.channels,
        near_duplicates=cfg.near_duplicates,
        batch_size=64 if len(ds.split("train")) >= 1000 else 32,
        threads=cfg.threads,
    )
    result = train(tcfg, ds)
    model_dir = work / "models" / pt.name
    write_training_dir(result, tcfg.model, model_dir, force=True)
    art = work / "artifacts" / f"{pt.name}-onnx-{precision}"
    # The study measures INT8 drift (reported per row) rather than gating on it.
    budget = {"max_auc_drop": 1.0, "max_flip_rate": 1.0} if precision != "fp32" else {}
    manifest = run_export(
        ExportRequest(
            model=str(model_dir),
            target="onnx",
            out=art,
            precision=precision,
            calib=ds.path if precision == "int8" else None,
            force=True,
            options=budget,
        )
    )
    timing = time_artifact(art, ds, cfg.latency_seconds)
    timing["val_flip_rate"] = (manifest.get("drift") or {}).get("flip_rate")
    timing["cpu_seconds"] = round(time.process_time() - cpu0, 1)
    return point_row(pt, result.card, timing, precision, time.perf_counter() - t0, load0)


def time_artifact(art: Path, ds: Dataset, seconds: float) -> dict:
    """Batch-1, 1-thread latency of the artifact's runtime call, and its own test AUC."""
    from edgemed.artifact import load_artifact, open_runner
    from edgemed.backends import run_batches
    from edgemed.harness.latency import measure_latency
    from edgemed.training import evaluate

    artifact = load_artifact(art)
    test = ds.split("test")
    with open_runner(artifact, threads=1) as runner:
        x = artifact.contract.normalize(test.images[:1])
        stats = measure_latency(
            lambda: runner.infer(x), warmup_seconds=seconds / 2, min_runs=50, min_seconds=seconds
        )
        logits = run_batches(runner, artifact.contract, test.images)
    files = artifact.manifest["files"]
    return {
        "latency": stats.to_dict(),
        "artifact_test_auc": evaluate(artifact.contract, test.labels, logits)["auc"],
        "artifact_bytes": sum(f["bytes"] for n, f in files.items() if n.endswith(".onnx")),
    }


def point_row(
    pt: GridPoint, card: dict, timing: dict, precision: str, seconds: float, load0
) -> dict:
    t = card["test"]
    return {
        "kind": "point",
        **pt.to_dict(),
        "params": card["complexity"]["params"],
        "macs": card["complexity"]["macs"],
        "train_seconds": card["training"]["seconds"],
        "epochs_run": card["training"]["epochs_run"],
        "best_epoch": card["training"]["best_epoch"],
        "test_auc": t["auc"],
        "test_auc_ci95": t.get("auc_ci95"),
        "sensitivity": t.get("sensitivity"),
        "specificity": t.get("specificity"),
        "latency_precision": LATENCY_PRECISION,
        "latency_ms": timing["latency"]["median_ms"],
        "latency_p90_ms": timing["latency"]["p90_ms"],
        "latency": timing["latency"],
        "artifact_test_auc": timing["artifact_test_auc"],
        "artifact_bytes": timing["artifact_bytes"],
        "artifact_val_flip_rate": timing["val_flip_rate"],
        "point_seconds": round(seconds, 1),
        "cpu_seconds": timing["cpu_seconds"],
        "loadavg_start": [round(v, 2) for v in load0],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
    }
