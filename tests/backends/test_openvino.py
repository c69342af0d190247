"""OpenVINO backend: the shared template (fp32, fp16, int8) plus OpenVINO-specific checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.backends.template import BackendTemplate
from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot


def _element_types(xml: Path) -> set[str]:
    """Element types of the IR's constants (weights, biases, shapes)."""
    text = xml.read_text()
    return set(re.findall(r'type="Const".*?element_type="(\w+)"', text, flags=re.S))


class TestOpenVINO(BackendTemplate):
    backend = "openvino"
    precisions = ("fp32", "fp16", "int8")

    def test_op_openvino_cannot_convert_is_named(self, tmp_path):
        self.check_unsupported_op_is_named(
            tmp_path, "OpenVINO cannot convert op Det", "node '/Det'"
        )

    def _manifest(self, cxr_model, artifacts, tmp_path_factory, precision) -> tuple[Path, dict]:
        out = self._export(cxr_model, artifacts, tmp_path_factory, precision)
        return out, json.loads((out / "manifest.json").read_text())

    def test_fp32_executes_in_f32_with_f32_weights(self, cxr_model, artifacts, tmp_path_factory):
        from edgemed.artifact import load_artifact
        from edgemed.backends import open_runner

        out, m = self._manifest(cxr_model, artifacts, tmp_path_factory, "fp32")
        b = m["backend"]
        assert b["execution_precision"] == "f32" and b["inference_precision_hint"] == "f32"
        assert b["compress_to_fp16"] is False and b["weights"] == "f32"
        types = _element_types(out / "model.xml")
        assert "f32" in types and "f16" not in types and "bf16" not in types
        with open_runner(load_artifact(out), threads=1) as runner:
            assert runner.info["execution_precision"] == "f32"
            assert runner.info["threads"] == 1 and runner.info["streams"] == 1

    def test_fp16_weights_are_compressed_and_run_in_f32(
        self, cxr_model, artifacts, tmp_path_factory
    ):
        out, m = self._manifest(cxr_model, artifacts, tmp_path_factory, "fp16")
        assert "f16" in _element_types(out / "model.xml")
        assert m["backend"]["weights"] == "f16" and m["backend"]["execution_precision"] == "f32"
        fp32 = self._export(cxr_model, artifacts, tmp_path_factory, "fp32")
        ratio = (out / "model.bin").stat().st_size / (fp32 / "model.bin").stat().st_size
        assert ratio < 0.55

    def test_runner_compiles_with_the_recorded_hint(self, cxr_model, artifacts, tmp_path_factory):
        import openvino as ov

        from edgemed.backends.openvino import OpenVINORunner
        from edgemed.errors import UnavailableError

        out, m = self._manifest(cxr_model, artifacts, tmp_path_factory, "fp16")
        runner = OpenVINORunner(out / m["model_file"], hint="bf16", threads=1)
        if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            with runner:
                assert runner.info["execution_precision"] == "bf16"  # read back, not echoed
        else:  # asked for bf16 on a CPU without it: refused, never run in another precision
            with pytest.raises(UnavailableError, match="re-export"):
                runner.activate()

    def test_int8_records_nncf_settings_and_calibration(
        self, cxr_model, artifacts, tmp_path_factory
    ):
        from edgemed.calibration import CalibrationSet

        out, m = self._manifest(cxr_model, artifacts, tmp_path_factory, "int8")
        nncf = m["backend"]["nncf"]
        choice = m["backend"]["bias_correction_choice"]  # auto: measured on validation
        dp = choice["mean_abs_dp"]
        assert set(dp) == {"full", "none"} and choice["chosen"] == min(dp, key=dp.get)
        assert choice["measured_on"].startswith("270 validation images")
        assert nncf["overflow_fix"] == "disable" and nncf["bias_correction"] == choice["chosen"]
        assert nncf["activations_range_estimator"] == "MINMAX"
        assert nncf["weights_granularity"] == "per-channel" and nncf["subset_size"] == 256
        assert m["backend"]["float_layers"] == []  # every conv/matmul quantized
        xml = (out / "model.xml").read_text()
        assert "FakeQuantize" in xml and "i8" in _element_types(out / "model.xml")
        cal = json.loads((out / "calibration.json").read_text())
        digest = CalibrationSet(None, None, cal).manifest_sha256
        assert m["backend"]["calibration"]["manifest_sha256"] == digest


def _export(model, out: Path, *args) -> dict:
    res = run_cli("export", "--model", model, "--target", "openvino", "--out", out, *args)
    assert res.code == 0, res.err
    return json.loads((out / "manifest.json").read_text())


def test_accuracy_control_uses_nncf_with_auc(cxr_model, tmp_path):
    m = _export(
        cxr_model, tmp_path / "ac", "--precision", "int8", "--calib", CXR,
        "--calib-count", "64", "--accuracy-control", "--max-auc-drop", "0.01",
    )  # fmt: skip
    ac = m["backend"]["nncf_accuracy_control"]
    assert ac["method"] == "nncf.quantize_with_accuracy_control"
    # scored on the validation split (270 images), not on the 64 calibration images
    assert ac["max_drop"] == 0.01 and ac["metric"] == "AUC on the validation split"
    assert ac["validation_images"] == m["evaluation"]["n"] == 270
    assert m["accuracy_control"]["accuracy_control"] is True
    assert m["drift"]["flip_rate"] <= 0.01


def test_layer_candidates_are_every_op_nncf_quantized(cxr_onnx, cxr_model, tmp_path):
    """Accuracy control's OpenVINO candidates are read from an NNCF-quantized model, not a list of
    weighted op types: the CNN's global pool and flatten are in reach (the same 10 nodes as ONNX
    Runtime's), and keeping the pool in float leaves its ReduceMean without a FakeQuantize."""
    import openvino as ov

    from edgemed.backends import ConvertRequest
    from edgemed.backends.onnxruntime import OnnxRuntimeBackend
    from edgemed.backends.openvino import OpenVINOBackend
    from edgemed.calibration import CalibrationOptions
    from edgemed.contract import Contract
    from edgemed.pipeline.calibration import calibration_for_export

    contract = Contract.from_dict(json.loads((cxr_onnx / "manifest.json").read_text())["contract"])
    cal = calibration_for_export(str(CXR), "int8", contract, None, CalibrationOptions(64))
    req = ConvertRequest(cxr_onnx / "model.onnx", contract, "int8", calibration=cal)
    every = OpenVINOBackend().quantizable_nodes(req)
    assert {"/pool/GlobalAveragePool", "/head/Gemm"} <= set(every)
    # /Flatten's output is also the domain guard's feature output (a model output, through the
    # Identity `edgemed_feature_output`): NNCF leaves both unquantized; ONNX Runtime lists /Flatten
    # (the Identity only names the output: never a candidate to keep in float)
    ort = set(OnnxRuntimeBackend().quantizable_nodes(req))
    assert ort - set(every) == {"/Flatten"} and set(every) <= ort
    assert "edgemed_feature_output" not in ort

    m = _export(
        cxr_model, tmp_path / "o", "--precision", "int8", "--calib", CXR, "--calib-count", "64",
        "--option", "exclude_nodes=/pool/GlobalAveragePool",
    )  # fmt: skip
    assert m["backend"]["excluded_nodes"] == ["/pool/GlobalAveragePool"]
    model = ov.Core().read_model(str(tmp_path / "o" / m["model_file"]))
    pool = next(op for op in model.get_ordered_ops() if op.get_type_name() == "ReduceMean")
    fed = {pool.input_value(i).get_node().get_type_name() for i in range(pool.get_input_size())}
    assert "FakeQuantize" not in fed


def test_percentile_and_minmax_ranges_differ(cxr_model, tmp_path):
    """Each range estimator offered really does what its name says (different ranges)."""
    from edgemed.backends import ConvertRequest
    from edgemed.backends.openvino import OpenVINOBackend, ov_model_from_onnx
    from edgemed.backends.openvino import quant as oq
    from edgemed.calibration import CalibrationOptions
    from edgemed.models.source import load_model_source
    from edgemed.onnx_export import onnx_from_torch
    from edgemed.pipeline.calibration import resolve_calibration

    loaded = load_model_source(str(cxr_model))
    onnx_path = onnx_from_torch(loaded.module, loaded.contract, tmp_path / "ref.onnx")
    cal = resolve_calibration(str(CXR), loaded.contract, loaded.card, CalibrationOptions(32))
    limits = {}
    for method in ("minmax", "percentile"):
        req = ConvertRequest(onnx_path, loaded.contract, "int8", calibration=cal,
                             options={"calib_method": method})  # fmt: skip
        s = OpenVINOBackend().settings(req)
        q, _ = oq.int8_from_ov(ov_model_from_onnx(onnx_path), req, s, [], None)
        fq = [op for op in q.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
        limits[method] = fq[0].input_value(2).get_node().get_data().max()  # input_high
    assert limits["percentile"] < limits["minmax"]


def test_explicit_bias_correction_is_used_as_given(cxr_model, tmp_path):
    m = _export(
        cxr_model, tmp_path / "x", "--precision", "int8", "--calib", CXR, "--calib-count", "32",
        "--option", "bias_correction=none", "--max-flip-rate", "1", "--max-auc-drop", "1",
    )  # fmt: skip
    assert m["backend"]["nncf"]["bias_correction"] == "none"
    assert "bias_correction_choice" not in m["backend"]


def test_nncf_accuracy_control_without_validation_images_is_refused(cxr_model, tmp_path):
    """NNCF's accuracy control never falls back to scoring on the calibration images."""
    from edgemed.backends import ConvertRequest
    from edgemed.backends.openvino import OpenVINOBackend, ov_model_from_onnx
    from edgemed.backends.openvino import quant as oq
    from edgemed.calibration import CalibrationOptions
    from edgemed.errors import InputError
    from edgemed.models.source import load_model_source
    from edgemed.onnx_export import onnx_from_torch
    from edgemed.pipeline.calibration import resolve_calibration

    loaded = load_model_source(str(cxr_model))
    onnx_path = onnx_from_torch(loaded.module, loaded.contract, tmp_path / "ref.onnx")
    cal = resolve_calibration(str(CXR), loaded.contract, loaded.card, CalibrationOptions(32))
    req = ConvertRequest(onnx_path, loaded.contract, "int8", calibration=cal)
    s = OpenVINOBackend().settings(req)
    with pytest.raises(InputError, match="validation images"):
        oq.int8_from_ov(ov_model_from_onnx(onnx_path), req, s, [], 0.01)
    # without validation images `auto` bias correction cannot compare: it says so in the manifest
    _, info = oq.int8_from_ov(ov_model_from_onnx(onnx_path), req, s, [], None)
    assert info["nncf"]["bias_correction"] == "full"
    assert "no validation images" in info["bias_correction_choice"]["reason"]


def test_unknown_calibration_method_is_refused(cxr_model, tmp_path):
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", cxr_model, "--target", "openvino", "--precision", "int8",
        "--calib", CXR, "--calib-method", "entropy", "--out", tmp_path / "x",
    )  # fmt: skip
    assert_user_error(res, "openvino cannot do --calib-method entropy", "minmax, percentile")
    assert res.code == 2 and tree_snapshot(tmp_path) == before


def test_dynamic_int8_is_refused(cxr_model, tmp_path):
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", cxr_model, "--target", "openvino", "--precision", "int8",
        "--quant-mode", "dynamic", "--out", tmp_path / "x",
    )  # fmt: skip
    assert_user_error(res, "cannot do --quant-mode dynamic", "static")
    assert tree_snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--precision", "fp16", "--option", "inference_precision=f64"), ("f32, bf16, f16",)),
        (("--precision", "fp32", "--option", "inference_precision=bf16"), ("fp16",)),
        (("--precision", "fp16", "--option", "exclude_nodes=/head/Gemm"), ("int8 only",)),
        (
            ("--precision", "int8", "--calib", str(CXR), "--option", "overflow_fix=maybe"),
            ("disable, first_layer_only, enable",),
        ),
        (
            ("--precision", "int8", "--calib", str(CXR), "--option", "exclude_nodes=nope"),
            ("nope", "choose from"),
        ),
    ],
)
def test_bad_openvino_options(cxr_model, tmp_path, args, needles):
    before = tree_snapshot(tmp_path)
    res = run_cli("export", "--model", cxr_model, "--target", "openvino", *args,
                  "--out", tmp_path / "x")  # fmt: skip
    assert_user_error(res, *needles)
    assert tree_snapshot(tmp_path) == before
