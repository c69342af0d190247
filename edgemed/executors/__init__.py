"""Where jobs run: `--executor local` (in this process, as always; Ray is never imported) or
`--executor ray[:ADDRESS]` (tasks on a Ray cluster; without an address edgemed starts a local,
loopback-only Ray and stops it afterwards).

A job is a picklable function and its arguments, with an optional target profile: on Ray it
then asks for the custom resource `edgemed-target:PROFILE` (one unit, so a device runs one such
job at a time). Results come back one by one through a callback, so the caller can append each
finished row to its JSONL at once and an interrupted run stays resumable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgemed.errors import EdgemedError, InputError, UnavailableError

RESOURCE_PREFIX = "edgemed-target:"
CLUSTER_HINT = "pip install 'edgemed[cluster]'"


def target_resource(profile: str) -> str:
    """The Ray custom resource a device offering target profile `profile` advertises."""
    return RESOURCE_PREFIX + profile


@dataclass(frozen=True)
class ExecutorSpec:
    """`local`, `ray` (a local Ray started for this run) or `ray:HOST:PORT` (an existing cluster)."""

    kind: str
    address: str | None = None
    workers: int | None = None  # CPUs of a local Ray (default: all cores)

    @property
    def label(self) -> str:
        return self.kind if self.address is None else f"{self.kind}:{self.address}"


def parse_executor(text: str, workers: int | None = None) -> ExecutorSpec:
    """The executor named on the command line; a one-line InputError otherwise."""
    kind, _, address = text.strip().partition(":")
    if kind == "local" and not address:
        return ExecutorSpec("local")
    if kind == "ray":
        if _ and not address:
            raise InputError("--executor ray: needs an address after the colon (ray:HOST:PORT)")
        return ExecutorSpec("ray", address or None, workers)
    raise InputError(
        f"unknown executor {text!r}; use 'local', 'ray' (a local Ray) or 'ray:HOST:PORT'"
    )


def check_available(spec: ExecutorSpec) -> None:
    """Refuse a Ray executor without Ray before anything is read or written."""
    import importlib.util

    if spec.kind == "ray" and importlib.util.find_spec("ray") is None:
        raise UnavailableError(
            f"--executor {spec.label} needs Ray, which is not installed here: {CLUSTER_HINT}"
        )


@dataclass(frozen=True)
class Job:
    """One unit of work: fn(*args) on some worker; `target` pins it to a device profile."""

    key: str
    fn: Callable[..., Any]
    args: tuple = ()
    target: str | None = None
    cpus: float = 1.0


@dataclass(frozen=True)
class Unfinished:
    """A job that produced no result: why (node gone, cancelled, ...)."""

    key: str
    reason: str


@dataclass(frozen=True)
class RunOutcome:
    """What a `run` left undone (empty when every job finished)."""

    unfinished: tuple[Unfinished, ...] = field(default_factory=tuple)

    def error(self, what: str, where: str) -> EdgemedError:
        reasons = "; ".join(f"{u.key}: {u.reason}" for u in self.unfinished)
        return EdgemedError(
            f"{len(self.unfinished)} {what} did not finish ({reasons}); the finished ones are kept "
            f"in {where}: bring the device back (edgemed fleet join) and re-run with --resume"
        )


class Executor(Protocol):
    """Runs jobs, calling on_done(key, value, node) for each as it finishes."""

    label: str

    def put(self, value: Any) -> Any:
        """A handle to pass `value` to many jobs (Ray: one copy in the object store)."""

    def run(self, jobs: list[Job], on_done: Callable[[str, Any, dict], None]) -> RunOutcome:
        """Run every job; returns those that could not finish."""


@contextmanager
def open_executor(spec: ExecutorSpec, targets: tuple[str, ...] = ()) -> Iterator[Executor]:
    """The executor for `spec`; a local Ray offers `targets` (one unit each) and is stopped after."""
    if spec.kind == "local":
        from edgemed.executors.local import LocalExecutor  # lazy: import cycle with its package

        yield LocalExecutor()
        return
    from edgemed.executors.ray_exec import ray_executor  # lazy: import cycle with its package

    with ray_executor(spec, targets) as ex:
        yield ex
