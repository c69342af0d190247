"""ONNX Runtime backend: the shared template (fp32, fp16, int8) plus ORT-specific checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.backends.template import BackendTemplate
from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot


class TestOnnxRuntime(BackendTemplate):
    backend = "onnx"
    precisions = ("fp32", "fp16", "int8")


def _graph(path: Path):
    import onnx

    return onnx.load(str(path)).graph


def _export(model: Path, out: Path, *args: str) -> dict:
    res = run_cli("export", "--model", model, "--target", "onnx", "--out", out, *args)
    assert res.code == 0, res.err
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def int8_per_tensor(cxr_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ort-pt") / "int8"
    _export(cxr_model, out, "--precision", "int8", "--calib", CXR, "--granularity", "per-tensor")
    return out


def test_static_int8_is_qdq_with_recorded_settings(int8_per_tensor):
    from edgemed.calibration import CalibrationSet

    m = json.loads((int8_per_tensor / "manifest.json").read_text())
    ops = {n.op_type for n in _graph(int8_per_tensor / "model.onnx").node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    b = m["backend"]
    assert (b["mode"], b["calib_method"], b["granularity"]) == ("static", "minmax", "per-tensor")
    assert (b["activation_type"], b["weight_type"], b["format"]) == ("uint8", "uint8", "QDQ")
    assert b["excluded_nodes"] == []
    cal = json.loads((int8_per_tensor / "calibration.json").read_text())
    digest = CalibrationSet(np.zeros(0), np.zeros(0), cal).manifest_sha256
    assert b["calibration"]["manifest_sha256"] == digest
    assert m["provenance"]["inputs"]["calibration_manifest"] == digest
    assert sum(cal["class_counts"].values()) == len(cal["samples"]) == 256
    assert m["accuracy_control"]["checked"] and m["accuracy_control"]["excluded_nodes"] == []


def _conv_weight_scales(path: Path) -> list[int]:
    """Sizes of the scale tensors that dequantize Conv weights (1 = per-tensor)."""
    from onnx import numpy_helper

    g = _graph(path)
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    sizes = []
    for n in g.node:
        weight = inits.get(n.input[0]) if n.op_type == "DequantizeLinear" else None
        if weight is not None and weight.ndim == 4:  # a conv weight
            sizes.append(int(np.asarray(inits[n.input[1]]).size))
    return sizes


def test_granularity_changes_the_weight_scales(int8_per_tensor, cxr_model, tmp_path):
    per_channel = tmp_path / "pc"
    _export(cxr_model, per_channel, "--precision", "int8", "--calib", CXR, "--calib-count", "64")
    assert set(_conv_weight_scales(int8_per_tensor / "model.onnx")) == {1}
    pc_sizes = _conv_weight_scales(per_channel / "model.onnx")
    assert pc_sizes and min(pc_sizes) > 1  # one scale per output channel
    m = json.loads((per_channel / "manifest.json").read_text())
    assert m["backend"]["granularity"] == "per-channel"


def test_logits_stay_float(int8_per_tensor):
    g = _graph(int8_per_tensor / "model.onnx")
    producer = next(n for n in g.node if "logits" in n.output)
    assert producer.op_type not in ("DequantizeLinear", "QuantizeLinear")


def test_dynamic_int8_runs_real_images(cxr_model, tmp_path):
    from edgemed.artifact import load_artifact
    from edgemed.backends import open_runner, run_batches
    from edgemed.data import load_dataset

    out = tmp_path / "dyn"
    m = _export(cxr_model, out, "--precision", "int8", "--quant-mode", "dynamic")
    assert m["backend"]["mode"] == "dynamic" and "calib_method" not in m["backend"]
    assert not (out / "calibration.json").exists()
    ops = {n.op_type for n in _graph(out / "model.onnx").node}
    assert "ConvInteger" in ops or "DynamicQuantizeLinear" in ops
    art = load_artifact(out)
    test = load_dataset(CXR).split("test")
    with open_runner(art, threads=1) as r:
        logits = run_batches(r, art.contract, test.images)
    assert np.isfinite(logits).all()
    assert m["drift"]["flip_rate"] <= 0.01 and m["drift"]["auc_drop"] <= 0.005


def test_fp16_keeps_fp32_io(cxr_model, tmp_path):
    from onnx import TensorProto

    out = tmp_path / "fp16"
    m = _export(cxr_model, out, "--precision", "fp16")
    g = _graph(out / "model.onnx")
    assert g.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert g.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in g.initializer)
    assert m["backend"]["keep_io_types"] is True


@pytest.fixture(scope="module")
def calibration_ranges(cxr_model, tmp_path_factory) -> dict:
    """Activation ranges of the real model from the three calibration methods."""
    from edgemed.backends.onnxruntime import quant as oq
    from edgemed.backends.quant import QuantSettings
    from edgemed.calibration import CalibrationOptions
    from edgemed.models.source import load_model_source
    from edgemed.onnx_export import onnx_from_torch
    from edgemed.pipeline.calibration import resolve_calibration

    d = tmp_path_factory.mktemp("ranges")
    loaded = load_model_source(str(cxr_model))
    ref = onnx_from_torch(loaded.module, loaded.contract, d / "ref.onnx")
    pre = oq.preprocess_for_quant(ref, d / "pre.onnx")
    cal = resolve_calibration(str(CXR), loaded.contract, loaded.card, CalibrationOptions(128))
    out = {}
    for method in oq.METHODS:
        opts = oq.calib_options(QuantSettings("int8", "static", method))
        out[method] = oq.ranges_from_calibration(pre, cal, loaded.contract, method, opts)
    return {"ranges": out, "pre": pre}


def _absmax(ranges, name: str) -> float:
    lo, hi = ranges[name].range_value
    return max(abs(float(np.min(lo))), abs(float(np.max(hi))))


def test_calibration_methods_give_different_ranges(calibration_ranges):
    r = calibration_ranges["ranges"]
    relus = [k for k in r["minmax"] if k.endswith("Relu_output_0")]
    assert len(relus) >= 3
    ratios = {m: [_absmax(r[m], k) / _absmax(r["minmax"], k) for k in relus] for m in r}
    # Entropy picks a KL-optimal clipping threshold: well inside the observed maximum (with
    # onnxruntime's default bins it had a single candidate, the maximum itself, i.e. MinMax).
    assert np.median(ratios["entropy"]) < 0.8, ratios
    # Percentile clips the top 0.001% of values: slightly inside the maximum on every tensor.
    assert all(v < 1.0 for v in ratios["percentile"]), ratios
    assert ratios["entropy"] != ratios["percentile"]


def test_calibration_methods_give_different_scales(calibration_ranges, tmp_path):
    from onnx import numpy_helper

    from edgemed.backends.onnxruntime import quant as oq
    from edgemed.backends.quant import QuantSettings

    scales = {}
    for method, ranges in calibration_ranges["ranges"].items():
        out = tmp_path / f"{method}.onnx"
        s = QuantSettings("int8", "static", method, "per-channel")
        oq.qdq_from_onnx(calibration_ranges["pre"], out, ranges, s)
        g = _graph(out)
        inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        q = [n for n in g.node if n.op_type == "QuantizeLinear"]
        scales[method] = tuple(round(float(inits[n.input[1]]), 8) for n in q)
    assert len(set(scales.values())) == 3, scales


def test_int8_file_is_under_30_percent_of_fp32_on_a_1m_param_model(tmp_path):
    from edgemed.calibration import CalibrationOptions
    from edgemed.contract import Contract
    from edgemed.pipeline.budget import UNGATED
    from edgemed.pipeline.export import ExportRequest, run_export

    contract = Contract((28, 28), 1, ("normal", "pneumonia"), mean=(0.5,), std=(0.25,))
    (tmp_path / "c.json").write_text(contract.to_json())
    common = dict(
        model="edgemed.models.zoo:ResNet18",
        target="onnx",
        contract=str(tmp_path / "c.json"),
        data=str(CXR),  # a factory source needs data: parity and drift are never skipped
        model_args={"width": 0.5},
    )
    fp32 = run_export(ExportRequest(out=tmp_path / "fp32", **common))
    int8 = run_export(
        ExportRequest(
            out=tmp_path / "int8",
            precision="int8",
            calib=str(CXR),
            # an untrained network: this test measures file size, not drift
            calibration=CalibrationOptions(32),
            budget=UNGATED,
            **common,
        )
    )
    n_params = sum(
        int(np.prod(i.dims)) for i in _graph(tmp_path / "fp32" / "model.onnx").initializer
    )
    assert n_params >= 1_000_000
    ratio = int8["files"]["model.onnx"]["bytes"] / fp32["files"]["model.onnx"]["bytes"]
    assert ratio <= 0.30, ratio
    assert int8["accuracy_control"]["checked"] is True  # drift is checked, never skipped


@pytest.mark.parametrize(
    "args, needles",
    [
        (("--precision", "fp16", "--calib-method", "entropy"), ("--calib-method", "int8")),
        (
            ("--precision", "int8", "--quant-mode", "dynamic", "--calib-method", "minmax"),
            ("static",),
        ),
        (("--precision", "fp32", "--granularity", "per-tensor"), ("--granularity", "fp32")),
        (("--precision", "int8", "--calib", CXR, "--option", "bogus=1"), ("bogus", "options are")),
        (
            ("--precision", "int8", "--calib", CXR, "--option", "calib_percentile=99.9"),
            ("calib_percentile", "minmax"),
        ),
        (
            ("--precision", "int8", "--calib", CXR, "--option", "exclude_nodes=/no/such/Conv"),
            ("/no/such/Conv", "choose from"),
        ),
        (("--precision", "fp32", "--max-flip-rate", "0.1"), ("--max-flip-rate", "fp32")),
    ],
)
def test_inapplicable_options_are_refused(cxr_model, tmp_path, args, needles):
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", cxr_model, "--target", "onnx", "--out", tmp_path / "o", *args
    )
    assert_user_error(res, *needles)
    assert res.code == 2
    assert tree_snapshot(tmp_path) == before


def test_unsupported_op_is_named_with_its_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from edgemed.contract import Contract

    nodes = [
        helper.make_node("Relu", ["input"], ["r"], name="relu0"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("FancyGate", ["f"], ["logits"], name="gate0", domain="com.example"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 1])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=8), tmp_path / "m.onnx")
    contract = Contract((28, 28), 1, ("normal", "pneumonia"), mean=(0.5,), std=(0.25,))
    (tmp_path / "c.json").write_text(contract.to_json())
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", tmp_path / "m.onnx", "--contract", tmp_path / "c.json",
        "--target", "onnx", "--out", tmp_path / "o",
    )  # fmt: skip
    assert_user_error(res, "FancyGate", "gate0")
    assert tree_snapshot(tmp_path) == before
