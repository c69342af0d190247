"""The chest X-ray study grid with `--executor local` vs `--executor ray --workers N` (a local
Ray, N one-thread tasks at a time): wall times, their ratio, and whether the AUCs agree.

    PYTHONPATH=$PWD python benchmarks/study_executors.py OUT_ROOT [--workers 2] [study flags...]

e.g. `... /tmp/e16-bench --epochs 1` (the default grid, one epoch per model). The local run uses
the study's default threads (all cores for training); each Ray task uses one thread.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._markdown import load_average  # noqa: E402

CLI = [sys.executable, "-c", "from edgemed.cli import main; main()", "study", "--data", "embedded"]


def timed(out: Path, flags: list[str]) -> tuple[float, str, list[dict]]:
    shutil.rmtree(out, ignore_errors=True)
    load = load_average()
    t0 = time.perf_counter()
    subprocess.run([*CLI, *flags, "--out", str(out)], check=True)
    wall = time.perf_counter() - t0
    return wall, load, json.loads((out / "study.json").read_text())["rows"]


def main(argv: list[str]) -> None:
    root, rest = Path(argv[0]), argv[1:]
    workers = "2"
    if "--workers" in rest:
        i = rest.index("--workers")
        workers = rest[i + 1]
        rest = rest[:i] + rest[i + 2 :]
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    local = timed(root / "local", rest)
    ray = timed(root / "ray", [*rest, "--executor", "ray", "--workers", workers])
    same = [
        (a["name"], a["test_auc"] == b["test_auc"]) for a, b in zip(local[2], ray[2], strict=True)
    ]
    print(f"flags: {' '.join(rest)}; {len(local[2])} points")
    print(f"local: {local[0]:.0f} s (start: {local[1]})")
    print(f"ray --workers {workers}: {ray[0]:.0f} s (start: {ray[1]})")
    print(f"wall ratio ray/local: {ray[0] / local[0]:.2f}; end: {load_average()}")
    print(f"same test AUC per point: {all(s for _, s in same)} {[n for n, s in same if not s]}")


if __name__ == "__main__":
    main(sys.argv[1:])
