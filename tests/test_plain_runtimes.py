"""Artifacts behave the same outside edgemed: each one is run with its runtime ALONE (plain
onnxruntime / openvino / LiteRT calls, as the README's "use without edgemed" shows), on the
validation images its export measured, and reproduces the manifest's drift numbers.

Only the setup (validation images, the torch FP32 reference logits) uses edgemed; the inference
and the metrics below use numpy and the runtime only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CXR


def _export(model, out: Path, target: str, precision: str, *extra: str) -> dict:
    from tests.conftest import run_cli

    calib = ("--calib", CXR) if precision == "int8" and "dynamic" not in extra else ()
    res = run_cli("export", "--model", model, "--target", target, "--out", out,
                  "--precision", precision, *calib, *extra)  # fmt: skip
    assert res.code == 0, res.err
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def validation(cxr_model):
    """(uint8 images, labels, torch FP32 logits) of the split the export measured drift on."""
    from edgemed.models.source import load_model_source
    from edgemed.pipeline.export import evaluation_set
    from edgemed.pipeline.training import predict_logits

    loaded = load_model_source(str(cxr_model))
    ev = evaluation_set(loaded, None)
    return (
        ev.images,
        ev.labels.reshape(-1),
        predict_logits(loaded.module, loaded.contract, ev.images),
    )


def _inputs(images: np.ndarray, c: dict) -> np.ndarray:
    """The contract, by hand: /scale, (x - mean) / std, layout."""
    x = images.astype(np.float32) / np.float32(c["scale"])
    x = (x - np.asarray(c["mean"], np.float32)) / np.asarray(c["std"], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if c["layout"] == "NCHW" else x)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def _check(manifest: dict, logits: np.ndarray, validation) -> None:
    _, labels, ref = validation
    t = manifest["contract"]["threshold"]
    p_ref = 1 / (1 + np.exp(-ref.astype(np.float64).reshape(-1)))
    p = 1 / (1 + np.exp(-logits.astype(np.float64).reshape(-1)))
    d = manifest["drift"]
    assert int(((p_ref >= t) != (p >= t)).sum()) == d["flips"]
    assert round(_auc(labels, p), 4) == round(d["auc_candidate"], 4)
    assert round(_auc(labels, p_ref) - _auc(labels, p), 4) == round(d["auc_drop"], 4)


def test_onnxruntime_alone_reproduces_dynamic_int8_one_image_at_a_time(
    cxr_model, validation, tmp_path
):
    import onnxruntime as ort

    m = _export(cxr_model, tmp_path / "o", "onnx", "int8", "--quant-mode", "dynamic")
    assert m["drift"]["eval_batch"] == 1  # dynamic INT8 depends on the batch: stated, as run
    sess = ort.InferenceSession(
        str(tmp_path / "o" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    name = sess.get_inputs()[0].name  # the artifact's own input name, never assumed
    x = _inputs(validation[0], m["contract"])
    logits = np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    _check(m, logits, validation)


def test_openvino_alone_with_the_precision_stored_in_the_ir(cxr_model, validation, tmp_path):
    """The IR carries its precision (rt_info runtime_options); the CPU plugin does not apply it by
    itself (2026.4), so the caller reads it from the IR and passes it, as the README shows."""
    import openvino as ov

    m = _export(cxr_model, tmp_path / "o", "openvino", "fp32")
    core = ov.Core()
    model = core.read_model(str(tmp_path / "o" / "model.xml"))
    hint = model.get_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"]).astype(str)
    assert hint == "f32"  # in the IR itself, not only in manifest.json
    plain = core.compile_model(model, "CPU")  # what a plain compile does on this CPU: recorded
    precision = plain.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    assert m["backend"]["plain_compile_precision"] == precision
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    x = _inputs(validation[0], m["contract"])
    logits = np.concatenate([compiled(x[i : i + 32])[0] for i in range(0, len(x), 32)])
    _check(m, logits, validation)


def test_litert_alone_reproduces_int8(cxr_model, validation, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    m = _export(cxr_model, tmp_path / "o", "tflite", "int8")
    it = Interpreter(model_path=str(tmp_path / "o" / "model.tflite"))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    x = _inputs(validation[0], m["contract"])
    logits = []
    for i in range(len(x)):
        xi = x[i : i + 1]
        if inp["dtype"] != np.float32:  # int8 input: quantize with the tensor's own parameters
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            xi = np.clip(np.round(xi / scale) + zero, info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], xi)
        it.invoke()
        y = it.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        logits.append(y.reshape(1, -1))
    _check(m, np.concatenate(logits), validation)
