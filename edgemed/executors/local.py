"""The local executor: each job runs in this process, one after the other (today's behaviour)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgemed.executors import Job, RunOutcome


def local_node() -> dict:
    """The `node` block of a row produced on this machine."""
    import socket

    return {"executor": "local", "node_id": None, "hostname": socket.gethostname()}


class LocalExecutor:
    """Runs jobs in order in this process; an exception propagates as it would without it."""

    label = "local"

    def put(self, value: Any) -> Any:
        return value

    def run(self, jobs: list[Job], on_done: Callable[[str, Any, dict], None]) -> RunOutcome:
        for job in jobs:
            on_done(job.key, job.fn(*job.args), local_node())
        return RunOutcome()
