"""TensorRT-conformant explicit quantization: FP32 ONNX -> INT8 Q/DQ ONNX, and its conformance check.

TensorRT builds INT8 engines from explicit QuantizeLinear/DequantizeLinear pairs and requires them
to be INT8 and symmetric (zero point 0), per-channel on weights and per-tensor on activations.
ONNX Runtime's default QDQ (UINT8 activations with zero points) is not that, so the settings below
are pinned. NVIDIA's Model Optimizer (`nvidia-modelopt[onnx]`) would be the first choice, but its
ONNX extra pins onnx 1.21 and onnxruntime-gpu 1.24, which would replace this project's onnx 1.23
and onnxruntime 1.31; `quantize_static` with the settings below gives the Q/DQ form TensorRT
documents (the check below accepts both weight forms: INT8 initializer -> DQ, float -> Q -> DQ).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemed.backends.onnxruntime.quant import quantize_with_ranges
from edgemed.backends.quant import QuantSettings
from edgemed.errors import InputError
from edgemed.provenance import package_version

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
METHODS = ("minmax", "entropy", "percentile")
QDQ_FORM = {  # recorded in the manifest
    "tool": "onnxruntime.quantization.quantize_static",
    "format": "QDQ (explicit quantization)",
    "activations": "int8 symmetric per-tensor",
    "weights": "int8 symmetric per-channel",
    "bias": "float (not quantized)",
    "placement": "inputs of Conv/Gemm/MatMul; their outputs stay float (TensorRT's advice)",
}


def trt_qdq_from_onnx(pre_path: Path, out_path: Path, ranges, settings: QuantSettings) -> dict:
    """INT8 Q/DQ ONNX for TensorRT from the pre-processed model and calibrated activation ranges.

    Symmetric INT8 everywhere (zero point 0), per-channel weights, float bias, and Q/DQ only on
    the inputs of weighted ops, whose outputs stay float: TensorRT's documented placement.
    """
    from onnxruntime.quantization import QuantType

    quantize_with_ranges(
        pre_path,
        out_path,
        ranges,
        per_channel=True,
        types=(QuantType.QInt8, QuantType.QInt8),
        exclude_nodes=settings.exclude_nodes,
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS),
        },
    )
    model = _load(out_path)
    problems = qdq_problems(model)
    if problems:
        raise InputError(
            f"the INT8 model is not TensorRT-conformant ({problems[0]}); "
            "export --precision fp16 for this model instead"
        )
    return {
        **QDQ_FORM,
        "tool_version": package_version("onnxruntime"),
        "conformance": qdq_summary(model),
    }


def _load(path: Path):
    import onnx

    return onnx.load(str(path))


@dataclass(frozen=True)
class QdqNode:
    """One Q or DQ node with its resolved scale / zero point (None when not a constant)."""

    op: str
    name: str
    on_weight: bool
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    axis: int | None


def qdq_nodes(model) -> list[QdqNode]:
    """Every QuantizeLinear/DequantizeLinear in the graph, with constants looked up."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    # A weight is quantized either as INT8 initializer -> DQ, or float initializer -> Q -> DQ.
    quantized_weights = {
        n.output[0]
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] in consts
    }
    out = []
    for n in model.graph.node:
        if n.op_type not in QDQ_OPS:
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), None)
        zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        on_weight = n.input[0] in consts or n.input[0] in quantized_weights
        out.append(QdqNode(n.op_type, n.name, on_weight, consts.get(n.input[1]), zp, axis))
    return out


def qdq_problems(model) -> list[str]:
    """Why TensorRT would not accept this Q/DQ model as explicit INT8 (empty list: conformant)."""
    nodes = qdq_nodes(model)
    if not nodes:
        return ["no QuantizeLinear/DequantizeLinear nodes"]
    problems = []
    for q in nodes:
        where = f"{q.op} {q.name}"
        if q.zero_point is None:
            problems.append(f"{where} has no INT8 zero point (ONNX then defaults to UINT8)")
        elif q.zero_point.dtype != np.int8 or np.any(q.zero_point != 0):
            problems.append(
                f"{where} zero point is {q.zero_point.dtype} {q.zero_point.ravel()[:4]}"
            )
        if q.scale is None:
            problems.append(f"{where} scale is not a constant")
        elif q.on_weight and (q.axis is None or q.scale.ndim != 1):
            problems.append(f"{where} quantizes a weight per-tensor (per-channel expected)")
        elif not q.on_weight and q.scale.size != 1:
            problems.append(f"{where} quantizes an activation per-channel (per-tensor expected)")
    return problems


def qdq_summary(model) -> dict:
    """Counts for the manifest: Q/DQ nodes, per-channel weight DQs, per-tensor activation Qs."""
    nodes = qdq_nodes(model)
    return {
        "quantize_linear": sum(q.op == "QuantizeLinear" for q in nodes),
        "dequantize_linear": sum(q.op == "DequantizeLinear" for q in nodes),
        "per_channel_weights": sum(q.on_weight and q.axis is not None for q in nodes),
        "per_tensor_activations": sum(not q.on_weight for q in nodes),
        "zero_points": "int8, all 0" if not qdq_problems(model) else "NOT conformant",
    }
