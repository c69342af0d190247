"""Run a sweep: train (the study grid, on the executor) -> export every model to every (target,
precision) (executor jobs; TensorRT ones on a device of their profile, where engines are built)
-> bench every artifact on a device of its profile -> per target the fastest artifact passing
the clinical gate, in OUT/selection.json. Each stage keeps what it finished: --resume goes on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edgemed.artifact import MANIFEST
from edgemed.errors import EdgemedError, InputError
from edgemed.evaluation.drift import Drift
from edgemed.evaluation.limits import BUNDLE_DEFAULTS, limits_from, verdict
from edgemed.executors import ExecutorSpec, Job, check_available, open_executor
from edgemed.executors.blobs import pack_dirs, unpack
from edgemed.fileio import read_json, write_json_atomic
from edgemed.harness.bench import BenchRequest, run_bench
from edgemed.pipeline.budget import UNGATED, BudgetOptions
from edgemed.pipeline.export import ExportRequest, run_export
from edgemed.profiles import resolve_target
from edgemed.provenance import provenance
from edgemed.runtimes import registration
from edgemed.study import StudyConfig
from edgemed.study.run import partial_dir, run_study
from edgemed.sweep import SweepPlan

SELECTION = "selection.json"


def run_sweep(plan: SweepPlan, out: Path, spec: ExecutorSpec, resume: bool, force: bool) -> dict:
    """All stages; returns the selection document."""
    check_available(spec)
    _claim(out, resume, force)
    models = train_stage(plan, out, spec)
    arts, failed = export_stage(plan, out, spec, models)
    results = bench_stage(plan, out, spec, arts)
    selection = select(plan, results, failed, out)
    write_json_atomic(out / SELECTION, selection)
    return selection


def _claim(out: Path, resume: bool, force: bool) -> None:
    if resume and force:
        raise InputError("--resume and --force contradict each other; pass one of them")
    if out.exists() and not resume:
        if not force:
            raise InputError(
                f"output {out} already exists; pass --resume to continue it or --force to start over"
            )
        shutil.rmtree(out)
    if resume and not out.is_dir():
        raise InputError(f"nothing to resume at {out}; drop --resume")
    out.mkdir(parents=True, exist_ok=True)


def train_stage(plan: SweepPlan, out: Path, spec: ExecutorSpec) -> dict[str, Path]:
    """The study grid (trained, exported to ORT, timed): model name -> training dir."""

    study_out = out / "study"
    started = study_out.exists() or partial_dir(study_out).exists()
    cfg = StudyConfig(
        data=plan.data,
        out=study_out,
        quick=plan.grid == "quick",
        resume=started,
        epochs=plan.epochs,
        patience=plan.patience,
        seed=plan.seed,
        threads=plan.threads,
        latency_seconds=min(plan.bench_seconds, 1.0),
    )
    study = run_study(cfg, spec)
    return {r["name"]: study_out / "models" / r["name"] for r in study["rows"]}


def export_task(model: object, name: str, target: str, precision: str, data: str) -> dict:
    """On a worker: export one model; the artifact as a blob, or the export's error line."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgemed-export-") as d:
        tmp = Path(d)
        unpack(model, tmp, f"model {name}")
        req = ExportRequest(
            model=str(tmp / name),
            target=target,
            out=tmp / "art",
            precision=precision,
            calib=data if precision == "int8" else None,
            force=True,
            # Exports record INT8 drift instead of refusing on it: the gate is applied at selection.
            budget=UNGATED if precision != "fp32" else BudgetOptions(),
        )
        try:
            run_export(req)
        except EdgemedError as exc:
            return {"error": " ".join(str(exc).split())}
        return {"files": pack_dirs(tmp, ["art"])}


def export_stage(plan: SweepPlan, out: Path, spec: ExecutorSpec, models: dict[str, Path]):
    """Every model x (target, precision) not yet exported; returns (artifact dirs, failures)."""

    arts_dir = out / "artifacts"
    arts_dir.mkdir(exist_ok=True)
    wanted = {
        f"{m}-{t}-{p}": (m, t, p) for m in models for t, p in plan.pairs()
    }  # fmt: skip
    todo = {k: v for k, v in wanted.items() if not (arts_dir / k / "manifest.json").is_file()}
    failed: dict[str, str] = {}
    if todo:
        # TensorRT engines are built on the device that will run them.
        on_device = {
            t
            for _, t, _ in todo.values()
            if registration(resolve_target(t).runtime).builds_on_device
        }
        with open_executor(spec, tuple(sorted(on_device))) as ex:
            blobs = {m: ex.put(pack_dirs(p.parent, [p.name])) for m, p in models.items()}
            jobs = [
                Job(k, export_task, (blobs[m], m, t, p, plan.data), target=t if t in on_device else None)
                for k, (m, t, p) in todo.items()
            ]  # fmt: skip

            def done(key: str, value: dict, node: dict) -> None:
                if "error" in value:
                    failed[key] = value["error"]
                    return
                stage = arts_dir / f".{key}.incoming"
                shutil.rmtree(stage, ignore_errors=True)
                unpack(value["files"], stage, f"artifact {key}")
                os.replace(stage / "art", arts_dir / key)
                shutil.rmtree(stage)

            outcome = ex.run(jobs, done)
        if outcome.unfinished:
            raise outcome.error("exports", str(out))
    arts = [arts_dir / k for k in wanted if k not in failed]
    return arts, failed


def bench_stage(plan: SweepPlan, out: Path, spec: ExecutorSpec, arts: list[Path]) -> dict:
    """Every artifact on a device of its profile (bench --resume where a run was started)."""

    if not arts:
        raise EdgemedError(f"no artifact could be exported; see {out / 'artifacts'}")
    req = BenchRequest(
        artifacts=tuple(str(a) for a in arts),
        data=plan.data,
        out=out / "bench",
        seconds=plan.bench_seconds,
        min_runs=plan.bench_min_runs,
        resume=(out / "bench" / "bench.json").is_file(),
        executor=spec.label,
        workers=spec.workers,
    )
    return run_bench(req, progress=False)


def row_target(row: dict) -> str:
    """The target profile of a bench row: where it ran, else its artifact's manifest."""

    node = row.get("node") or {}
    if node.get("target"):
        return str(node["target"])
    return str(read_json(Path(row["artifact"]) / MANIFEST, "artifact manifest")["target"])


def select(plan: SweepPlan, results: dict, export_failures: dict[str, str], out: Path) -> dict:
    """Per target: the fastest artifact (median latency) whose drift passes the clinical gate."""

    limits = limits_from(dict(plan.gate), BUNDLE_DEFAULTS)
    targets: dict[str, dict] = {t: {"candidates": [], "passing": []} for t in plan.targets}
    for row in results["rows"]:
        entry = targets.setdefault(row_target(row), {"candidates": [], "passing": []})
        entry["candidates"].append(row["label"])
        if row["status"] == "ok" and verdict(limits, Drift.from_dict(row["drift"])).passed:
            entry["passing"].append(row)
    return {
        "format": "edgemed-selection/1",
        "gate": limits.to_dict(),
        "targets": {t: _winner(e) for t, e in targets.items()},
        "export_failures": export_failures,
        "bench": str(out / "bench"),
        "provenance": provenance(config=plan.to_dict()),
    }


def _winner(entry: dict) -> dict:
    passing = entry["passing"]
    base = {"candidates": len(entry["candidates"]), "passing": len(passing)}
    if not passing:
        return {**base, "artifact": None, "reason": "no artifact passes the clinical gate"}
    best = min(passing, key=lambda r: r["latency"]["median_ms"])
    d = best["drift"]
    return {
        **base,
        "artifact": best["artifact"],
        "label": best["label"],
        "median_ms": best["latency"]["median_ms"],
        "auc": d.get("auc_candidate"),
        "auc_drop": d.get("auc_drop"),
        "decisive_flip_rate": d.get("decisive_flip_rate"),
        "node": best.get("node"),
    }
