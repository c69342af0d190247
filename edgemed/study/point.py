"""One study grid point: train it, export it to ONNX Runtime INT8, time it; its result row."""

from __future__ import annotations

import os
import time
from pathlib import Path

from edgemed.artifact import load_artifact
from edgemed.backends import open_runner, run_batches
from edgemed.data import Dataset
from edgemed.harness.latency import measure_latency
from edgemed.models import ModelSpec
from edgemed.pipeline.budget import UNGATED, BudgetOptions
from edgemed.pipeline.export import ExportRequest, run_export
from edgemed.pipeline.training import TrainConfig, evaluate, train, write_training_dir
from edgemed.study import GridPoint, StudyConfig

LATENCY_PRECISION = "int8"  # every point is timed as its ONNX Runtime static INT8 export


def run_point(pt: GridPoint, ds: Dataset, cfg: StudyConfig, work: Path, precision: str) -> dict:
    """Train one grid point, export it to ONNX Runtime at `precision`, time it; the result row."""

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
    budget = UNGATED if precision != "fp32" else BudgetOptions()
    manifest = run_export(
        ExportRequest(
            model=str(model_dir),
            target="onnx",
            out=art,
            precision=precision,
            calib=ds.path if precision == "int8" else None,
            force=True,
            budget=budget,
        )
    )
    timing = time_artifact(art, ds, cfg.latency_seconds)
    timing["val_flip_rate"] = (manifest.get("drift") or {}).get("flip_rate")
    timing["cpu_seconds"] = round(time.process_time() - cpu0, 1)
    return point_row(pt, result.card, timing, precision, time.perf_counter() - t0, load0)


def time_artifact(art: Path, ds: Dataset, seconds: float) -> dict:
    """Batch-1, 1-thread latency of the artifact's runtime call, and its own test AUC."""

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
