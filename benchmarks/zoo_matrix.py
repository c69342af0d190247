"""Zoo baselines x CPU backend x precision: exported within budget or refused (with the cause),
export time and peak RSS of the export process (resource.getrusage of the child).

    python benchmarks/zoo_matrix.py --out runs/zoo-matrix [--models vgg,vit]

Each model trains 1 epoch at 28 px on the embedded chest X-ray subset (the settings of
tests/test_zoo_baselines.py); each export runs in its own process so its RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

BASELINES = {
    "vgg": ["--width", "0.25", "--depth", "0.5"],
    "inception": ["--width", "0.125", "--depth", "0.34"],
    "resnet50": ["--width", "0.125", "--depth", "0.25"],
    "vit": ["--width", "0.5", "--depth", "0.5"],
}
TARGETS = ("onnx", "openvino", "tflite")
EDGEMED = [sys.executable, "-c", "import sys; from edgemed.cli import main; main(sys.argv[1:])"]


def cell(argv: list[str]) -> dict:
    """Run one edgemed command as a child; its wall time, peak RSS and outcome line."""
    t0 = time.perf_counter()
    p = subprocess.run([*EDGEMED, *argv], capture_output=True, text=True)
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # The outcome line, whole (an error names its cause at the end): warnings only without one.
    out = (p.stdout + p.stderr).splitlines()
    lines = [ln for ln in out if ln.startswith(("exported", "edgemed: error:", "trained"))]
    lines = lines or [ln for ln in out if ln.startswith("edgemed:")]
    return {
        "rc": p.returncode,
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mib": round(rss_kib / 1024),
        "line": lines[-1] if lines else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default=",".join(BASELINES))
    ap.add_argument("--cell", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:  # child mode: one command, one JSON line
        print(json.dumps(cell(args.cell)))
        return
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        model = args.out / name / "model"
        train = ["train", "--data", "embedded", "--model", name, *BASELINES[name], "--epochs", "1",
                 "--threads", "2", "--out", str(model), "--force"]  # fmt: skip
        rows.append({"model": name, "step": "train", **_child(train)})
        for target in TARGETS:
            for precision in ("fp32", "int8"):
                export = ["export", "--model", str(model), "--target", target, "--precision",
                          precision, "--out", str(args.out / name / f"{target}-{precision}"),
                          "--force"]  # fmt: skip
                if precision == "int8":
                    export += ["--calib", "embedded", "--calib-count", "128"]
                row = {"model": name, "step": f"{target} {precision}", **_child(export)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    (args.out / "zoo_matrix.json").write_text(json.dumps({"load": os.getloadavg(), "rows": rows}))


def _child(argv: list[str]) -> dict:
    p = subprocess.run(
        [sys.executable, __file__, "--out", ".", "--cell", *argv], capture_output=True, text=True
    )
    return json.loads(p.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
