"""Why the OpenVINO (NNCF) and TFLite (PT2E) INT8 defaults are what they are: measured side by side.

    python benchmarks/int8_settings_openvino_tflite.py [--work DIR] [--model TRAINING_DIR]

On the chest X-ray CNN (trained here for 15 epochs unless --model is given), on the 468 real test
images: NNCF variants (defaults and the switches that matter) and the shipped exports of both
backends at every precision, with file size, AUC drop and decision flips vs torch FP32, and
batch-1 single-thread median latency. Prints a markdown table (the full per-target table is
`benchmarks/quantize_table.py`'s job). At 28 px a call is ~50 us, so latency mostly shows overhead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._markdown import load_average, table  # noqa: E402
from edgemed.data.locate import embedded_dataset_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CXR = embedded_dataset_path()  # byte-identical to ../shared/datasets/pneumoniamnist_subset.npz
# NNCF variants: (label, overflow_fix, activation range estimator or None = NNCF default, bias corr.)
NNCF_VARIANTS = (
    ("NNCF defaults", "first_layer_only", None, "fast"),
    ("overflow fix off + MINMAX, fast bias correction", "disable", "MINMAX", "fast"),
    ("overflow fix first layer + MINMAX, full bias correction", "first_layer_only", "MINMAX", "full"),
    ("overflow fix off + MINMAX, no bias correction", "disable", "MINMAX", "none"),
    ("overflow fix off + MINMAX, full bias correction (shipped)", "disable", "MINMAX", "full"),
)  # fmt: skip


def trained(work: Path) -> Path:
    from edgemed.models import ModelSpec
    from edgemed.pipeline.training import TrainConfig, train, write_training_dir

    out = work / "cxr-cnn"
    if not (out / "model.pt").is_file():
        cfg = TrainConfig(data=str(CXR), model=ModelSpec("cnn"), epochs=15, threads=1)
        write_training_dir(train(cfg), cfg.model, out, force=False)
    return out


def row(label, contract, ref, test, runner, size) -> list:
    from edgemed.backends import run_batches
    from edgemed.evaluation.drift import drift_from_logits
    from edgemed.harness.latency import measure_latency

    with runner:
        logits = run_batches(runner, contract, test.images)
        x = contract.normalize(test.images[:1])
        lat = measure_latency(lambda: runner.infer(x), min_seconds=2.0)
    d = drift_from_logits(contract, ref, logits, test.labels)
    return [label, f"{size / 1024:.0f}", f"{d.auc_candidate:.4f}", f"{d.auc_drop:+.4f}",
            f"{d.flips} ({d.flip_rate:.2%})", f"{lat.median_ms:.3f}"]  # fmt: skip


def nncf_rows(model_dir: Path, loaded, ref, test, tmp: Path) -> list[list]:
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from edgemed.backends.openvino import OpenVINORunner, ov_model_from_onnx
    from edgemed.backends.openvino.quant import nncf_output
    from edgemed.onnx_export import onnx_from_torch
    from edgemed.pipeline.calibration import resolve_calibration

    onnx_path = onnx_from_torch(loaded.module, loaded.contract, tmp / "ref.onnx")
    cal = resolve_calibration(str(CXR), loaded.contract, loaded.card)
    data = nncf.Dataset([cal.inputs(loaded.contract)[i : i + 1] for i in range(len(cal.images))])
    rows = []
    for label, overflow, estimator, bias in NNCF_VARIANTS:
        adv = {"overflow_fix": OverflowFix(overflow), "disable_bias_correction": bias == "none"}
        if estimator:
            adv["activations_range_estimator_params"] = getattr(
                RangeEstimatorParametersSet, estimator
            )
        with nncf_output():
            q = nncf.quantize(
                ov_model_from_onnx(onnx_path), data, subset_size=len(cal.images),
                fast_bias_correction=bias == "fast",
                advanced_parameters=AdvancedQuantizationParameters(**adv),
            )  # fmt: skip
        xml = tmp / f"v{len(rows)}.xml"
        ov.save_model(q, str(xml), compress_to_fp16=False)
        size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
        runner = OpenVINORunner(xml, "f32", threads=1)
        rows.append(row(f"OpenVINO INT8: {label}", loaded.contract, ref, test, runner, size))
    return rows


def export_rows(model_dir: Path, loaded, ref, test, tmp: Path) -> list[list]:
    from edgemed.artifact import load_artifact
    from edgemed.backends import open_runner
    from edgemed.pipeline.export import ExportRequest, run_export

    configs = [(t, p, {}) for t in ("openvino", "tflite") for p in ("fp32", "fp16", "int8")]
    configs.append(("tflite", "int8", {"calib_method": "histogram"}))
    configs.append(("tflite", "int8", {"exclude_nodes": "head"}))  # float head and logits
    rows = []
    for target, precision, options in configs:
        out = tmp / f"{target}-{precision}-{len(rows)}"
        calib = str(CXR) if precision == "int8" else None
        run_export(ExportRequest(model=str(model_dir), target=target, out=out,
                                 precision=precision, calib=calib, options=options))  # fmt: skip
        art = load_artifact(out)
        size = sum(f["bytes"] for n, f in art.manifest["files"].items() if not n.endswith(".json"))
        b = art.manifest["backend"]
        what = b.get("weights", "")
        if precision == "int8":
            what = b["calib_method"] + "".join(f", {n} float" for n in b["excluded_nodes"])
        label = f"{target} {precision} export ({what})"
        rows.append(row(label, art.contract, ref, test, open_runner(art, threads=1), size))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "edgemed-int8-ov-tfl"
    )
    ap.add_argument(
        "--model", type=Path, help="training dir (default: train the CXR CNN in --work)"
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    from edgemed.data import load_dataset
    from edgemed.models.source import load_model_source
    from edgemed.pipeline.training import predict_logits

    model_dir = args.model or trained(args.work)
    loaded = load_model_source(str(model_dir))
    test = load_dataset(CXR).split("test")
    ref = predict_logits(loaded.module, loaded.contract, test.images)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        rows = nncf_rows(model_dir, loaded, ref, test, Path(tmp))
        rows += export_rows(model_dir, loaded, ref, test, Path(tmp))
    header = ["artifact", "size KiB", "AUC", "AUC drop", "flips / 468", "p50 ms (1 thread)"]
    print(table(header, rows))
    print(f"\nModel: {model_dir}; test split of {CXR.name}; {load_average()} (taken under load).")


if __name__ == "__main__":
    main()
