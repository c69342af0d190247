"""FP16 never silently NaN: models whose activations or weights exceed FP16's range (65504).

For TensorRT the FP16 ONNX keeps the overflowing part in FP32 (NVIDIA AutoCast's rule on the
magnitudes measured on the calibration images) and its drift, simulated in ONNX Runtime, stays
within the budget. The other FP16 exports either keep that part in FP32 (OpenVINO and TFLite
compute in FP32 by default; ONNX Runtime keeps nodes reading an out-of-range weight in FP32) or
are refused with one line; never an artifact whose outputs are NaN/Inf.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.backends.overflow_models import CONTRACT
from tests.conftest import CXR, assert_user_error, run_cli

MODELS = {
    "activation": "tests.backends.overflow_models:activation_overflow_net",
    "initializer": "tests.backends.overflow_models:initializer_overflow_net",
}
MAX_AUC_DROP, MAX_FLIP_RATE = 0.005, 0.01


@pytest.fixture(scope="module")
def contract_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("overflow") / "contract.json"
    f.write_text(json.dumps(CONTRACT))
    return f


def _export(kind: str, target: str, contract: Path, out: Path, *extra: str):
    return run_cli(
        "export", "--model", MODELS[kind], "--contract", contract, "--target", target,
        "--precision", "fp16", "--data", CXR, "--out", out, *extra,
    )  # fmt: skip


def _outputs_on_test_split(artifact: Path) -> np.ndarray:
    from edgemed.artifact import load_artifact
    from edgemed.backends import get_backend, open_runner, run_batches
    from edgemed.data import load_dataset

    art = load_artifact(artifact)
    test = load_dataset(CXR).split("test")
    backend = get_backend(art.runtime)
    runner = (
        backend.simulation_runner(art.model_file, art.manifest["backend"])
        if art.runtime == "tensorrt"
        else open_runner(art)
    )
    with runner:
        return run_batches(runner, art.contract, test.images)


def _fp16_round_trips(path: Path) -> list[str]:
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path))
    to = {n.output[0]: next((a.i for a in n.attribute if a.name == "to"), None)
          for n in model.graph.node if n.op_type == "Cast"}  # fmt: skip
    return [
        n.name for n in model.graph.node
        if n.op_type == "Cast" and to[n.output[0]] == TensorProto.FLOAT
        and to.get(n.input[0]) == TensorProto.FLOAT16
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["activation", "initializer"])
def test_tensorrt_fp16_keeps_the_overflowing_part_in_fp32(kind, contract_file, tmp_path):
    out = tmp_path / "trt"
    res = _export(kind, "tensorrt", contract_file, out, "--calib", CXR)
    assert res.code == 0, res
    m = json.loads((out / "manifest.json").read_text())
    f = m["backend"]["fp16"]
    kept = {k["node"]: k["reason"] for k in f["kept_fp32"]}
    assert kept and f["fp32_nodes"] == list(kept) and f["fp16_initializers"] > 0
    what = "activation" if kind == "activation" else "initializer"
    assert any(reason.startswith(what) for reason in kept.values()), kept
    if kind == "activation":  # two kept nodes in a row: no FP16 round trip left between them
        assert f["largest_activation"] > 65504 and f["fp16_round_trips_removed"] >= 1
        assert not _fp16_round_trips(out / "model-fp16.onnx")
    d = m["drift"]
    assert d["simulated"] == "onnxruntime-cpu"
    assert d["auc_drop"] <= MAX_AUC_DROP and d["flip_rate"] <= MAX_FLIP_RATE, d
    logits = _outputs_on_test_split(out)
    assert np.isfinite(logits).all() and logits.std() > 0.5  # finite and not a constant


def test_tensorrt_fp16_thresholds_at_the_fp16_limit_still_keep_inf_out(contract_file, tmp_path):
    out = tmp_path / "x"
    res = _export(
        "activation", "tensorrt", contract_file, out, "--calib", CXR,
        "--option", "fp16_data_max=65504", "--option", "fp16_init_max=65504",
    )  # fmt: skip
    assert res.code == 0, res
    f = json.loads((out / "manifest.json").read_text())["backend"]["fp16"]
    assert f["thresholds"] == {"data_max": 65504.0, "init_max": 65504.0}
    assert "/big/Gemm" in f["fp32_nodes"]  # its outputs (~1e5) are beyond FP16 at any threshold
    assert np.isfinite(_outputs_on_test_split(out)).all()


@pytest.mark.parametrize("target", ["onnx", "openvino", "tflite"])
@pytest.mark.parametrize("kind", ["activation", "initializer"])
def test_other_fp16_exports_keep_fp32_or_refuse(kind, target, contract_file, tmp_path):
    out = tmp_path / "a"
    res = _export(kind, target, contract_file, out)
    if res.code != 0:  # refused: one line, nothing written
        assert_user_error(res)
        why = ("NaN/Inf", "exceed FP16's range", "drifted beyond the budget")
        assert any(w in res.err for w in why), res.err
        assert not out.exists()
        return
    m = json.loads((out / "manifest.json").read_text())
    d = m["drift"]
    assert all(np.isfinite(d[k]) for k in ("max_abs_dp", "mean_abs_dp", "flip_rate")), d
    assert d["auc_drop"] <= MAX_AUC_DROP and d["flip_rate"] <= MAX_FLIP_RATE, d
    logits = _outputs_on_test_split(out)
    assert np.isfinite(logits).all() and logits.std() > 0.5


def test_onnxruntime_fp16_refuses_activation_overflow_naming_the_layers(contract_file, tmp_path):
    res = _export("activation", "onnx", contract_file, tmp_path / "x")
    assert_user_error(res, "ONNX Runtime fp16: values at", "exceed FP16's range", "/big/Gemm")
    out = tmp_path / "y"
    nodes = res.err.split("exclude_nodes=")[1].split(",")[: -0 or None]
    keep = res.err.split("exclude_nodes=")[1].split(", or export")[0]
    assert nodes and "/big/Gemm" in keep
    res = _export("activation", "onnx", contract_file, out, "--option", f"exclude_nodes={keep}")
    assert res.code == 0, res  # the suggested fix works: those layers in float
    assert np.isfinite(_outputs_on_test_split(out)).all()


def test_onnxruntime_fp16_keeps_out_of_range_weights_in_fp32(contract_file, tmp_path):
    res = _export("initializer", "onnx", contract_file, tmp_path / "x")
    assert res.code == 0, res
    m = json.loads((tmp_path / "x" / "manifest.json").read_text())
    kept = m["backend"]["kept_fp32"]
    assert kept and all("initializer" in k["reason"] for k in kept)
