"""`edgemed bench --executor ray[:ADDRESS]`: each artifact row runs on a node offering the
artifact's target profile (Ray resource `edgemed-target:PROFILE`, one unit: one latency job per
device at a time). The artifact and the split travel as bytes through the object store and are
checked against their SHA-256 on the node; there the usual fresh worker process loads and times
the artifact (timing never crosses the network). The logits come back (checked again), drift is
computed here, and each row is appended to DIR/results.jsonl as it arrives, with its node.
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from edgemed.artifact import MANIFEST
from edgemed.executors import Job, open_executor
from edgemed.executors.blobs import Blob, pack_dirs, unpack
from edgemed.fileio import read_json, write_bytes_atomic
from edgemed.harness.device import busy_warning, cpu_info, load_average
from edgemed.harness.plan import Config, Plan
from edgemed.harness.proc import WorkerResult, run_worker
from edgemed.harness.rows import finish_row, run_row, worker_job


def artifact_target(cfg: Config) -> str:
    """The target profile the artifact was exported for (its manifest's `target`)."""
    return str(read_json(cfg.path / MANIFEST, "artifact manifest")["target"])


def row_task(job: dict, art: Blob, name: str, data: Blob, timeout: float) -> dict:
    """On the device's node: unpack (checked), run the worker process there, return its result."""

    with tempfile.TemporaryDirectory(prefix="edgemed-bench-node-") as d:
        tmp = Path(d)
        unpack(art, tmp / "art", f"artifact {name}")
        (tmp / "data.npz").write_bytes(data.checked("the bench split"))
        job = {
            **job,
            "path": str(tmp / "art" / name),  # same folder name: labels and fault hooks match
            "data": str(tmp / "data.npz"),
            "logits_out": str(tmp / "logits.npy"),
        }
        before = load_average()
        res = run_worker(job, tmp, timeout)
        after = load_average()
        logits = Path(job["logits_out"])
        blob = Blob.of(logits.read_bytes()) if res.status == "ok" and logits.is_file() else None
    return {
        "result": asdict(res),
        "logits": blob,
        "load": (before, after),
        "busy_warning": busy_warning(before),
        # What the node is, so a selection can tell whether it is the device it claims to be.
        "machine": {"machine": platform.machine(), "cpu": cpu_info()},
    }


def run_rows_on_cluster(
    req, plan: Plan, todo: list[Config], dirs: tuple[Path, Path], refs: dict, record: Callable
) -> None:
    """Torch-reference and corrupted rows here as usual; artifact rows on their devices."""

    out, tmp = dirs
    here = [c for c in todo if c.kind != "artifact" or c.problem]
    remote = [c for c in todo if c not in here]
    for cfg in here:
        record(run_row(req, cfg, plan.data[cfg.data_key], refs[cfg.reference.key], out, tmp))
    if not remote:
        return
    targets = {c.key: artifact_target(c) for c in remote}
    with open_executor(req.executor_spec(), tuple(sorted(set(targets.values())))) as ex:
        jobs = _jobs(ex, req, remote, targets, tmp)
        outcome = ex.run(jobs, _on_done(req, plan, remote, targets, refs, out, record))
    if outcome.unfinished:
        raise outcome.error("bench rows", str(out))


def _jobs(ex, req, remote: list[Config], targets: dict, tmp: Path) -> list[Job]:

    data = {k: ex.put(Blob.of((tmp / f"data-{k}.npz").read_bytes())) for k in targets_data(remote)}
    jobs = []
    for c in remote:
        job = worker_job(req, c, Path("unset"), Path("unset"))  # paths are set on the node
        art = ex.put(pack_dirs(c.path.parent, [c.path.name]))
        args = (job, art, c.path.name, data[c.data_key], req.timeout)
        jobs.append(Job(c.key, row_task, args, target=targets[c.key], cpus=req.threads))
    return jobs


def targets_data(remote: list[Config]) -> list[str]:
    return sorted({c.data_key for c in remote})


def _on_done(req, plan: Plan, remote: list[Config], targets: dict, refs: dict, out: Path, record):

    by_key = {c.key: c for c in remote}

    def done(key: str, value: dict, node: dict) -> None:
        cfg = by_key[key]
        logits_path = out / "logits" / f"{key}.npy"
        if value["logits"] is not None:
            write_bytes_atomic(logits_path, value["logits"].checked(f"the logits of {cfg.label}"))
        res = WorkerResult(**value["result"])
        ev, ref = plan.data[cfg.data_key], refs[cfg.reference.key]
        row = finish_row(req, cfg, ev, ref, res, tuple(value["load"]), logits_path)
        row["busy_warning"] = value["busy_warning"]
        row["node"] = {**node, **value.get("machine", {}), "target": targets[key]}
        record(row)

    return done
