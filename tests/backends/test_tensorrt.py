"""TensorRT: the TensorRT-ready artifact (made and checked here, no GPU), the engine path (GPU tests).

Here: Q/DQ conformance, the FP16 ONNX for strongly typed TensorRT 11, drift simulated in ONNX
Runtime on CPU within the budget, shipped reference outputs, which ONNX/typing each TensorRT
generation builds, the engine precision check on inspector JSON as TensorRT 10 and 11 write it,
clean refusals of `build-engine` and of engines from other devices (through the pure check
functions). On a machine with TensorRT and a CUDA GPU the `gpu` tests build FP32, FP16 and INT8
engines from the artifacts, run them and check drift, layer precisions and refusals for real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgemed.artifact import load_artifact
from edgemed.backends.tensorrt.device import (
    DeviceIdentity,
    check_dla_request,
    check_engine_compatible,
    engine_mismatch,
    read_engine_file,
    tensorrt_unavailable,
)
from edgemed.errors import InputError, UnavailableError
from edgemed.fileio import sha256_bytes
from tests.backends.template import BackendTemplate
from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot

TRT_MISSING = tensorrt_unavailable()
needs_trt = pytest.mark.skipif(
    TRT_MISSING is not None, reason=f"needs TensorRT and a CUDA GPU: {TRT_MISSING}"
)
without_trt = pytest.mark.skipif(
    TRT_MISSING is None, reason="TensorRT and a GPU are present: build-engine builds here"
)
MAX_AUC_DROP, MAX_FLIP_RATE = 0.005, 0.01


@pytest.fixture(scope="module")
def int8_artifact(cxr_model, tmp_path_factory) -> Path:
    from edgemed.pipeline.export import ExportRequest, run_export

    out = tmp_path_factory.mktemp("trt-int8") / "artifact"
    run_export(
        ExportRequest(
            model=str(cxr_model), target="tensorrt", out=out, precision="int8", calib=str(CXR)
        )
    )
    return out


@pytest.fixture(scope="module")
def fp16_artifact(cxr_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trt-fp16") / "artifact"
    res = run_cli(
        "export", "--model", cxr_model, "--target", "tensorrt", "--precision", "fp16",
        "--calib", CXR, "--out", out,
    )  # fmt: skip
    assert res.code == 0, res
    return out


@pytest.fixture(scope="module")
def fp32_artifact(cxr_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trt-fp32") / "artifact"
    res = run_cli("export", "--model", cxr_model, "--target", "tensorrt", "--out", out)
    assert res.code == 0, res
    assert "edgemed build-engine" in res.out and "simulated: onnxruntime-cpu" in res.out
    return out


class TestTensorRT(BackendTemplate):
    """The shared template: export and manifests here; running needs an engine built on a GPU."""

    backend = "tensorrt"
    precisions = ("fp32", "fp16", "int8")

    @pytest.fixture(scope="class")
    def artifacts(self, fp32_artifact, fp16_artifact, int8_artifact) -> dict:
        return {"fp32": fp32_artifact, "fp16": fp16_artifact, "int8": int8_artifact}

    def runnable_artifact(self, art: Path, tmp_path_factory) -> Path:
        out = tmp_path_factory.mktemp("trt-engine") / "engine"
        _build(art, out)
        return out


@pytest.fixture(scope="module")
def test_split():
    from edgemed.data import load_dataset

    return load_dataset(CXR).split("test")


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _torch_logits(cxr_model, images):
    from edgemed.models.source import load_model_source
    from edgemed.pipeline.training import predict_logits

    loaded = load_model_source(str(cxr_model))
    return loaded.contract, predict_logits(loaded.module, loaded.contract, images)


# --- the TensorRT-ready artifact (here) ---------------------------------------------------------


def test_int8_qdq_is_tensorrt_conformant(int8_artifact):
    """Every Q/DQ: INT8 zero point 0; weights per-channel (axis, scale vector); activations per-tensor."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(int8_artifact / "model.onnx"))
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    weights = activations = 0
    for n in qdq:
        assert len(n.input) == 3, f"{n.name} has no explicit zero point"
        zp, scale = consts[n.input[2]], consts[n.input[1]]
        assert zp.dtype == np.int8 and not zp.any(), n.name
        axis = next((a.i for a in n.attribute if a.name == "axis"), None)
        if n.input[0] in consts:
            w = consts[n.input[0]]
            assert n.op_type == "DequantizeLinear" and w.dtype == np.int8
            assert axis is not None and scale.ndim == 1 and scale.shape[0] == w.shape[axis]
            weights += 1
        else:
            assert scale.size == 1 and axis is None, n.name
            activations += 1
    dq_out = {n.output[0] for n in qdq if n.op_type == "DequantizeLinear"}
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert weighted and all(n.input[0] in dq_out and n.input[1] in dq_out for n in weighted)
    assert weights == len(weighted) and activations > 0
    assert not [c for c in consts.values() if c.dtype == np.int32], "bias must stay float"
    assert _manifest(int8_artifact)["backend"]["qdq"]["conformance"]["zero_points"] == "int8, all 0"


def test_conformance_check_rejects_onnxruntime_default_qdq(fp32_artifact, tmp_path):
    """ORT's CPU-style QDQ (UINT8 activations with zero points, per-tensor weights, INT32 bias)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from edgemed.backends.tensorrt.qdq import qdq_problems
    from edgemed.contract import Contract
    from edgemed.data import load_dataset

    contract = Contract.from_dict(_manifest(fp32_artifact)["contract"])
    x = contract.normalize(load_dataset(CXR).split("train").images[:64])

    class Reader(CalibrationDataReader):
        batches = iter([{"input": x}])

        def get_next(self):
            return next(self.batches, None)

    out = tmp_path / "ort-default.onnx"
    quantize_static(
        str(fp32_artifact / "model.onnx"),
        str(out),
        Reader(),
        QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
    )
    problems = " | ".join(qdq_problems(onnx.load(str(out))))
    assert "zero point is uint8" in problems
    assert "zero point is int32" in problems  # quantized bias
    assert "quantizes a weight per-tensor" in problems


def test_simulated_int8_drift_meets_budget(int8_artifact, cxr_model, test_split):
    """Recorded drift (validation split) and a fresh run on the test split, both ORT on CPU."""
    from edgemed.backends import run_batches
    from edgemed.backends.tensorrt import TensorRTBackend
    from edgemed.evaluation.drift import drift_from_logits

    m = _manifest(int8_artifact)
    d = m["drift"]
    assert d["simulated"] == "onnxruntime-cpu" and d["n"] > 0
    assert d["auc_drop"] <= MAX_AUC_DROP and d["flip_rate"] <= MAX_FLIP_RATE, d
    assert m["accuracy_control"]["checked"] is True
    contract, ref = _torch_logits(cxr_model, test_split.images)
    with TensorRTBackend().simulation_runner(
        int8_artifact / m["model_file"], m["backend"]
    ) as runner:
        cand = run_batches(runner, contract, test_split.images)
    t = drift_from_logits(contract, ref, cand, test_split.labels)
    assert t.max_abs_dp > 0  # really quantized
    assert t.auc_drop <= MAX_AUC_DROP and t.flip_rate <= MAX_FLIP_RATE, t


def test_reference_outputs_are_the_fp32_logits(int8_artifact, cxr_model):
    from edgemed.data import load_dataset

    m = _manifest(int8_artifact)
    ref = m["reference"]
    images = np.load(int8_artifact / ref["inputs"])
    logits = np.load(int8_artifact / ref["logits"])
    labels = np.load(int8_artifact / ref["labels"])
    assert ref["n"] == len(images) == len(logits) == len(labels) > 0
    val = load_dataset(CXR).split("val")
    np.testing.assert_array_equal(images, val.images[: ref["n"]])
    _, torch_logits = _torch_logits(cxr_model, images)
    np.testing.assert_allclose(logits, torch_logits, atol=1e-5)
    for name in (ref["inputs"], ref["labels"], ref["logits"], "target-profile.json"):
        assert name in m["files"]


def test_fp32_artifact_is_the_reference_onnx_with_simulated_drift(fp32_artifact):
    m = _manifest(fp32_artifact)
    assert m["runtime"] == "tensorrt" and m["precision"] == "fp32"
    assert m["drift"]["simulated"] == "onnxruntime-cpu" and m["drift"]["flips"] == 0
    assert m["drift"]["max_abs_dp"] < 1e-4
    assert "engine" not in m


def test_fp16_artifact_carries_fp32_and_fp16_onnx(fp16_artifact):
    """TensorRT 10 builds the FP32 ONNX with the FP16 flag; TensorRT 11 the FP16 ONNX as typed."""
    import onnx
    from onnx import TensorProto

    m = _manifest(fp16_artifact)
    b = m["backend"]
    assert b["onnx_by_tensorrt_major"] == {"10": "model.onnx", "11": "model-fp16.onnx"}
    assert m["model_file"] == "model-fp16.onnx" and {"model.onnx", "model-fp16.onnx"} <= set(
        m["files"]
    )
    ref = onnx.load(str(fp16_artifact / "model.onnx"))
    half = onnx.load(str(fp16_artifact / "model-fp16.onnx"))
    assert {i.data_type for i in ref.graph.initializer} == {TensorProto.FLOAT}
    weights = [i for i in half.graph.initializer if i.name in {n.input[1] for n in ref.graph.node
               if n.op_type in ("Conv", "Gemm")}]  # fmt: skip
    assert weights and all(i.data_type == TensorProto.FLOAT16 for i in weights)
    for vi in (*half.graph.input, *half.graph.output):  # FP32 at the boundary
        assert vi.type.tensor_type.elem_type == TensorProto.FLOAT, vi.name
    f = b["fp16"]
    assert f["thresholds"] == {"data_max": 512.0, "init_max": 65504.0}
    assert f["kept_fp32"] == [] and f["fp32_nodes"] == []  # a normal CNN stays well below 512
    assert 0 < f["largest_activation"] < 512 and f["calibration"]["images"] == 256


def test_simulated_fp16_drift_meets_budget(fp16_artifact, cxr_model, test_split):
    from edgemed.backends import run_batches
    from edgemed.backends.tensorrt import TensorRTBackend
    from edgemed.evaluation.drift import drift_from_logits

    m = _manifest(fp16_artifact)
    d = m["drift"]
    assert d["simulated"] == "onnxruntime-cpu" and d["n"] > 0 and "drift_note" not in m
    assert d["auc_drop"] <= MAX_AUC_DROP and d["flip_rate"] <= MAX_FLIP_RATE, d
    assert m["accuracy_control"]["checked"] is True
    contract, ref = _torch_logits(cxr_model, test_split.images)
    with TensorRTBackend().simulation_runner(
        fp16_artifact / m["model_file"], m["backend"]
    ) as runner:
        cand = run_batches(runner, contract, test_split.images)
    t = drift_from_logits(contract, ref, cand, test_split.labels)
    assert 0 < t.max_abs_dp < 0.01  # really FP16 (rounded), and close
    assert t.auc_drop <= MAX_AUC_DROP and t.flip_rate <= MAX_FLIP_RATE, t


@pytest.mark.parametrize(
    "args, needle",
    [
        ([], "FP16 for this target keeps in FP32 the layers whose activations would overflow"),
        (["--calib", CXR, "--option", "fp16_data_max=0"], "fp16_data_max must be a number in (0"),
        (["--calib", CXR, "--option", "fp16_init_max=1e6"], "fp16_init_max must be a number in"),
        (["--calib", CXR, "--option", "fp16_init_max=x"], "fp16_init_max must be a number"),
    ],
)
def test_fp16_export_bad_input(args, needle, cxr_model, tmp_path):
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", cxr_model, "--target", "tensorrt", "--precision", "fp16",
        "--out", tmp_path / "a", *args,
    )  # fmt: skip
    assert_user_error(res, needle)
    assert res.code == 2 and tree_snapshot(tmp_path) == before


def test_fp16_thresholds_apply_only_to_fp16(cxr_model, tmp_path):
    res = run_cli(
        "export", "--model", cxr_model, "--target", "tensorrt", "--precision", "int8",
        "--calib", CXR, "--option", "fp16_data_max=256", "--out", tmp_path / "a",
    )  # fmt: skip
    assert_user_error(res, "--option fp16_data_max=... applies only to precision fp16")


def test_open_without_tensorrt_is_unavailable(int8_artifact):
    from edgemed.backends.tensorrt import TensorRTBackend

    if TRT_MISSING is None:
        pytest.skip("TensorRT is present here")
    with pytest.raises(UnavailableError) as exc:
        TensorRTBackend().open(load_artifact(int8_artifact, verify=False))
    assert "\n" not in str(exc.value) and "TensorRT is not installed" in str(exc.value)


def test_per_tensor_weights_are_refused_for_tensorrt(cxr_model, tmp_path):
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", cxr_model, "--target", "tensorrt", "--precision", "int8",
        "--calib", CXR, "--granularity", "per-tensor", "--out", tmp_path / "a",
    )  # fmt: skip
    assert_user_error(res, "tensorrt cannot do --granularity per-tensor", "per-channel")
    assert res.code == 2 and tree_snapshot(tmp_path) == before


# --- build-engine refusals (here) ---------------------------------------------------------------


@without_trt
def test_build_engine_refuses_cleanly_without_tensorrt(int8_artifact, tmp_path):
    art_before, before = tree_snapshot(int8_artifact), tree_snapshot(tmp_path)
    res = run_cli("build-engine", int8_artifact, "--out", tmp_path / "engine")
    assert res.code == 3
    assert_user_error(res, "TensorRT is not installed here", "Dockerfile.jetson")
    assert len(res.err.strip().splitlines()) == 1
    assert tree_snapshot(tmp_path) == before and tree_snapshot(int8_artifact) == art_before
    res = run_cli("build-engine", int8_artifact)  # default output next to the artifact
    assert res.code == 3 and not Path(f"{int8_artifact}-engine-int8").exists()


@pytest.mark.parametrize(
    "which, args, needle",
    [
        ("onnx", [], "is a onnx artifact; export one for TensorRT"),
        ("int8", ["--precision", "fp16"], "holds an INT8 Q/DQ ONNX"),
        ("fp32", ["--precision", "int8"], "INT8 engines are built from the calibrated Q/DQ ONNX"),
        ("fp32", ["--precision", "fp16"], "is a fp32 artifact; a fp16 engine is built from"),
        ("fp16", ["--precision", "fp32"], "is a fp16 artifact; a fp32 engine is built from"),
        ("int8", ["--workspace-mb", "0"], "--workspace-mb"),
        ("int8", ["--dla-core", "-1"], "--dla-core must be >= 0"),
        ("int8", ["--max-batch", "0"], "--max-batch must be >= 1"),
        ("missing", [], "is not an edgemed artifact"),
    ],
)
def test_build_engine_bad_input(
    which, args, needle, int8_artifact, fp16_artifact, fp32_artifact, cxr_onnx, tmp_path
):
    arts = {"onnx": cxr_onnx, "int8": int8_artifact, "fp16": fp16_artifact, "fp32": fp32_artifact}
    art = arts.get(which, tmp_path / "nothing")
    before = tree_snapshot(tmp_path)
    res = run_cli("build-engine", art, *args, "--out", tmp_path / "engine")
    assert_user_error(res, needle)
    assert res.code == 2 and tree_snapshot(tmp_path) == before


def test_build_engine_refuses_existing_output(int8_artifact, tmp_path):
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "keep.txt").write_text("mine")
    before = tree_snapshot(tmp_path)
    res = run_cli("build-engine", int8_artifact, "--out", tmp_path / "engine")
    assert_user_error(res, "already exists", "--force")
    assert res.code == 2 and tree_snapshot(tmp_path) == before


# --- engine/device checks (pure functions, here) -----------------------------------------------

ORIN = DeviceIdentity("Orin", "8.7", "10.3.0", dla_cores=0, board="Jetson Orin Nano")
RECORDED = {"gpu_name": "Orin", "compute_capability": "8.7", "tensorrt": "10.3.0"}


def test_engine_from_this_device_is_accepted():
    assert engine_mismatch(RECORDED, ORIN) == []
    check_engine_compatible(RECORDED, ORIN, "eng")


@pytest.mark.parametrize(
    "here, needle",
    [
        (DeviceIdentity("Orin", "8.7", "10.7.0"), "TensorRT 10.3.0 there, 10.7.0 here"),
        (
            DeviceIdentity("NVIDIA GeForce RTX 4090", "8.9", "10.3.0"),
            "compute capability 8.7 there, 8.9 here",
        ),
        (DeviceIdentity("NVIDIA A2", "8.7", "10.3.0"), "GPU 'Orin' there, 'NVIDIA A2' here"),
    ],
)
def test_engine_from_another_device_is_refused(here, needle):
    with pytest.raises(InputError) as exc:
        check_engine_compatible(RECORDED, here, "eng")
    msg = str(exc.value)
    assert needle in msg and "rebuild it on this device with `edgemed build-engine" in msg


def test_corrupt_or_missing_engine_file_is_refused(tmp_path):
    good = b"\x01engine-bytes" * 100
    f = tmp_path / "model.engine"
    f.write_bytes(good)
    entry = {"sha256": sha256_bytes(good)}
    assert read_engine_file(f, entry) == good
    f.write_bytes(good[:-7] + b"garbage")
    with pytest.raises(InputError, match="is corrupt or was modified"):
        read_engine_file(f, entry)
    f.write_bytes(b"")
    with pytest.raises(InputError, match="is corrupt or was modified"):
        read_engine_file(f, entry)
    with pytest.raises(InputError, match="does not exist"):
        read_engine_file(tmp_path / "gone.engine", entry)


def test_dla_requests_are_checked():
    check_dla_request(None, ORIN, "fp32")
    with pytest.raises(InputError, match="Orin has no DLA"):
        check_dla_request(0, ORIN, "int8")
    agx = DeviceIdentity("Orin", "8.7", "10.3.0", dla_cores=2)
    check_dla_request(1, agx, "int8")
    with pytest.raises(InputError, match="does not exist: Orin has 2"):
        check_dla_request(2, agx, "int8")
    with pytest.raises(InputError, match="DLA runs FP16 and INT8 only"):
        check_dla_request(0, agx, "fp32")


def test_target_gpu_must_match():
    from edgemed.pipeline.engine_build import check_target_gpu
    from edgemed.profiles import resolve_target

    check_target_gpu(resolve_target("jetson-orin-nano"), ORIN)
    rtx = DeviceIdentity("NVIDIA GeForce RTX 4090", "8.9", "10.3.0")
    with pytest.raises(InputError, match=r"targets jetson-orin-nano \(sm_87\).*\(sm_89\)"):
        check_target_gpu(resolve_target("jetson-orin-nano"), rtx)
    check_target_gpu(resolve_target("tensorrt"), rtx)  # the generic target builds on any GPU


# --- which ONNX and typing each TensorRT generation builds (pure, here) -------------------------


def test_build_path_by_tensorrt_generation(fp16_artifact, int8_artifact, fp32_artifact):
    from edgemed.backends.tensorrt.precision import build_path

    m16 = _manifest(fp16_artifact)
    p10 = build_path(m16, "fp16", "10.3.0")
    assert (p10.onnx_file, p10.strongly_typed, p10.fp16_flag) == ("model.onnx", False, True)
    p11 = build_path(m16, "fp16", "11.4.0")
    assert (p11.onnx_file, p11.strongly_typed, p11.fp16_flag) == ("model-fp16.onnx", True, False)
    kept = {**m16, "backend": {**m16["backend"], "fp16": {"fp32_nodes": ["/head/Gemm"]}}}
    assert build_path(kept, "fp16", "10.7.0").fp32_layers == ("/head/Gemm",)
    m8 = _manifest(int8_artifact)
    assert (
        build_path(m8, "int8", "10.3.0").int8_flag
        and not build_path(m8, "int8", "10.3").strongly_typed
    )
    i11 = build_path(m8, "int8", "11.4.0")
    assert i11.strongly_typed and not i11.int8_flag and i11.onnx_file == "model.onnx"
    f11 = build_path(_manifest(fp32_artifact), "fp32", "11.4.0")
    assert f11.strongly_typed and not (f11.fp16_flag or f11.int8_flag)


def test_build_path_refuses_old_fp16_artifacts_and_other_generations(fp16_artifact):
    from edgemed.backends.tensorrt.precision import build_path

    old = {**_manifest(fp16_artifact), "model_file": "model.onnx", "backend": {"fp16": "FP32 ONNX"}}
    for version in ("10.3.0", "11.4.0"):
        with pytest.raises(InputError, match="no ONNX for TensorRT .* re-export it"):
            build_path(old, "fp16", version)
    for version in ("8.6.2", "12.0.0"):
        with pytest.raises(InputError, match="edgemed builds with TensorRT 10.x or 11.x"):
            build_path(_manifest(fp16_artifact), "fp16", version)


def test_profiles_name_their_tensorrt_generation():
    from edgemed.backends.tensorrt.profile import allow_tensorrt
    from edgemed.profiles import resolve_target

    assert resolve_target("jetson-orin-nano").tensorrt_major == (10,)
    assert resolve_target("jetson-agx-orin").tensorrt_major == (10,)
    rtx = resolve_target("desktop-rtx")
    assert rtx.tensorrt_major == (10, 11)
    allow_tensorrt(rtx, "10.13.0")
    allow_tensorrt(rtx, "11.4.0")
    with pytest.raises(InputError, match=r"builds with TensorRT 10.x, but TensorRT 11.4.0"):
        allow_tensorrt(resolve_target("jetson-orin-nano"), "11.4.0")


# --- the engine's layer precisions, as the engine inspector reports them (pure, here) ----------

SAMPLES = json.loads((Path(__file__).parent / "data" / "trt_inspector_samples.json").read_text())


@pytest.mark.parametrize(
    "sample, expected",
    [
        ("trt10_fp16_flag", "fp16"),
        ("trt11_fp16_strongly_typed", "fp16"),
        ("trt11_fp32_onnx_labelled_fp16", "fp32"),
        ("trt10_int8_dynamic_shapes", "int8"),  # formats N/A: the weights' type still says INT8
    ],
)
def test_engine_precision_accepts_what_the_artifact_says(sample, expected):
    from edgemed.backends.tensorrt.precision import check_engine_precision

    summary = check_engine_precision(SAMPLES[sample], expected, ())
    assert summary["compute_layers_by_precision"][expected] >= 1 and summary["layers"] >= 2


@pytest.mark.parametrize(
    "sample, expected, kept, needle",
    [
        # the silent fallback of issue 17: TensorRT 11 built the FP32 ONNX, the artifact says FP16
        ("trt11_fp32_onnx_labelled_fp16", "fp16", (), "none of its 3 compute layers runs in FP16"),
        ("trt10_fp16_flag", "fp32", (), "compute layers run in reduced precision"),
        ("trt10_fp16_flag", "int8", (), "none of its 3 compute layers runs in INT8"),
        ("trt10_int8_dynamic_shapes", "fp16", (), "runs in INT8"),
        (
            "trt10_fp16_flag", "fp16",
            ("/features/features.0/features.0.0/Conv", "/features/features.0/features.0.2/Relu"),
            "runs in FP16 but was kept FP32",
        ),
        ("layer_names_only", "fp16", (), "reports no precision for any compute layer"),
    ],
)  # fmt: skip
def test_engine_precision_refuses_another_precision(sample, expected, kept, needle):
    from edgemed.backends.tensorrt.precision import check_engine_precision

    with pytest.raises(InputError) as exc:
        check_engine_precision(SAMPLES[sample], expected, kept)
    msg = str(exc.value)
    assert needle in msg and f"not {expected.upper()}" in msg and "\n" not in msg


def test_inspector_type_strings_of_both_generations():
    from edgemed.backends.tensorrt.precision import dtype_of, parse_engine_info

    assert dtype_of("Channel major FP16 format where channel % 8 == 0") == "fp16"
    assert dtype_of("Thirty-two wide channel vectorized row major Int8 format.") == "int8"
    assert dtype_of("Row major linear FP32 format (kLINEAR)") == "fp32"
    assert (dtype_of("Half"), dtype_of("Float"), dtype_of("BFloat16")) == ("fp16", "fp32", "bf16")
    assert dtype_of("N/A due to dynamic shapes") is None and dtype_of(None) is None
    layers = parse_engine_info(SAMPLES["trt11_fp16_strongly_typed"])
    assert [x.compute for x in layers] == [
        False,
        True,
        True,
        True,
    ]  # the input Cast computes nothing
    assert layers[-1].precisions == ("fp16", "fp32")  # FP16 GEMM, FP32 logits out
    with pytest.raises(InputError, match="no layer list"):
        parse_engine_info({"I/O Tensors": []})


# --- engines on a real device (gpu) -------------------------------------------------------------


def _build(art: Path, out: Path, *args: str):
    res = run_cli("build-engine", art, "--out", out, "--timing-cache", out.parent / "tc", *args)
    assert res.code == 0, res
    return res


@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_runs_and_meets_budget(
    precision, int8_artifact, fp16_artifact, fp32_artifact, cxr_model, test_split, tmp_path
):
    from edgemed.artifact import load_artifact
    from edgemed.backends import open_runner, run_batches
    from edgemed.evaluation.drift import drift_from_logits

    art = {"int8": int8_artifact, "fp16": fp16_artifact, "fp32": fp32_artifact}[precision]
    _build(art, tmp_path / "engine", "--precision", precision)
    engine = load_artifact(tmp_path / "engine")
    m = engine.manifest
    assert m["precision"] == precision and m["drift"]["simulated"] is None
    path, layers = m["engine"]["build_path"], m["engine"]["layer_precisions"]
    assert path["strongly_typed"] == (path["tensorrt_major"] >= 11)
    if precision == "fp16":
        want = "model-fp16.onnx" if path["tensorrt_major"] >= 11 else "model.onnx"
        assert path["onnx_file"] == want and path["fp16_flag"] == (path["tensorrt_major"] == 10)
    want = {"fp32": "fp32", "fp16": "fp16", "int8": "int8"}[precision]
    assert layers["compute_layers_by_precision"].get(want, 0) > 0, layers
    assert m["engine"]["tensorrt"] and m["engine"]["compute_capability"] and m["engine"]["gpu_name"]
    assert (tmp_path / "tc").stat().st_size > 0  # the timing cache was written
    with open_runner(engine) as runner:
        cand = run_batches(runner, engine.contract, test_split.images)
    contract, ref = _torch_logits(cxr_model, test_split.images)
    d = drift_from_logits(contract, ref, cand, test_split.labels)
    assert d.flip_rate <= MAX_FLIP_RATE and (d.auc_drop or 0.0) <= MAX_AUC_DROP, d


@pytest.mark.gpu
@needs_trt
def test_engine_from_another_device_or_corrupt_is_refused_on_device(int8_artifact, tmp_path):
    from edgemed.artifact import load_artifact
    from edgemed.backends import open_runner

    _build(int8_artifact, tmp_path / "engine")
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "engine", moved)
    m = _manifest(moved)
    m["engine"]["gpu_name"] = "some other GPU"
    (moved / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="built on another device"):
        open_runner(load_artifact(moved))
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "engine", bad)
    junk = b"not an engine" * 64
    (bad / "model.engine").write_bytes(junk)
    m = _manifest(bad)
    m["files"]["model.engine"]["sha256"] = sha256_bytes(junk)  # passes the hash, fails TensorRT
    m["files"]["model.engine"]["bytes"] = len(junk)
    (bad / "manifest.json").write_text(json.dumps(m))
    with (
        pytest.raises(InputError, match="cannot deserialize this engine"),
        open_runner(load_artifact(bad)),
    ):
        pass


@pytest.mark.gpu
@needs_trt
def test_dla_on_a_gpu_without_dla_is_refused(int8_artifact, tmp_path):
    from edgemed.backends.tensorrt.device import device_identity

    if device_identity().dla_cores:
        pytest.skip("this device has DLA cores")
    before = tree_snapshot(tmp_path)
    res = run_cli("build-engine", int8_artifact, "--dla-core", "0", "--out", tmp_path / "e")
    assert_user_error(res, "has no DLA")
    assert res.code == 2 and tree_snapshot(tmp_path) == before


# --- GPU memory readers (parsing here; sampling on a device) ------------------------------------


def test_tegrastats_lines_are_parsed():
    from edgemed.harness.gpu_memory import parse_tegrastats

    orin = (
        "11-22-2026 10:00:00 RAM 2480/7620MB (lfb 4x4MB) SWAP 0/3810MB (cached 0MB) "
        "CPU [3%@729,2%@729,0%@729,1%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 47%@[305] "
        "NVENC off NVDEC off VIC off APE 200 cpu@48.2C gpu@47.8C tj@48.2C "
        "VDD_IN 5123mW/5123mW VDD_CPU_GPU_CV 812mW/812mW VDD_SOC 1540mW/1540mW"
    )
    s = parse_tegrastats(orin)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb) == (2480, 7620, 0)
    assert (s.gr3d_percent, s.vdd_in_mw) == (47, 5123)
    nano = (
        "RAM 1565/3964MB (lfb 178x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [13%@1479,4%@1479,3%@1479,2%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 0%@921 APE 25 "
        "PLL@23C CPU@26C GPU@24.5C POM_5V_IN 2555/2555 POM_5V_GPU 0/0 POM_5V_CPU 488/488"
    )
    s = parse_tegrastats(nano)
    assert (s.ram_used_mb, s.ram_total_mb, s.gr3d_percent, s.vdd_in_mw) == (1565, 3964, 0, 2555)
    assert parse_tegrastats("tegrastats: no such device") is None


def test_nvml_sampler_is_unavailable_without_a_driver():
    from edgemed.harness.gpu_memory import NvmlSampler

    try:
        sampler = NvmlSampler()
    except UnavailableError as exc:
        assert "\n" not in str(exc) and ("NVML" in str(exc) or "nvidia-ml-py" in str(exc))
        return
    with sampler:  # a real GPU: the sampler must see memory in use
        pass
    r = sampler.result()
    assert r.source == "nvml" and r.total_mb > 0 and r.peak_used_mb > 0


def _conv_with_weight_qdq(weight_scale: np.ndarray):
    """x -> Q/DQ (per-tensor) -> Conv(W float -> Q -> DQ) : the Model Optimizer weight form."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.ones((4, 1, 3, 3), np.float32)
    axis = [helper.make_attribute("axis", 0)] if weight_scale.size > 1 else []
    consts = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(weight_scale.astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(weight_scale.shape, np.int8), "w_zp"),
        numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], "qx"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"], "dqx"),
        helper.make_node("QuantizeLinear", ["W", "w_scale", "w_zp"], ["wq"], "qw"),
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wd"], "dqw"),
        helper.make_node("Conv", ["xd", "wd"], ["y"], "conv"),
    ]
    for n in nodes[2:4]:
        n.attribute.extend(axis)
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        consts,
    )
    return helper.make_model(graph)


def test_conformance_accepts_float_weight_q_dq_and_flags_per_tensor_weights():
    from edgemed.backends.tensorrt.qdq import qdq_problems

    assert qdq_problems(_conv_with_weight_qdq(np.full(4, 0.01))) == []
    problems = qdq_problems(_conv_with_weight_qdq(np.array(0.01)))
    assert len(problems) == 2 and all("quantizes a weight per-tensor" in p for p in problems)
