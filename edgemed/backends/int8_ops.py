"""Quantized means quantized: count the compute ops an INT8 artifact really runs in INT8.

An INT8 conversion can silently produce the FP32 model (an accuracy-control search that kept
every layer in float; a converter that matched nothing). After every INT8 conversion the saved
artifact is read back with its own runtime's file format and its compute ops (convolutions,
matrix products) are counted: "N of M compute ops in INT8". None at all is refused; fewer than
`LOW_INT8_FRACTION` carries a note in the manifest and the export summary.

What counts as quantized, per format:
- ONNX: QLinear*/ConvInteger/MatMulInteger/QGemm..., or Conv/MatMul/Gemm/... whose data and
  weight inputs both come from DequantizeLinear (QDQ).
- OpenVINO IR: Convolution/MatMul/... whose data and weight inputs both come through
  FakeQuantize or an int8/uint8 (or int4) constant behind Convert (NNCF's weight compression).
- TFLite: CONV_2D/FULLY_CONNECTED/... with an int8/uint8 input tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgemed.backends.tflite import load_interpreter_class
from edgemed.errors import DriftError

# Below this fraction of compute ops in INT8 the artifact is mostly float: say so visibly.
LOW_INT8_FRACTION = 0.5

ONNX_FLOAT_COMPUTE = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum"})
ONNX_INT8_COMPUTE = frozenset(
    {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm",
     "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention"}
)  # fmt: skip
OV_COMPUTE = frozenset(
    {"Convolution", "GroupConvolution", "ConvolutionBackpropData",
     "GroupConvolutionBackpropData", "MatMul", "Einsum"}
)  # fmt: skip
OV_INT_WEIGHTS = frozenset({"i8", "u8", "i4", "u4"})
TFLITE_COMPUTE = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "BATCH_MATMUL",
     "CONV_3D"}
)  # fmt: skip


@dataclass(frozen=True)
class Int8Coverage:
    """How many of the artifact's compute ops run in INT8 (counted in the saved file)."""

    quantized: int
    total: int
    counted_in: str  # the file and format counted, e.g. "model.onnx (ONNX)"
    float_ops: tuple[str, ...] = ()  # names of the compute ops left in float (graph order)

    @property
    def fraction(self) -> float:
        return self.quantized / self.total if self.total else 0.0

    def words(self) -> str:
        return f"{self.quantized} of {self.total} compute ops in INT8"

    def note(self) -> str | None:
        """The visible note for a mostly-float INT8 artifact (None when it is mostly INT8)."""
        if self.total and 0 < self.fraction < LOW_INT8_FRACTION:
            return (
                f"only {self.words()} ({self.fraction:.0%}, below {LOW_INT8_FRACTION:.0%}): "
                "most compute runs in float"
            )
        return None

    def to_dict(self) -> dict:
        return {
            "quantized": self.quantized,
            "total": self.total,
            "fraction": round(self.fraction, 4),
            "words": self.words(),
            "counted_in": self.counted_in,
            "low_fraction_threshold": LOW_INT8_FRACTION,
            "note": self.note(),
            "float_ops": list(self.float_ops),
        }


def count_int8(model_path: Path) -> Int8Coverage | None:
    """Count the INT8 compute ops of a saved artifact model file (None: a format not counted,
    e.g. a TensorRT engine that only exists on the device)."""
    path = Path(model_path)
    counters = {".onnx": onnx_int8, ".xml": openvino_int8, ".tflite": tflite_int8}
    counter = counters.get(path.suffix)
    return counter(path) if counter else None


def refuse_float(cov: Int8Coverage | None, what: str) -> None:
    """An INT8 artifact without a single INT8 compute op is the FP32 model: refuse it."""
    if cov is not None and cov.quantized == 0:
        raise DriftError(
            f"{what} is the FP32 model: {cov.words()} ({cov.counted_in}); nothing was quantized, "
            "so drop the exclusions that keep every layer in float, or export --precision fp32",
            {"int8_ops": cov.to_dict()},
        )


def onnx_int8(path: Path) -> Int8Coverage:
    """QDQ / QOperator / IntegerOps ONNX: quantized compute ops vs all compute ops."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    quantized, floats = 0, []
    for n in graph.node:
        if n.op_type in ONNX_INT8_COMPUTE:
            quantized += 1
        elif n.op_type in ONNX_FLOAT_COMPUTE:
            if all(producer.get(i) == "DequantizeLinear" for i in _operands(n)):
                quantized += 1
            else:
                floats.append(n.name or n.op_type)
    return Int8Coverage(quantized, quantized + len(floats), f"{path.name} (ONNX)", tuple(floats))


def _operands(node) -> list[str]:
    """The inputs an integer kernel needs quantized: data and weights (not the bias); an Einsum's
    every input. A float Gemm after a quantized op reads a DequantizeLinear but computes in float."""
    names = list(node.input) if node.op_type == "Einsum" else list(node.input[:2])
    return [i for i in names if i]


def openvino_int8(path: Path) -> Int8Coverage:
    """OpenVINO IR: compute ops fed through FakeQuantize or by int8 weight constants."""
    import openvino as ov

    model = ov.Core().read_model(str(path))
    quantized, floats = 0, []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in OV_COMPUTE:
            continue
        if all(
            _ov_int8_input(op.input_value(i).get_node()) for i in range(min(2, op.get_input_size()))
        ):
            quantized += 1
        else:
            floats.append(op.get_friendly_name())
    return Int8Coverage(quantized, quantized + len(floats), f"{path.name} (OpenVINO IR)",
                        tuple(floats))  # fmt: skip


def _ov_int8_input(node, depth: int = 4) -> bool:
    """FakeQuantize, or an integer Constant behind Convert/Subtract/Multiply/Reshape, upstream."""
    for _ in range(depth):
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            return node.get_element_type().get_type_name() in OV_INT_WEIGHTS
        if kind not in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose"):
            return False
        node = node.input_value(0).get_node()
    return False


def tflite_int8(path: Path) -> Int8Coverage:
    """TFLite: compute ops with an int8/uint8 input tensor (the interpreter's op details)."""
    import numpy as np

    cls, _ = load_interpreter_class()
    it = cls(model_path=str(path))
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in it.get_tensor_details()}
    ints = (np.dtype(np.int8), np.dtype(np.uint8))
    quantized, floats = 0, []
    for op in it._get_ops_details():  # public API has no op list; this one is stable since TF 2.5
        if op["op_name"] not in TFLITE_COMPUTE:
            continue
        if any(dtypes.get(int(i)) in ints for i in op["inputs"] if int(i) >= 0):
            quantized += 1
        else:
            floats.append(f"{op['op_name']}#{op['index']}")
    return Int8Coverage(quantized, quantized + len(floats), f"{path.name} (TFLite)", tuple(floats))
