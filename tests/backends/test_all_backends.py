"""Every CPU backend in one environment (the `all` install): versions coexist, each one runs.

Installing tensorflow + onnx2tf beside the other runtimes once downgraded numpy/onnx/onnxruntime
and broke NNCF's ONNX backend (FIELD-NOTES). This proves the chosen stack does not: one process
imports every runtime, quantizes with NNCF (OpenVINO and ONNX backends) and runs an artifact of
each target on real images.
"""

from __future__ import annotations

from importlib import metadata

import numpy as np

from edgemed.runtimes import RUNTIMES
from tests.conftest import CXR

# Every registered runtime that runs on this CPU (a device runtime has its own gpu tests).
TARGETS = tuple(n for n, r in RUNTIMES.items() if "cpu" in r.devices)


def _major_minor(dist: str) -> tuple[int, int]:
    major, minor = metadata.version(dist).split(".")[:2]
    return int(major), int(minor)


def test_every_backend_runs_in_one_environment(cxr_model, tmp_path):
    import ai_edge_litert.interpreter  # noqa: F401
    import litert_torch  # noqa: F401
    import nncf
    import onnx
    import onnxruntime
    import openvino

    from edgemed.artifact import load_artifact
    from edgemed.backends import get_backend, open_runner, run_batches
    from edgemed.calibration import CalibrationOptions
    from edgemed.data import load_dataset
    from edgemed.evaluation.drift import drift_from_logits
    from edgemed.models.source import load_model_source
    from edgemed.pipeline.export import ExportRequest, run_export
    from edgemed.pipeline.training import predict_logits

    assert _major_minor("numpy") >= (2, 0), "numpy was downgraded below 2"
    assert _major_minor("onnx") >= (1, 20) and _major_minor("onnxruntime") >= (1, 24)
    assert nncf.__version__ and openvino.__version__ and onnx.__version__
    assert onnxruntime.get_device()  # the runtime loads next to the others
    _nncf_onnx_backend_quantizes(nncf, onnx)

    test = load_dataset(CXR).split("test")
    loaded = load_model_source(str(cxr_model))
    ref = predict_logits(loaded.module, loaded.contract, test.images)
    for target in TARGETS:
        assert get_backend(target).available() is None, target
        # OpenVINO at INT8: NNCF quantizes in the same process that imported litert-torch.
        int8 = {"precision": "int8", "calib": str(CXR), "calibration": CalibrationOptions(64)}
        out = tmp_path / target
        run_export(
            ExportRequest(model=str(cxr_model), target=target, out=out,
                          **(int8 if target == "openvino" else {}))
        )  # fmt: skip
        art = load_artifact(out)
        with open_runner(art, threads=1) as runner:
            logits = run_batches(runner, art.contract, test.images)
        d = drift_from_logits(loaded.contract, ref, logits, test.labels)
        assert d.flip_rate <= (0.01 if art.precision == "int8" else 0.0), (target, d)


def _nncf_onnx_backend_quantizes(nncf, onnx) -> None:
    """NNCF's ONNX backend (what the onnx2tf install broke) quantizes a small real graph."""
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 1, 3, 3], np.ones(36, np.float32) / 9)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=[w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    rng = np.random.default_rng(0)
    data = nncf.Dataset([{"x": rng.standard_normal((1, 1, 8, 8), np.float32)} for _ in range(4)])
    q = nncf.quantize(model, data, subset_size=4)
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
