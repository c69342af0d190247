"""Run one worker job in a fresh Python process with a timeout; a crash or hang becomes a result."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import edgemed

THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)


@dataclass(frozen=True)
class WorkerResult:
    """status "ok" | "failed" | "timeout", the worker's row (when it wrote one), an error line."""

    status: str
    row: dict
    error: str | None
    seconds: float


def worker_env(threads: int | None) -> dict[str, str]:
    """The parent's environment, edgemed importable, and thread counts pinned when given."""
    env = dict(os.environ)
    root = str(Path(edgemed.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if threads:
        env.update({k: str(threads) for k in THREAD_ENV})
    return env


def run_worker(job: dict, workdir: Path, timeout: float) -> WorkerResult:
    """Run `python -m edgemed.harness.worker` on `job`; never raises for the worker's failures."""
    import time

    name = job["name"]
    job = {**job, "row_out": str(workdir / f"{name}.row.json")}
    job_path, log_path = workdir / f"{name}.job.json", workdir / f"{name}.log"
    job_path.write_text(json.dumps(job))
    cmd = [sys.executable, "-m", "edgemed.harness.worker", str(job_path)]
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=log,
            env=worker_env(job.get("threads")),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return WorkerResult(
                "timeout", {}, f"no result within --timeout {timeout:g} s; killed", _since(t0)
            )
        except BaseException:  # Ctrl-C in the parent: do not leave the worker running
            _kill_group(proc)
            raise
    return _result(rc, Path(job["row_out"]), log_path, _since(t0))


def die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the parent dies (even by kill -9), Linux only."""
    import ctypes

    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _since(t0: float) -> float:
    import time

    return round(time.perf_counter() - t0, 2)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _result(rc: int, row_path: Path, log_path: Path, seconds: float) -> WorkerResult:
    row = json.loads(row_path.read_text()) if row_path.is_file() else {}
    if rc == 0 and row.get("status") == "ok":
        return WorkerResult("ok", row, None, seconds)
    if rc < 0:
        sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        error = f"worker process died from signal {sig}"
    else:
        error = row.get("error") or f"worker exited with code {rc}"
    tail = _log_tail(log_path)
    return WorkerResult(
        "failed", row, f"{error}{' | ' + tail if tail and not row else ''}", seconds
    )


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(t.strip() for t in text[-lines:])[:300]
