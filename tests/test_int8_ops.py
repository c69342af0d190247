"""Quantized means quantized, and every quantized node in reach of --option exclusions (ONNX
Runtime, OpenVINO, TFLite on the real chest X-ray model; real conversions, no mocks)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot


def _int8(cxr_model, out, target: str, *extra: str):
    return run_cli(
        "export", "--model", cxr_model, "--target", target, "--out", out,
        "--precision", "int8", "--calib", CXR, "--calib-count", "64", *extra,
    )  # fmt: skip


def test_an_fp32_model_labelled_int8_is_refused(cxr_onnx):
    from edgemed.backends.int8_ops import count_int8, refuse_float
    from edgemed.errors import DriftError

    cov = count_int8(cxr_onnx / "model.onnx")
    assert (cov.quantized, cov.total) == (0, 8)
    with pytest.raises(DriftError, match="is the FP32 model: 0 of 8 compute ops in INT8"):
        refuse_float(cov, "the onnx int8 artifact")


def test_an_openvino_fp32_ir_counts_no_int8_ops(cxr_model, tmp_path):
    from edgemed.backends.int8_ops import count_int8

    res = run_cli("export", "--model", cxr_model, "--target", "openvino", "--out", tmp_path / "o")
    assert res.code == 0, res.err
    cov = count_int8(tmp_path / "o" / "model.xml")
    assert cov.quantized == 0 and cov.total == 8


def test_int8_with_every_compute_type_in_float_is_refused(cxr_model, tmp_path):
    """Excluding Conv and Gemm leaves only pool/flatten Q/DQ: the FP32 model, refused."""
    before = tree_snapshot(tmp_path)
    res = _int8(cxr_model, tmp_path / "o", "onnx", "--option", "exclude_op_types=Conv,Gemm")
    assert_user_error(res, "is the FP32 model: 0 of 8 compute ops in INT8", "--precision fp32")
    assert res.code == 4
    assert tree_snapshot(tmp_path) == before


def test_accuracy_control_never_answers_with_the_fp32_model(cxr_onnx, tmp_path):
    """An accuracy-control step that keeps every quantized node float is the FP32 model: it is
    scored as a failed attempt without being measured, so it can never be chosen."""
    from edgemed.backends import ConvertRequest
    from edgemed.backends.onnxruntime import OnnxRuntimeBackend
    from edgemed.calibration import CalibrationOptions
    from edgemed.contract import Contract
    from edgemed.pipeline.budget import BudgetOptions, budget_for
    from edgemed.pipeline.calibration import calibration_for_export
    from edgemed.pipeline.fallback import _Search

    contract = Contract.from_dict(json.loads((cxr_onnx / "manifest.json").read_text())["contract"])
    cal = calibration_for_export(str(CXR), "int8", contract, None, CalibrationOptions(64))
    req = ConvertRequest(cxr_onnx / "model.onnx", contract, "int8", calibration=cal)
    backend = OnnxRuntimeBackend()
    every = backend.quantizable_nodes(req)
    assert len(every) == 10  # 7 Conv, GlobalAveragePool, Flatten, Gemm: read from the QDQ graph

    def never(_dir, _conv):
        raise AssertionError("an all-float attempt must not be measured")

    budget = budget_for(BudgetOptions(accuracy_control=True), "int8")
    search = _Search(backend, req, tmp_path, never, budget)
    a = search.attempt(every, "fallback")
    assert not a.within and a.drift is None
    assert a.broken == "all float: 0 of 8 compute ops in INT8"
    assert a.row()["int8_ops"] == "0 of 8 compute ops in INT8"


def test_exclude_op_types_keeps_every_node_of_the_type_float(cxr_model, tmp_path):
    import onnx

    out = tmp_path / "o"
    res = _int8(cxr_model, out, "onnx", "--option", "exclude_op_types=Gemm,Flatten")
    assert res.code == 0, res.err
    m = json.loads((out / "manifest.json").read_text())
    assert m["backend"]["exclude_op_types"] == ["Gemm", "Flatten"]
    assert "/head/Gemm" in m["backend"]["excluded_nodes"]
    assert m["backend"]["int8_ops"]["quantized"] == 7 and m["backend"]["int8_ops"]["total"] == 8
    g = onnx.load(str(out / "model.onnx")).graph
    producers = {o: n.op_type for n in g.node for o in n.output}
    gemm = next(n for n in g.node if n.op_type == "Gemm")
    assert all(producers.get(i) != "DequantizeLinear" for i in gemm.input)


@pytest.mark.parametrize(
    ("option", "needles"),
    [
        ("exclude_nodes=/head/Gem", ("/head/Gem", "closest: /head/Gemm")),
        ("exclude_op_types=LayerNormalization", ("LayerNormalization", "Conv", "Gemm")),
    ],
)
def test_unknown_exclusions_name_the_close_matches(cxr_model, tmp_path, option, needles):
    before = tree_snapshot(tmp_path)
    res = _int8(cxr_model, tmp_path / "o", "onnx", "--option", option)
    assert_user_error(res, "not among the quantizable", *needles)
    assert tree_snapshot(tmp_path) == before


def test_exclude_op_types_elsewhere_names_the_backends_that_take_it(cxr_model, tmp_path):
    res = _int8(cxr_model, tmp_path / "o", "tensorrt", "--option", "exclude_op_types=Conv")
    assert_user_error(
        res, "cannot keep op types in float", "onnx, openvino, tflite", "exclude_nodes"
    )


def test_tflite_exclude_op_types_are_torch_module_classes(cxr_model, tmp_path):
    """LiteRT's equivalent of ignored op types: every submodule of the named torch classes stays
    float (here the Linear head: its FULLY_CONNECTED runs in float), recorded in the manifest."""
    out = tmp_path / "o"
    res = _int8(cxr_model, out, "tflite", "--option", "exclude_op_types=Linear")
    assert res.code == 0, res.err
    m = json.loads((out / "manifest.json").read_text())
    assert m["backend"]["exclude_op_types"] == ["Linear"]
    assert m["backend"]["excluded_nodes"] == ["head"]
    ops = m["backend"]["int8_ops"]
    assert 0 < ops["quantized"] == ops["total"] - 1, ops
    bad = _int8(cxr_model, tmp_path / "p", "tflite", "--option", "exclude_op_types=Linaer")
    assert_user_error(bad, "not among the quantizable", "Linaer", "closest: Linear")


def test_tflite_keeps_a_conv_before_a_relu6_float_without_a_crash(tmp_path):
    """mobilenetv2-small at 28 px: keeping one conv of a conv-bn-relu6 pattern float crashed
    torchao's PT2E prepare (KeyError: conv2d); the shared specs now follow it into float."""
    from edgemed.backends.int8_ops import count_int8
    from edgemed.backends.quant import QuantSettings
    from edgemed.backends.tflite import convert as lc
    from edgemed.calibration import CalibrationOptions
    from edgemed.contract import Contract
    from edgemed.models import ModelSpec, build_model
    from edgemed.pipeline.calibration import calibration_for_export

    module = build_model(ModelSpec("mobilenetv2-small"), 1, 1).eval()
    contract = Contract(input_size=(28, 28), channels=1, class_names=("normal", "pneumonia"))
    cal = calibration_for_export(str(CXR), "int8", contract, None, CalibrationOptions(32))
    kept = ("features.3.body.0",)  # an expansion conv inside a residual block
    s = QuantSettings("int8", "static", "minmax", "per-channel", kept)
    lc.tflite_int8(module, contract.with_layout("NHWC"), cal, s, tmp_path / "m.tflite")
    cov = count_int8(tmp_path / "m.tflite")
    assert 0 < cov.quantized < cov.total, cov


def test_openvino_exclude_op_types_goes_to_nncf_ignored_scope(cxr_model, tmp_path):
    out = tmp_path / "o"
    res = _int8(
        cxr_model, out, "openvino", "--option", "exclude_op_types=MatMul",
        "--option", "bias_correction=none",
    )  # fmt: skip
    assert res.code == 0, res.err
    m = json.loads((out / "manifest.json").read_text())
    assert m["backend"]["nncf"]["ignored_types"] == ["MatMul"]
    ops = m["backend"]["int8_ops"]
    assert (ops["quantized"], ops["total"]) == (7, 8), ops  # the Gemm head (MatMul) stays float
    bad = _int8(cxr_model, tmp_path / "p", "openvino", "--option", "exclude_op_types=MatMull")
    assert_user_error(bad, "exclude_op_types names MatMull", "closest: MatMul")
