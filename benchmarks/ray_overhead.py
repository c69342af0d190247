"""Ray's per-task overhead as edgemed uses it: N trivial jobs through edgemed's RayExecutor (a
loopback-only local Ray, one CPU per task, results gathered one at a time as for bench rows),
against the same N calls in-process. Also the cost of starting and stopping that local Ray.

    PYTHONPATH=$PWD python benchmarks/ray_overhead.py [--tasks 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._markdown import load_average  # noqa: E402
from edgemed.executors import ExecutorSpec, Job, open_executor  # noqa: E402


def trivial(i: int) -> int:
    return i * 2


def run(tasks: int, workers: int) -> dict:
    jobs = [Job(f"t{i}", trivial, (i,)) for i in range(tasks)]
    got: list[int] = []
    t0 = time.perf_counter()
    with open_executor(ExecutorSpec("ray", None, workers)) as ex:
        started = time.perf_counter()
        ex.run(jobs[:workers], lambda k, v, n: None)  # warm the worker processes
        warm = time.perf_counter()
        outcome = ex.run(jobs, lambda k, v, n: got.append(v))
        ran = time.perf_counter()
    stopped = time.perf_counter()
    assert not outcome.unfinished and sorted(got) == [2 * i for i in range(tasks)]
    return {
        "start_s": started - t0,
        "first_tasks_s": warm - started,
        "per_task_ms": (ran - warm) / tasks * 1e3,
        "stop_s": stopped - ran,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    load = load_average()
    r = run(a.tasks, a.workers)
    print(
        f"{a.tasks} trivial tasks on a local Ray with {a.workers} CPUs ({load}): "
        f"{r['per_task_ms']:.2f} ms per task (submit + run + get, warm workers); "
        f"start {r['start_s']:.1f} s, first {a.workers} tasks {r['first_tasks_s']:.2f} s, "
        f"stop {r['stop_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
