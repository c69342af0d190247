"""One bench configuration in a fresh process: `python -m edgemed.harness.worker JOB.json`.

The parent (edgemed.harness.bench) writes JOB.json, runs this with a timeout, and reads the row it
writes; a segfault or hang here is a failed row there, never a lost run. Steps: read the images,
note the memory high-water mark, load the model (timed), time the first inference, warm up, time
the runtime call alone, run the whole split for accuracy, note the high-water mark again.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from edgemed.backends import eval_batch, open_runner, run_batches
from edgemed.contract import Contract
from edgemed.errors import EdgemedError, InputError
from edgemed.fileio import write_json_atomic

FAULT_ENV = "EDGEMED_BENCH_FAULT"
EVAL_BATCH = 32


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def open_job_runner(job: dict):
    """The Runner for the job: an artifact through its backend, or a torch/ONNX reference file."""
    kind, path, threads = job["kind"], Path(job["path"]), job.get("threads")
    if kind == "artifact":
        # lazy: loaded after the RSS baseline (in the delta)
        from edgemed.artifact import load_artifact

        return open_runner(load_artifact(path, verify=False), threads)
    if kind == "torch":
        # lazy: loaded after the RSS baseline (in the delta)
        from edgemed.harness.torch_runner import TorchRunner

        return TorchRunner(path, threads)
    # lazy: loaded after the RSS baseline (in the delta)
    from edgemed.backends.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, threads)


def _eval_batch(job: dict) -> int:
    """The batch the artifact's manifest says its accuracy was measured at (dynamic INT8: 1)."""
    if job["kind"] != "artifact":
        return EVAL_BATCH
    # lazy: loaded after the RSS baseline (in the delta)
    from edgemed.artifact import load_artifact

    manifest = load_artifact(Path(job["path"]), verify=False).manifest
    return eval_batch(manifest.get("backend") or {}, EVAL_BATCH)


def _inject_fault(job: dict) -> None:
    """Test hook: EDGEMED_BENCH_FAULT="crash:DIR_NAME,hang:DIR_NAME" kills or hangs those rows."""
    for spec in os.environ.get(FAULT_ENV, "").split(","):
        action, _, name = spec.partition(":")
        if name and name == Path(job["path"]).name:
            if action == "crash":
                os.kill(os.getpid(), signal.SIGKILL)
            if action == "hang":
                time.sleep(3600)


def latency_input(contract, images: np.ndarray, batch: int) -> np.ndarray:
    """The first `batch` images of the split (repeated when the split is smaller), normalized."""
    reps = -(-batch // len(images))
    return contract.normalize(np.concatenate([images] * reps)[:batch])


def run_job(job: dict) -> dict:
    """Load, time and run one configuration; returns the worker part of the bench row."""
    import contextlib

    images = np.load(job["data"])["images"]
    contract = Contract.from_dict(job["contract"])
    baseline = peak_rss_mb()
    sampler, gpu = gpu_sampler(job)
    out: dict = {"status": "ok", "error": None}
    with sampler or contextlib.nullcontext():
        runner = open_job_runner(job)
        t0 = time.perf_counter()
        runner.activate()
        activate_s = time.perf_counter() - t0
        _inject_fault(job)
        out["runtime_settings"] = runner.info
        if job.get("latency"):
            out["latency"] = _measure(runner, contract, images, job)
            out["latency"].update(
                load_ms=(runner.load_seconds or activate_s) * 1e3, activate_ms=activate_s * 1e3
            )
        out["eval_batch"] = _eval_batch(job)
        logits = run_batches(runner, contract, images, out["eval_batch"])
        peak = peak_rss_mb()
        runner.deactivate()
    np.save(job["logits_out"], logits)
    out["memory"] = {
        "baseline_rss_mb": round(baseline, 2),
        "peak_rss_mb": round(peak, 2),
        "peak_rss_delta_mb": round(peak - baseline, 2),
    }
    out["gpu_memory"] = gpu if sampler is None else gpu_result(sampler)
    return out


def gpu_sampler(job: dict):
    """NVML/tegrastats sampler for GPU configurations (None, reason) where there is none."""
    if job.get("device", "cpu") == "cpu":
        return None, {"peak_mb": None, "reason": "this configuration runs on the CPU"}

    try:
        from edgemed.harness.gpu_memory import gpu_memory_sampler  # lazy: ImportError handled below

        return gpu_memory_sampler(pid=os.getpid()), None
    except ImportError:
        return None, {"peak_mb": None, "reason": "edgemed.harness.gpu_memory is not installed"}
    except EdgemedError as exc:
        return None, {"peak_mb": None, "reason": " ".join(str(exc).split())}


def gpu_result(sampler) -> dict:
    """This process's peak GPU memory when the driver reports it, else the device-wide increase."""
    g = sampler.result().to_dict()
    own = g.get("process_peak_mb")
    return {**g, "peak_mb": own if own is not None else g["peak_used_mb"] - g["baseline_mb"]}


def _measure(runner, contract, images: np.ndarray, job: dict) -> dict:
    # lazy: loaded after the RSS baseline (in the delta)
    from edgemed.harness.latency import measure_latency

    batch = int(job["batch"])
    if runner.batch_limit and batch > runner.batch_limit:
        raise InputError(
            f"this artifact has a fixed batch of {runner.batch_limit}; bench it with --batch {runner.batch_limit}"
        )
    x = latency_input(contract, images, batch)
    lat = job["latency"]
    stats = measure_latency(
        lambda: runner.infer(x),
        batch=batch,
        warmup_runs=lat["warmup_runs"],
        warmup_seconds=lat["warmup_seconds"],
        min_runs=lat["min_runs"],
        min_seconds=lat["min_seconds"],
    )
    return {**stats.to_dict(), "threads": job.get("threads"), "timed_call": "Runner.infer"}


def main(argv: list[str]) -> int:
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())

    try:
        row = run_job(job)
        code = 0
    except EdgemedError as exc:
        row, code = {"status": "failed", "error": " ".join(str(exc).split())}, 1
    except Exception as exc:  # any runtime failure is this row's failure, reported by name
        traceback.print_exc()
        row, code = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}, 1
    write_json_atomic(Path(job["row_out"]), row)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
