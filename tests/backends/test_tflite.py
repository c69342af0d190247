"""TFLite/LiteRT backend: the shared template (fp32, fp16, int8) plus LiteRT-specific checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.backends.template import BackendTemplate
from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot


def _plain_litert_logits(model_file: Path, contract: dict, images: np.ndarray) -> np.ndarray:
    """Run a .tflite the way a deployment would: only numpy, the manifest's contract and LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model_file), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    x = images.astype(np.float32) / contract["scale"]
    x = (x - np.float32(contract["mean"])) / np.float32(contract["std"])  # NHWC already
    logits = []
    for img in x:
        xi = img[None]
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            xi = np.clip(np.round(xi / scale) + zero, -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], xi.astype(inp["dtype"]))
        it.invoke()
        y = it.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        logits.append(y.reshape(-1))
    return np.stack(logits)


class TestTFLite(BackendTemplate):
    backend = "tflite"
    precisions = ("fp32", "fp16", "int8")

    def test_op_litert_cannot_convert_is_named(self, tmp_path):
        self.check_unsupported_op_is_named(
            tmp_path, "LiteRT cannot convert op aten._linalg_det", "at node '_linalg_det'"
        )

    def _art(self, cxr_model, artifacts, tmp_path_factory, precision) -> tuple[Path, dict]:
        out = self._export(cxr_model, artifacts, tmp_path_factory, precision)
        return out, json.loads((out / "manifest.json").read_text())

    def test_nhwc_artifact_runs_in_plain_litert(
        self, cxr_model, artifacts, tmp_path_factory, precision
    ):
        from edgemed.contract import Contract
        from edgemed.data import load_dataset
        from edgemed.evaluation.drift import drift_from_logits
        from edgemed.models.source import load_model_source
        from edgemed.pipeline.training import predict_logits

        out, m = self._art(cxr_model, artifacts, tmp_path_factory, precision)
        assert m["contract"]["layout"] == "NHWC" and m["backend"]["layout"] == "NHWC"
        assert m["backend"]["io"]["input"]["shape"] == [1, 28, 28, 1]
        test = load_dataset(CXR).split("test")
        logits = _plain_litert_logits(out / m["model_file"], m["contract"], test.images)
        loaded = load_model_source(str(cxr_model))
        ref = predict_logits(loaded.module, loaded.contract, test.images)
        d = drift_from_logits(Contract.from_dict(m["contract"]), ref, logits, test.labels)
        assert d.flip_rate <= (0.0 if precision == "fp32" else 0.01), d

    def test_int8_has_int8_input_and_float_logits(self, cxr_model, artifacts, tmp_path_factory):
        from ai_edge_litert.interpreter import Interpreter

        from edgemed.artifact import load_artifact
        from edgemed.backends import open_runner

        out, m = self._art(cxr_model, artifacts, tmp_path_factory, "int8")
        b = m["backend"]
        assert b["int8_input"] and not b["int8_output"] and b["fixed_batch"] == 1
        assert (b["calib_method"], b["granularity"]) == ("minmax", "per-channel")
        assert b["output"] == "float32 logits" and (out / "calibration.json").is_file()
        it = Interpreter(model_path=str(out / m["model_file"]))
        assert it.get_input_details()[0]["dtype"] == np.int8
        assert it.get_output_details()[0]["dtype"] == np.float32
        dtypes = {np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
        assert "int8" in dtypes and "float16" not in dtypes
        fp32 = self._export(cxr_model, artifacts, tmp_path_factory, "fp32")
        size = (out / "model.tflite").stat().st_size  # flatbuffer overhead: tiny model, < 0.5
        assert size < 0.5 * (fp32 / "model.tflite").stat().st_size
        with open_runner(load_artifact(out), threads=1) as runner:
            assert runner.batch_limit == 1 and runner.info["interpreter"] == "ai_edge_litert"
            x = np.zeros((3, 28, 28, 1), np.float32)  # infer() takes any batch, float in/out
            assert runner.infer(x).shape == (3, 1) and runner.infer(x).dtype == np.float32

    def test_fp16_has_float16_weights(self, cxr_model, artifacts, tmp_path_factory):
        from ai_edge_litert.interpreter import Interpreter

        out, m = self._art(cxr_model, artifacts, tmp_path_factory, "fp16")
        it = Interpreter(model_path=str(out / m["model_file"]))
        dtypes = [np.dtype(t["dtype"]).name for t in it.get_tensor_details()]
        assert "float16" in dtypes
        assert it.get_input_details()[0]["dtype"] == np.float32
        assert m["backend"]["weights"] == "float16"


def test_onnx_only_source_is_refused(cxr_onnx, tmp_path):
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", cxr_onnx / "model.onnx", "--target", "tflite", "--out", tmp_path / "x"
    )
    assert_user_error(res, "TFLite export needs the torch model", "training dir")
    assert res.code == 2 and tree_snapshot(tmp_path) == before


def test_calibration_method_tflite_lacks_is_refused(cxr_model, tmp_path):
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", cxr_model, "--target", "tflite", "--precision", "int8",
        "--calib", CXR, "--calib-method", "entropy", "--out", tmp_path / "x",
    )  # fmt: skip
    assert_user_error(res, "tflite cannot do --calib-method entropy", "minmax, histogram")
    assert tree_snapshot(tmp_path) == before


def test_integer_output_gives_a_full_integer_model(cxr_model, tmp_path):
    """`integer_output=true`: int8 logits too (integer-only accelerators); head weights int8."""
    from ai_edge_litert.interpreter import Interpreter

    res = run_cli(
        "export", "--model", cxr_model, "--target", "tflite", "--precision", "int8",
        "--calib", CXR, "--calib-count", "32", "--option", "integer_output=true",
        "--max-flip-rate", "1", "--out", tmp_path / "x",
    )  # fmt: skip
    assert res.code == 0, res.err
    m = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert m["backend"]["int8_output"] and m["backend"]["output"] == "int8"
    it = Interpreter(model_path=str(tmp_path / "x" / "model.tflite"))
    out = it.get_output_details()[0]
    assert out["dtype"] == np.int8 and out["quantization"][0] > 0


@pytest.mark.parametrize(
    ("opt", "precision", "message"),
    [
        ("integer_output=maybe", "int8", "must be true or false"),
        (
            "integer_output=true",
            "fp16",
            "--option integer_output=... applies only to precision int8",
        ),
    ],
)
def test_bad_integer_output_is_refused(cxr_model, tmp_path, opt, precision, message):
    before = tree_snapshot(tmp_path)
    calib = ["--calib", CXR] if precision == "int8" else []
    res = run_cli(
        "export", "--model", cxr_model, "--target", "tflite", "--precision", precision,
        *calib, "--option", opt, "--out", tmp_path / "x",
    )  # fmt: skip
    assert_user_error(res, message)
    assert tree_snapshot(tmp_path) == before


def test_exclude_nodes_keeps_a_layer_float(cxr_model, tmp_path):
    """The accuracy-aware fallback hook: an excluded module stays float in the .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    res = run_cli(
        "export", "--model", cxr_model, "--target", "tflite", "--precision", "int8",
        "--calib", CXR, "--calib-count", "32", "--option", "exclude_nodes=head",
        "--out", tmp_path / "x",
    )  # fmt: skip
    assert res.code == 0, res.err
    m = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert m["backend"]["excluded_nodes"] == ["head"]
    assert not m["backend"]["int8_output"]  # the head (last layer) runs in float
    it = Interpreter(model_path=str(tmp_path / "x" / "model.tflite"))
    assert it.get_output_details()[0]["dtype"] == np.float32
