"""One bench row: the worker job for a configuration, its run in a fresh process, and the row
built from what the worker measured (drift against the FP32 reference computed here). Used by the
local row loop (edgemed.harness.bench) and the cluster one (edgemed.harness.distributed)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from edgemed.errors import EdgemedError
from edgemed.evaluation.drift import drift_from_logits
from edgemed.evaluation.sanity import OutputError
from edgemed.fileio import sha256_file
from edgemed.harness.device import busy_warning, load_average
from edgemed.harness.plan import Config, EvalData, Plan, Reference
from edgemed.harness.proc import WorkerResult, run_worker


class RowRequest(Protocol):
    """What a row reads from `edgemed.harness.bench.BenchRequest` (declared here so that rows,
    which bench imports, does not import bench back)."""

    threads: int
    batch: int
    timeout: float
    n_boot: int

    def latency_settings(self) -> dict: ...


def _job(name: str, kind: str, path: Path, contract, data: Path, logits: Path, **extra) -> dict:
    return {
        "name": name,
        "kind": kind,
        "path": str(path),
        "contract": contract.to_dict(),
        "data": str(data),
        "logits_out": str(logits),
        **extra,
    }


def reference_logits(
    ref: Reference, plan: Plan, out: Path, tmp: Path, timeout: float
) -> np.ndarray:
    """FP32 reference logits on the split (cached in DIR/references, computed in a worker)."""

    cached = out / "references" / f"{ref.key}.npy"
    if cached.is_file():
        return np.load(cached)
    cfg = next(c for c in plan.configs if c.reference.key == ref.key)
    contract = cfg.contract.with_layout("NCHW")
    data = tmp / f"data-{cfg.data_key}.npz"
    job = _job(f"ref-{ref.key}", ref.kind, ref.path, contract, data, tmp / f"ref-{ref.key}.npy")
    res = run_worker(job, tmp, timeout)
    if res.status != "ok":
        raise EdgemedError(
            f"the FP32 reference {ref.path} could not be run ({res.error}); no drift can be measured "
            "without it: fix it or pass the FP32 ONNX artifact of the same model"
        )
    logits = np.load(job["logits_out"])
    np.save(cached, logits)
    return logits


def run_row(
    req: RowRequest, cfg: Config, ev: EvalData, ref_logits: np.ndarray, out: Path, tmp: Path
) -> dict:
    """Run one configuration in a fresh process and build its row (drift computed here)."""

    logits_path = out / "logits" / f"{cfg.key}.npy"
    job = worker_job(req, cfg, tmp / f"data-{ev.key}.npz", logits_path)
    before = load_average()
    if cfg.problem:  # a corrupted artifact is its own failed row, never run
        res = WorkerResult("failed", {}, cfg.problem, 0.0)
    else:
        res = run_worker(job, tmp, req.timeout)
    row = finish_row(req, cfg, ev, ref_logits, res, (before, load_average()), logits_path)
    row["busy_warning"] = busy_warning(before)
    return row


def worker_job(req: RowRequest, cfg: Config, data: Path, logits_path: Path) -> dict:
    """The job file edgemed.harness.worker runs for one configuration."""
    kind = "artifact" if cfg.kind == "artifact" else cfg.reference.kind
    job = _job(cfg.key, kind, cfg.path, cfg.contract, data, logits_path)
    job.update(
        threads=req.threads, batch=req.batch, latency=req.latency_settings(), device=cfg.device
    )
    return job


def finish_row(
    req: RowRequest, cfg: Config, ev: EvalData, ref_logits, res, load, logits_path: Path
) -> dict:
    """The row of a finished worker: its measurements, and drift against the FP32 reference."""
    row = base_row(cfg, req, res, *load)
    row["reference_is_self"] = _reference_is_self(cfg)
    if res.status == "ok":
        cand = np.load(logits_path)
        try:
            drift = drift_from_logits(
                cfg.contract, ref_logits, cand, ev.labels, n_boot=req.n_boot,
                names=(f"the FP32 reference of {cfg.label}", cfg.label),
            )  # fmt: skip
        except OutputError as exc:  # a broken model is this row's failure, not a drift number
            row.update(status="failed", error=str(exc))
        else:
            row["drift"] = drift.to_dict()
    return row


def _reference_is_self(cfg: Config) -> bool:
    """The artifact runs the very file it is compared with (an FP32 export of a source ONNX):
    its drift is 0 by construction, not a measurement, and the report says so."""
    if cfg.kind != "artifact" or cfg.reference.kind != "onnx":
        return False

    models = list(Path(cfg.path).glob("*.onnx"))
    return any(sha256_file(p) == cfg.reference.sha256 for p in models)


def base_row(cfg: Config, req: RowRequest, res, before, after) -> dict:
    memory = {"peak_rss_delta_mb": None, **res.row.get("memory", {})}
    memory.update(model_bytes=cfg.model_bytes, gpu=gpu_memory_block(cfg, res.row))
    return {
        "key": cfg.key,
        "artifact": str(cfg.path),
        "kind": cfg.kind,
        "label": cfg.label,
        "runtime": cfg.runtime,
        "precision": cfg.precision,
        "int8_ops": cfg.int8_ops,
        "artifact_manifest_sha256": cfg.manifest_sha256,
        "status": res.status,
        "error": res.error,
        "drift": None,
        "latency": res.row.get("latency"),
        "runtime_settings": res.row.get("runtime_settings"),
        "memory": memory,
        "threads": req.threads,
        "batch": req.batch,
        "eval_batch": res.row.get("eval_batch"),
        "reference": cfg.reference.to_dict(),
        "load_average": {"before": before, "after": after},
        "seconds": res.seconds,
    }


def gpu_memory_block(cfg: Config, worker_row: dict) -> dict:
    """GPU memory as the worker measured it (NVML/tegrastats), else null with the reason."""
    if worker_row.get("gpu_memory"):
        return worker_row["gpu_memory"]
    if cfg.device == "cpu":
        return {"peak_mb": None, "reason": "this configuration runs on the CPU"}
    return {"peak_mb": None, "reason": "the configuration did not finish, nothing was measured"}


def row_summary(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['label']}: {row['status']} ({row['error']})"
    d, lat = row["drift"], row["latency"]
    auc = f", AUC drop {d['auc_drop']:+.4f}" if d.get("auc_drop") is not None else ""
    return f"{row['label']}: median {lat['median_ms']:.3f} ms{auc}, flips {d['flips']}/{d['n']}"
