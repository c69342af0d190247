"""The Ray executor: jobs become Ray tasks; a job pinned to target profile P asks for one unit of
the custom resource `edgemed-target:P`, so it runs only on a node that offers P, one at a time.

Failures: a task whose node dies is retried (bounded, MAX_RETRIES) on another node with the same
resource; when no live node offers it any more the job is cancelled and reported unfinished, so
the caller leaves a resumable directory. Ctrl-C cancels every task still pending or running.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import edgemed
from edgemed.errors import EdgemedError, InputError, UnavailableError
from edgemed.executors import (
    CLUSTER_HINT,
    RESOURCE_PREFIX,
    ExecutorSpec,
    Job,
    RunOutcome,
    Unfinished,
    target_resource,
)

MAX_RETRIES = 2  # per task, on worker or node death (Ray's system failures only)
POLL_S = 2.0  # how often pending jobs are checked against the live nodes
LOCAL_OBJECT_STORE = 256 * 2**20
# Ray replaces 127.0.0.1 by the host's routable address unless told it is not a cluster; a Ray
# that edgemed starts (or one on loopback) must stay on 127.0.0.1.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray(loopback: bool):
    """Ray, or the one-line error naming the extra that installs it."""
    if loopback:
        os.environ.setdefault(LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError:
        raise UnavailableError(
            f"--executor ray needs Ray, which is not installed here: {CLUSTER_HINT}"
        ) from None
    return ray


def _is_loopback(address: str | None) -> bool:
    return address is None or address.rpartition(":")[0] in ("127.0.0.1", "localhost")


@contextmanager
def ray_executor(spec: ExecutorSpec, targets: tuple[str, ...]) -> Iterator[RayExecutor]:
    """Connect to spec.address, or start a loopback-only local Ray offering `targets`; stop after."""
    ray = import_ray(_is_loopback(spec.address))
    if ray.is_initialized():
        raise EdgemedError("Ray is already initialised in this process; run edgemed on its own")
    if spec.address:
        _connect(ray, spec.address)
    else:
        _start_local(ray, spec.workers, targets)
    try:
        yield RayExecutor(ray, spec.label)
    finally:
        ray.shutdown()


def _connect(ray, address: str) -> None:
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError by case
        raise UnavailableError(
            f"cannot join the Ray cluster at {address} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); start its head with "
            "`ray start --head --port PORT` there, or check the address"
        ) from None


def _start_local(ray, workers: int | None, targets: tuple[str, ...]) -> None:

    root = str(Path(edgemed.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    if root not in path.split(os.pathsep):  # the raylet's workers must import this edgemed
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, path) if p)
    ray.init(
        num_cpus=workers or os.cpu_count() or 1,
        resources={target_resource(t): 1 for t in targets},
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=LOCAL_OBJECT_STORE,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )


def node_info() -> dict:
    """The `node` block of a row: which Ray node ran it (called inside the task)."""
    import socket

    import ray

    return {
        "executor": "ray",
        "node_id": ray.get_runtime_context().get_node_id(),
        "hostname": socket.gethostname(),
        "edgemed": edgemed.__version__,
    }


def _call(fn: Callable[..., Any], args: tuple) -> dict:
    """The Ray task around every job: its value and where it ran. Object refs among the
    arguments (a dataset put once for many jobs) are fetched here; Ray resolves only top-level ones."""
    import ray

    values = tuple(ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in args)
    return {"value": fn(*values), "node": node_info()}


class RayExecutor:
    """Submits every job at once; Ray schedules them by CPUs and edgemed-target:* resources."""

    def __init__(self, ray, label: str) -> None:
        self._ray = ray
        self._task = ray.remote(_call)
        self.label = label

    def put(self, value: Any) -> Any:
        return self._ray.put(value)

    def offered_targets(self) -> dict[str, int]:
        """Target profile -> number of live nodes offering it."""
        out: dict[str, int] = {}
        for node in self._ray.nodes():
            if not node.get("Alive"):
                continue
            for name in node.get("Resources", {}):
                if name.startswith(RESOURCE_PREFIX):
                    t = name.removeprefix(RESOURCE_PREFIX)
                    out[t] = out.get(t, 0) + 1
        return out

    def check_targets(self, jobs: list[Job]) -> None:
        """Fail fast when a job's target profile is offered by no node of the cluster."""
        offered = self.offered_targets()
        missing = sorted({j.target for j in jobs if j.target and j.target not in offered})
        if missing:
            have = ", ".join(sorted(offered)) or "none"
            raise InputError(
                f"no node of the Ray cluster offers target {', '.join(missing)} (offered: {have}); "
                f"join a device with `edgemed fleet join --target {missing[0]} --address HEAD`"
            )

    def _submit(self, job: Job):
        opts: dict[str, Any] = {"num_cpus": job.cpus, "max_retries": MAX_RETRIES}
        if job.target:
            opts["resources"] = {target_resource(job.target): 1}
        return self._task.options(**opts).remote(job.fn, job.args)

    def run(self, jobs: list[Job], on_done: Callable[[str, Any, dict], None]) -> RunOutcome:
        self.check_targets(jobs)
        pending = {self._submit(j): j for j in jobs}
        unfinished: list[Unfinished] = []
        try:
            while pending:
                ready, _ = self._ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    job = pending.pop(ref)
                    got = self._get(ref, job, unfinished)
                    if got is not None:
                        on_done(job.key, got["value"], got["node"])
                if not ready:
                    self._drop_orphans(pending, unfinished)
        except BaseException:  # Ctrl-C or a job's error: nothing keeps running on the cluster
            for ref in pending:
                self._ray.cancel(ref, force=True)
            raise
        return RunOutcome(tuple(unfinished))

    def _get(self, ref, job: Job, unfinished: list[Unfinished]) -> dict | None:
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(ref)
        except exceptions.RayTaskError as exc:  # the job itself raised: as it would locally
            cause = exc.cause
            if isinstance(cause, EdgemedError):
                raise cause from None
            raise EdgemedError(
                f"{job.key} failed on the cluster: {type(cause).__name__}: {cause}"
            ) from None
        except exceptions.RayError as exc:  # worker/node death after the retries, cancelled
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            unfinished.append(Unfinished(job.key, f"{type(exc).__name__}: {first}"))
            return None

    def _drop_orphans(self, pending: dict, unfinished: list[Unfinished]) -> None:
        """Cancel jobs whose target no live node offers any more (its device left or died)."""
        offered = self.offered_targets()
        for ref, job in list(pending.items()):
            if job.target and job.target not in offered:
                self._ray.cancel(ref, force=True)
                del pending[ref]
                unfinished.append(
                    Unfinished(job.key, f"no live node offers {target_resource(job.target)} now")
                )
