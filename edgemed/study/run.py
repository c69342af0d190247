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
from edgemed.executors import ExecutorSpec, check_available, open_executor
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
from edgemed.study.distributed import run_points
from edgemed.study.point import LATENCY_PRECISION, run_point
from edgemed.study.report import write_report

POINTS = "points.jsonl"
STUDY_FOLDER_SIZE = (
    64  # folders (brain MRI) are studied at 64 x 64 unless --image-size says otherwise
)


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def run_study(cfg: StudyConfig, executor: ExecutorSpec | None = None) -> dict:
    """Train/export/time every grid point not yet done; write study.json, study.md, pareto.svg.
    `executor` (default local, in this process) says where the points run."""

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
