"""What the per-device selection costs a sweep, measured side by side in one run.

    PYTHONPATH=$PWD python benchmarks/sweep_selection.py SWEEP_OUT [--repeats 3]

SWEEP_OUT is a finished `edgemed sweep` folder (its study models, artifacts and bench results).
Two numbers:
1. the selection itself (`sweep.run.select` on the bench rows: the rule is arithmetic on rows
   already measured) in milliseconds, against the sweep's bench stage it follows;
2. one export in this process (how exports ran before) vs the same export in its runtime's own
   export process forked from the clean forkserver (how the sweep runs them now), alternated, for
   one TFLite INT8 and one OpenVINO INT8 export of the first study model, 3 times each (the
   first of each pays the runtime's imports, as in a sweep): the ratio is what a sweep pays per
   export for never forking converter state.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._markdown import load_average  # noqa: E402


def selection_ms(out: Path, repeats: int) -> tuple[float, int]:
    from edgemed.sweep import SweepPlan
    from edgemed.sweep.run import select

    results = json.loads((out / "bench" / "results.json").read_text())
    targets = tuple(
        sorted({json.loads((Path(r["artifact"]) / "manifest.json").read_text())["target"]
                for r in results["rows"]})
    )  # fmt: skip
    plan = SweepPlan(data="embedded", targets=targets, precisions=("fp32", "int8"))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        select(plan, results, {}, out, allow_proxy=True)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), len(results["rows"])


def export_seconds(out: Path, target: str, repeats: int) -> tuple[float, float]:
    from edgemed.executors.blobs import pack_dirs
    from edgemed.sweep.run import close_export_processes, export_isolated, export_task

    model = sorted((out / "study" / "models").iterdir())[0]
    blob = pack_dirs(model.parent, [model.name])
    args = (blob, model.name, target, "int8", "embedded")
    here, fresh = [], []
    for _ in range(repeats):
        for fn, acc in ((export_task, here), (export_isolated, fresh)):
            t0 = time.perf_counter()
            res = fn(*args)
            acc.append(time.perf_counter() - t0)
            assert "files" in res, res
    close_export_processes()
    return statistics.median(here), statistics.median(fresh)


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    repeats = int(argv[argv.index("--repeats") + 1]) if "--repeats" in argv else 3
    print(f"load average at start: {load_average()}")
    ms, n = selection_ms(out, repeats)
    print(f"selection over {n} bench rows: {ms:.1f} ms (median of {repeats})")
    with tempfile.TemporaryDirectory():
        for target in ("x86-cpu-openvino", "arm64-cpu-tflite"):
            here, fresh = export_seconds(out, target, repeats)
            print(
                f"INT8 export for {target}: in this process {here:.2f} s, in its runtime's export "
                f"process {fresh:.2f} s, ratio {fresh / here:.2f} (medians of {repeats})"
            )
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main(sys.argv[1:])
