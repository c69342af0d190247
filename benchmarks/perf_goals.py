"""Issue 5 performance goals, measured side by side in one run (batch 1, 1 thread, medians):

- best INT8 artifact / torch eager FP32 <= 0.35 on a 224 px ResNet-18 (zoo `resnet18` with the
  ImageNet 7x7/2 stem and max-pool, 1.8 GMACs; the zoo default 3x3 stem is for 28 px inputs);
- ONNX Runtime INT8 / ONNX Runtime FP32 <= 0.50 on that model;
- harness median / OpenVINO `benchmark_app` median in [0.90, 1.10] on the same FP32 IR;
- p90 / median <= 1.15 (on an idle machine).

Two controls for the tail goal, measured in the same run: `benchmark_app`'s own p90 / median on the
same IR (its `-latency_percentile 90` runs in turn with its median runs), and the p90 / median of a
fixed single-thread numpy matmul (no runtime at all: the jitter of the machine itself).

The ResNet-18 is trained briefly on the real brain MRI folder at 224 px (enough for latency; its AUC
is reported as measured). Everything is timed through `edgemed bench`; then `benchmark_app` and the
harness take turns on the OpenVINO FP32 IR (h, a, h, a, h, a) and the ratio is of their medians, so
a load change on the shared machine hits both.

    python benchmarks/perf_goals.py [--write] [--epochs 3] [--work DIR] [--model TRAINING_DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._markdown import dataset, load_average, replace_section, table  # noqa: E402

DATA = dataset("brain_mri")
TARGETS = (("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8"))
TFLITE = ("tflite", "int8")
RELAXED = ("--max-flip-rate", "0.2", "--max-auc-drop", "0.05")
GOALS = {
    "int8_vs_torch": 0.35,
    "ort_int8_vs_fp32": 0.50,
    "app_lo": 0.90,
    "app_hi": 1.10,
    "tail": 1.15,
}


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    print("+ " + " ".join(argv), flush=True)
    return subprocess.run(argv, check=check, text=True, capture_output=True)


def edgemed(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    res = sh(sys.executable, "-c", "from edgemed.cli import main; main()", *argv, check=False)
    if check and res.returncode != 0:
        sys.exit(f"edgemed {argv[0]} failed:\n{res.stderr[-2000:]}")
    return res


def train_and_export(work: Path, epochs: int, trained: Path | None) -> list[Path]:
    model = work / "resnet18"
    if trained:
        shutil.copytree(trained, model)
    else:
        edgemed("train", "--data", str(DATA), "--model", "resnet18", "--model-arg",
                "small_input=false", "--image-size", "224",
                "--epochs", str(epochs), "--batch-size", "16", "--patience", str(epochs),
                "--out", str(model))  # fmt: skip
    arts = []
    for target, precision in (*TARGETS, TFLITE):
        out = work / f"{target}-{precision}"
        # A briefly trained model sits near its threshold: relax the export's drift budget (the
        # bench table reports the drift as measured).
        calib = ["--calib", str(DATA), *RELAXED] if precision == "int8" else []
        res = edgemed("export", "--model", str(model), "--target", target, "--precision",
                      precision, *calib, "--out", str(out), check=(target, precision) != TFLITE)  # fmt: skip
        if res.returncode == 0:
            arts.append(out)
        else:
            print(f"skipped {target} {precision}: {res.stderr.strip().splitlines()[-1]}")
    return arts


def bench(arts: list[Path], out: Path, reference: bool) -> dict:
    extra = ["--include-reference"] if reference else []
    edgemed("bench", *map(str, arts), "--data", str(DATA), "--threads", "1", "--batch", "1",
            "--seconds", "5", *extra, "--out", str(out))  # fmt: skip
    return json.loads((out / "results.json").read_text())


def benchmark_app(xml: Path, seconds: int = 5, percentile: int = 50) -> float:
    """OpenVINO's own tool, single stream, synchronous, 1 thread, f32: its median (or the given
    latency percentile) in ms."""
    res = sh("benchmark_app", "-m", str(xml), "-d", "CPU", "-hint", "none", "-nstreams", "1",
             "-nthreads", "1", "-api", "sync", "-infer_precision", "f32", "-shape", "[1,1,224,224]",
             "-t", str(seconds), "-latency_percentile", str(percentile))  # fmt: skip
    label = "Median" if percentile == 50 else f"{percentile} percentile"
    m = re.search(rf"{label}:\s+([\d.]+)\s*ms", res.stdout)
    if not m:
        sys.exit(f"benchmark_app printed no {label}:\n{res.stdout[-2000:]}")
    return float(m.group(1))


def alternate(work: Path, first: dict, rounds: int = 4) -> dict[str, list[float]]:
    """benchmark_app and the harness in turn on the same IR (h, a, h, a, ...), 5 s each: medians
    and p90s. Many short turns, because this VM's speed shifts between two levels within seconds."""
    runs = {
        "harness": [first["median_ms"]],
        "harness_p90": [first["p90_ms"]],
        "app": [],
        "app_p90": [],
    }
    for i in range(rounds + 1):
        runs["app"].append(benchmark_app(work / "openvino-fp32" / "model.xml"))
        runs["app_p90"].append(benchmark_app(work / "openvino-fp32" / "model.xml", percentile=90))
        if i < rounds:
            again = bench([work / "openvino-fp32"], work / f"bench-ov-{i}", reference=False)
            lat = again["rows"][0]["latency"]
            runs["harness"].append(lat["median_ms"])
            runs["harness_p90"].append(lat["p90_ms"])
    return runs


def machine_jitter(seconds: float = 8.0) -> float:
    """p90 / median of a fixed single-thread float32 matmul: the machine's own timing jitter."""
    import numpy as np

    a = np.random.default_rng(0).random((384, 384), dtype=np.float32)
    samples, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        for _ in range(20):
            a @ a
        samples.append(time.perf_counter() - t)
    return float(np.percentile(samples, 90) / np.median(samples))


def settle(max_wait_s: float = 120.0) -> None:
    """Wait (up to `max_wait_s`) for the 1-min load left by the exports to fall below half the cores."""
    import os

    start = time.time()
    while os.getloadavg()[0] > (os.cpu_count() or 1) / 2 and time.time() - start < max_wait_s:
        time.sleep(5)


def by_label(results: dict) -> dict[str, dict]:
    return {r["label"]: r for r in results["rows"] if r["status"] == "ok"}


def ratios(rows: dict[str, dict], runs: dict[str, list[float]], jitter: float) -> list[list[str]]:
    from statistics import median

    med = {k: r["latency"]["median_ms"] for k, r in rows.items()}
    int8 = {k: v for k, v in med.items() if k.endswith("-int8")}
    best = min(int8, key=int8.get)
    ov, app_ms = median(runs["harness"]), median(runs["app"])
    shown = {k: ", ".join(f"{v:.2f}" for v in vals) for k, vals in runs.items()}
    tail = max(rows.values(), key=lambda r: r["latency"]["p90_ms"] / r["latency"]["median_ms"])
    tail_ratio = tail["latency"]["p90_ms"] / tail["latency"]["median_ms"]
    ov_tail = median(runs["harness_p90"]) / ov
    app_tail = median(runs["app_p90"]) / app_ms
    out = [
        [f"best INT8 ({best}) / torch eager FP32", int8[best] / med["torch-fp32"], "<= 0.35",
         int8[best] / med["torch-fp32"] <= GOALS["int8_vs_torch"]],
        ["ONNX Runtime INT8 / FP32", med["onnx-int8"] / med["onnx-fp32"], "<= 0.50",
         med["onnx-int8"] / med["onnx-fp32"] <= GOALS["ort_int8_vs_fp32"]],
        [f"harness / benchmark_app, medians of runs in turn on the OpenVINO FP32 IR (harness "
         f"{shown['harness']} ms; benchmark_app {shown['app']} ms)", ov / app_ms, "0.90-1.10",
         GOALS["app_lo"] <= ov / app_ms <= GOALS["app_hi"]],
        [f"worst p90 / median, all configs of the bench ({tail['label']})", tail_ratio, "<= 1.15",
         tail_ratio <= GOALS["tail"]],
        [f"control: harness p90 / median on the OpenVINO FP32 IR (p90 {shown['harness_p90']} ms)",
         ov_tail, "<= 1.15", ov_tail <= GOALS["tail"]],
        [f"control: benchmark_app p90 / median on the same IR, in turn (p90 {shown['app_p90']} ms)",
         app_tail, "(same machine)", app_tail <= GOALS["tail"]],
        ["control: single-thread numpy matmul p90 / median (no runtime: the machine's jitter)",
         jitter, "(same machine)", jitter <= GOALS["tail"]],
    ]  # fmt: skip
    return [[name, f"{v:.3f}", goal, "yes" if ok else "no"] for name, v, goal, ok in out]


def markdown(results: dict, ratio_rows: list, card: dict, seconds: float, cmd: str) -> str:
    from edgemed.harness.report import COLUMNS, row_cells

    dev = results["device"]
    t = card["test"]
    rows = [row_cells(r) for r in results["rows"]]
    return "\n".join([
        f"Command: `{cmd}` ({seconds:.0f} s in all; {load_average()} at the end).",
        "",
        f"Device: {dev['cpu']['model']}, {dev['cores']} cores, flags {' '.join(dev['cpu']['flags'])}; "
        f"load average {dev['load_average_start']} at the start of the bench. "
        + ("**Taken under load (1-min load average above half the cores at the start): medians and "
           "tails are inflated.**" if dev["busy_warning"]
           else "No other job ran (1-min load average below half the cores at the start)."),
        "",
        f"Model: zoo `resnet18` with the ImageNet stem (`small_input=false`; 1 input channel, "
        f"{card['complexity']['params']:,} parameters, "
        f"{card['complexity']['macs'] / 1e9:.2f} GMACs) trained {card['training']['epochs_run']} epochs "
        f"on brain MRI at 224 px (duplicate-aware split); test AUC {t['auc']:.3f} "
        f"(95% CI {t['auc_ci95'][0]:.3f}-{t['auc_ci95'][1]:.3f}, n={t['n']}): a brief training for "
        "latency, not a good classifier.",
        "",
        table(["goal (batch 1, 1 thread, medians)", "measured", "target", "met"], ratio_rows),
        "",
        "All configurations from the same `edgemed bench` run (drift vs the FP32 torch model on the "
        "test split):",
        "",
        table(list(COLUMNS), rows),
    ])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write the results into BENCHMARKS.md")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--work", type=Path, help="keep the models and bench outputs here")
    ap.add_argument(
        "--model", type=Path, help="reuse a trained resnet18 training dir (skips the training)"
    )
    args = ap.parse_args()
    t0 = time.time()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgemed-perf-"))
    if work.exists() and any(work.iterdir()):
        sys.exit(f"{work} is not empty; choose another --work")
    work.mkdir(parents=True, exist_ok=True)
    try:
        arts = train_and_export(work, args.epochs, args.model)
        settle()
        results = bench(arts, work / "bench", reference=True)
        runs = alternate(work, by_label(results)["openvino-fp32"]["latency"])
        ratio_rows = ratios(by_label(results), runs, machine_jitter())
        card = json.loads((work / "resnet18" / "card.json").read_text())
        cmd = "python benchmarks/perf_goals.py --write" + (
            f" --epochs {args.epochs}" if args.epochs != 3 else ""
        )
        cmd += f" --model {args.model}" if args.model else ""
        body = markdown(results, ratio_rows, card, time.time() - t0, cmd)
        print(body)
        if args.write:
            replace_section("Target harness", body)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
