"""The FP16 ONNX for strongly typed TensorRT 11: drift SIMULATED on CPU, both shared datasets.

    python benchmarks/trt_fp16_drift.py [--write] [--work DIR]

No TensorRT engine is built or timed here (no TensorRT, no GPU on this machine). Each TensorRT FP16
artifact's `model-fp16.onnx` (AutoCast's rule: nodes with measured I/O above 512 or initializers
above 65504 kept FP32, FP32 inputs/outputs) is run in ONNX Runtime on the CPU on the test split and
compared with the torch FP32 reference; the export itself checks the budget on the validation
split. ONNX Runtime's own FP16 artifact is exported in the same run for comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._markdown import load_average, replace_section, table  # noqa: E402
from benchmarks.quantize_table import DATA, MODELS, REPO, trained  # noqa: E402
from benchmarks.trt_simulated_drift import simulate  # noqa: E402

RUNS = (  # the chest X-ray CNN of quantize_table, and its brain MRI CNN at 64 px
    MODELS[0],
    replace(MODELS[1], key="brain-cnn-64", label="Brain MRI CNN 64 px", size=(64, 64), epochs=15),
)
TARGETS = (("tensorrt", "TensorRT FP16 ONNX (strongly typed, TensorRT 11)"),
           ("onnx", "ONNX Runtime FP16"))  # fmt: skip


def export_fp16(model_dir: Path, target: str, out: Path, recipe: str) -> dict:
    from edgemed.calibration import CalibrationOptions
    from edgemed.pipeline.export import ExportRequest, run_export

    calib = str(REPO / "calibration" / recipe) if target == "tensorrt" else None
    cal = CalibrationOptions(data_root=str(DATA) if calib else None)
    req = ExportRequest(model=str(model_dir), target=target, out=out, precision="fp16",
                        calib=calib, calibration=cal, force=True)  # fmt: skip
    return run_export(req)


def fp16_facts(manifest: dict) -> str:
    b = manifest["backend"]
    f = b.get("fp16")
    if f is None:  # ONNX Runtime
        return f"{len(b.get('kept_fp32', []))} kept FP32 (weights > 65504)"
    return (
        f"{f['fp16_initializers']} FP16 / {f['fp32_initializers']} FP32 initializers, "
        f"{len(f['fp32_nodes'])} nodes kept FP32, largest activation {f['largest_activation']:.1f}"
    )


def run_model(run, work: Path) -> list[list[object]]:
    from edgemed.data import load_dataset
    from edgemed.models.source import load_model_source
    from edgemed.pipeline.training import predict_logits

    model_dir = trained(run, work)
    c = load_model_source(str(model_dir)).contract
    ds = load_dataset(str(run.data), c.input_size, c.channels, near_duplicates=run.near_duplicates)
    test = ds.split("test")
    ref = predict_logits(load_model_source(str(model_dir)).module, c, test.images)
    rows = []
    for target, label in TARGETS:
        out = work / "trt-fp16" / run.key / target
        t0 = time.perf_counter()
        m = export_fp16(model_dir, target, out, run.recipe)
        secs = time.perf_counter() - t0
        d, v = simulate(out, m, ref, test), m["drift"]
        rows.append([
            run.label, label, fp16_facts(m),
            f"{v['auc_drop']:+.4f} / {v['flips']}/{v['n']}",
            f"{d.auc_candidate:.4f}", f"{d.auc_drop:+.4f}", f"{d.flips}/{d.n} ({d.flip_rate:.2%})",
            f"{d.max_abs_dp:.4f}", f"{secs:.0f}",
        ])  # fmt: skip
        print(" | ".join(str(x) for x in rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/bench-quant", help="models + artifacts (reused)")
    ap.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    args = ap.parse_args()
    load = load_average()
    rows = [r for run in RUNS for r in run_model(run, Path(args.work))]
    header = [
        "model", "artifact (drift simulated in ONNX Runtime on CPU)", "FP16 ONNX",
        "val AUC drop / flips (export)", "test AUC", "test AUC drop", "test flips",
        "test max abs dp", "export s",
    ]  # fmt: skip
    cmd = "python3 benchmarks/trt_fp16_drift.py --write"
    cmd += f" --work {args.work}" if args.work != ap.get_default("work") else ""
    body = "\n".join([
        f"Command: `{cmd}` ({load} at the start, machine shared with other jobs).",
        "",
        "**SIMULATED on CPU**: the FP16 ONNX that TensorRT 11 builds strongly typed, run in ONNX "
        "Runtime on x86 (FP16 weights and activations rounded; ONNX Runtime's CPU provider "
        "computes many FP16 ops in FP32, so FP16 accumulation is not simulated). **No TensorRT "
        "engine was built or run** (no GPU, no TensorRT here); TensorRT 10.x builds the FP32 "
        "ONNX with its FP16 flag, whose layer choices only the device shows (`build-engine`).",
        "Calibration (activation magnitudes): the recipes `calibration/pneumoniamnist-train-256."
        "toml` and `calibration/brain-mri-train-96.toml`; budget AUC drop <= 0.005, flip rate "
        "<= 1% on the validation split; test columns on the test split vs torch FP32.",
        "",
        table(header, rows),
    ])  # fmt: skip
    print(body)
    if args.write:
        replace_section("TensorRT FP16 ONNX", body)


if __name__ == "__main__":
    main()
