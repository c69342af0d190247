"""Run a sweep: train (the study grid, on the executor) -> export every model to every (target,
precision) (executor jobs, each in a fresh process; TensorRT ones on a device of their profile,
where engines are built) -> bench every artifact on a device of its profile -> per device the
artifact to run (`sweep/select.py`), in OUT/selection.json and OUT/selection.html. Each stage
keeps what it finished: --resume goes on. The terminal gets one line per stage; the rest goes to
OUT/sweep.log."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from edgemed.errors import EdgemedError, InputError
from edgemed.evaluation.limits import BUNDLE_DEFAULTS, limits_from
from edgemed.executors import ExecutorSpec, Job, check_available, open_executor
from edgemed.executors.blobs import pack_dirs, unpack
from edgemed.fileio import write_bytes_atomic, write_json_atomic
from edgemed.harness.bench import BenchRequest, run_bench
from edgemed.pipeline.budget import UNGATED, BudgetOptions
from edgemed.pipeline.export import ExportRequest, run_export
from edgemed.profiles import resolve_target
from edgemed.provenance import provenance
from edgemed.runtimes import registration
from edgemed.study import StudyConfig, default_grid, quick_grid
from edgemed.study.run import partial_dir, run_study
from edgemed.sweep import SweepPlan
from edgemed.sweep.console import LOG_NAME, Stage, into_log
from edgemed.sweep.report import selection_html
from edgemed.sweep.select import select as select_devices

SELECTION = "selection.json"
SELECTION_HTML = "selection.html"
STAGES = 3
# Exports run in one process per runtime, forked from a clean server: LiteRT's converter imports
# JAX, and a process holding JAX warns at (and can deadlock in) any later fork -- NNCF's workers,
# the bench worker processes. JAX stays in the LiteRT export process; the sweep's own process and
# the other runtimes' export processes never import it. One process per runtime (not per export)
# pays each converter's import once.
START_METHOD = "forkserver"
_EXPORT_POOLS: dict[str, ProcessPoolExecutor] = {}


def run_sweep(
    plan: SweepPlan, out: Path, spec: ExecutorSpec, resume: bool, force: bool, allow_proxy: bool
) -> dict:
    """All stages; returns the selection document."""

    check_available(spec)
    _claim(out, resume, force)
    with into_log(out / LOG_NAME) as term:
        models = train_stage(plan, out, spec, term)
        arts, failed = export_stage(plan, out, spec, models, term)
        results = bench_stage(plan, out, spec, arts, term)
    selection = select(plan, results, failed, out, allow_proxy)
    write_json_atomic(out / SELECTION, selection)
    write_bytes_atomic(out / SELECTION_HTML, selection_html(selection).encode())
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


def train_stage(plan: SweepPlan, out: Path, spec: ExecutorSpec, term=None) -> dict[str, Path]:
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
    grid = quick_grid() if cfg.quick else default_grid()
    stage = Stage(term, 1, STAGES, "train", len(grid)) if term else None
    study = run_study(cfg, spec)
    if stage:
        n = len(study["rows"])
        stage.finish(f"{n} models trained ({plan.grid} grid, {plan.epochs} epochs)", n)
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


def export_isolated(*args) -> dict:
    """`export_task(*args)` in its runtime's own export process (START_METHOD); a process that
    dies is an export failure of this configuration, not of the sweep."""

    runtime = resolve_target(args[2]).runtime
    pool = _EXPORT_POOLS.get(runtime)
    if pool is None:
        ctx = multiprocessing.get_context(START_METHOD)
        ctx.set_forkserver_preload(["edgemed.sweep.run"])
        pool = _EXPORT_POOLS[runtime] = ProcessPoolExecutor(max_workers=1, mp_context=ctx)
    try:
        return pool.submit(export_task, *args).result()
    except BrokenProcessPool as exc:
        _EXPORT_POOLS.pop(runtime).shutdown(wait=False, cancel_futures=True)
        return {"error": f"the {runtime} export process died ({exc}); see {LOG_NAME}"}


def close_export_processes() -> None:
    """End the per-runtime export processes (after the export stage, or on any exit)."""
    while _EXPORT_POOLS:
        _EXPORT_POOLS.popitem()[1].shutdown(wait=True, cancel_futures=True)


def export_stage(
    plan: SweepPlan, out: Path, spec: ExecutorSpec, models: dict[str, Path], term=None
):
    """Every model x (target, precision) not yet exported; returns (artifact dirs, failures)."""

    arts_dir = out / "artifacts"
    arts_dir.mkdir(exist_ok=True)
    wanted = {
        f"{m}-{t}-{p}": (m, t, p) for m in models for t, p in plan.pairs()
    }  # fmt: skip
    todo = {k: v for k, v in wanted.items() if not (arts_dir / k / "manifest.json").is_file()}
    failed: dict[str, str] = {}
    stage = Stage(term, 2, STAGES, "export", len(todo)) if term else None
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
                Job(k, export_isolated, (blobs[m], m, t, p, plan.data), target=t if t in on_device else None)
                for k, (m, t, p) in todo.items()
            ]  # fmt: skip

            def done(key: str, value: dict, node: dict) -> None:
                if stage:
                    stage.advance(key)
                if "error" in value:
                    failed[key] = value["error"]
                    return
                incoming = arts_dir / f".{key}.incoming"
                shutil.rmtree(incoming, ignore_errors=True)
                unpack(value["files"], incoming, f"artifact {key}")
                os.replace(incoming / "art", arts_dir / key)
                shutil.rmtree(incoming)

            try:
                outcome = ex.run(jobs, done)
            finally:
                close_export_processes()
        if outcome.unfinished:
            raise outcome.error("exports", str(out))
    arts = [arts_dir / k for k in wanted if k not in failed]
    if stage:
        stage.finish(f"{len(arts)} artifacts, {len(failed)} failed (see {LOG_NAME})")
    return arts, failed


def bench_stage(
    plan: SweepPlan, out: Path, spec: ExecutorSpec, arts: list[Path], term=None
) -> dict:
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
    stage = Stage(term, 3, STAGES, "bench", len(arts)) if term else None
    results = run_bench(req, progress=False)
    if stage:
        ok = sum(r.get("status") == "ok" for r in results["rows"])
        stage.finish(f"{ok} of {len(results['rows'])} rows ok")
    return results


def select(
    plan: SweepPlan, results: dict, export_failures: dict[str, str], out: Path, allow_proxy: bool
) -> dict:
    """The selection document: per device the chosen artifact and every candidate's outcome."""

    limits = limits_from(dict(plan.gate), BUNDLE_DEFAULTS)
    return {
        "format": "edgemed-selection/2",
        "gate": limits.to_dict(),
        "rule": plan.select.to_dict(),
        "allow_proxy": allow_proxy,
        "devices": select_devices(plan.targets, results, limits, plan.select, allow_proxy),
        "export_failures": export_failures,
        "bench": str(out / "bench"),
        "measured_by": results.get("device"),
        "provenance": provenance(config=plan.to_dict()),
    }
