"""OpenVINO INT8 export cost vs ONNX Runtime INT8 on a 64 px DenseNet-121 (MONAI factory).

Each export runs `edgemed export` in its own process; wall time and that process's peak RSS
(VmHWM) are measured. The model is MONAI's DenseNet121 with its initial weights (the cost of a
conversion does not depend on training), on the chest X-ray subset resized to 64 px, calibrated
on 256 images; the drift budget is opened wide because an untrained model's drift says nothing.

    PYTHONPATH=$PWD python benchmarks/ov_int8_cost.py [--configs onnx,openvino,openvino-full]

Prints a Markdown table (time, peak RSS, ratio to ONNX Runtime, INT8 ops).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "monai.networks.nets:DenseNet121"
MODEL_ARGS = ("spatial_dims=2", "in_channels=1", "out_channels=1")
CONTRACT = {"input_size": [64, 64], "channels": 1, "class_names": ["normal", "pneumonia"]}
CONFIGS = {
    "onnx": ("onnx", ()),
    "openvino": ("openvino", ()),  # bias_correction=auto (fast vs none above 50 weighted ops)
    "openvino-full": ("openvino", ("--option", "bias_correction=full")),  # the former auto cost
}
CHILD = """
import json, sys
from pathlib import Path
from edgemed.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
hwm = next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM'))
print(json.dumps({"code": code, "peak_rss_mb": int(hwm.split()[1]) / 1024}), file=sys.stderr)
"""


def run(name: str, work: Path, data: str) -> dict:
    target, extra = CONFIGS[name]
    contract = work / "contract.json"
    contract.write_text(json.dumps(CONTRACT))
    args = ["export", "--model", MODEL, "--contract", str(contract), "--target", target,
            "--out", str(work / name), "--precision", "int8", "--calib", data, "--data", data,
            "--max-flip-rate", "1", "--max-auc-drop", "1", *extra]  # fmt: skip
    for a in MODEL_ARGS:
        args += ["--model-arg", a]
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    stats = json.loads(res.stderr.strip().splitlines()[-1])
    row = {"config": name, "seconds": round(seconds, 1), **stats}
    if stats["code"] == 0:
        m = json.loads((work / name / "manifest.json").read_text())
        row["int8_ops"] = (m["backend"].get("int8_ops") or {}).get("words")
        row["bias_correction"] = (m["backend"].get("bias_correction_choice") or {}).get("chosen")
    else:
        row["error"] = res.stderr.strip().splitlines()[-2][:300]
    return row


def main() -> None:
    from edgemed.data.locate import embedded_dataset_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="onnx,openvino,openvino-full")
    names = ap.parse_args().configs.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ov-int8-cost-") as tmp:
        for name in names:
            rows.append(run(name, Path(tmp), str(embedded_dataset_path())))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    base = next((r["seconds"] for r in rows if r["config"] == "onnx"), None)
    print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
    print("| config | export s | x ONNX Runtime | peak RSS MB | INT8 ops | bias correction |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['seconds'] / base:.1f}" if base else "-"
        ops = r.get("int8_ops") or r.get("error", "-")
        print(f"| {r['config']} | {r['seconds']} | {ratio} | {r['peak_rss_mb']:.0f} | {ops} | "
              f"{r.get('bias_correction') or '-'} |")  # fmt: skip


if __name__ == "__main__":
    main()
