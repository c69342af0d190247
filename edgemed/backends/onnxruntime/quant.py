"""ONNX -> FP16 / static INT8 (QDQ) / dynamic INT8 ONNX with onnxruntime.quantization.

Static INT8 calibrates activation ranges once (`ranges_from_calibration`) and quantizes from those
ranges, so the accuracy-aware fallback can re-quantize with other layers kept in float cheaply.

Why the calibrator is driven here instead of inside `quantize_static`: onnxruntime 1.31's
`quantize_static` does not pass bin counts to the Entropy calibrator, whose defaults (128 bins,
128 quantized bins) leave exactly one threshold candidate, so "Entropy" silently equals MinMax.
Entropy here uses 512 bins / 128 quantized bins (193 KL threshold candidates; 2048 bins took
~85 s per model on 2 cores for one small CNN because the search is a Python loop).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from edgemed.backends.quant import QuantSettings
from edgemed.contract import CONTRACT_KEY, Contract
from edgemed.errors import InputError
from edgemed.fileio import sha256_file
from edgemed.onnx_export import embed_contract, save_onnx
from edgemed.progress import Progress

METHODS = ("minmax", "entropy", "percentile")
GRANULARITIES = ("per-channel", "per-tensor")
TYPES = ("uint8", "int8")
# Static INT8 weights are uint8 (U8U8), not int8 (U8S8): ONNX Runtime's x86 u8s8 kernels add pairs
# of products in int16 (VPMADDUBSW) on CPUs without VNNI and saturate. Measured on an AVX2-only
# AMD EPYC: the same chest X-ray CNN flipped 120 of 270 validation decisions as U8S8 (0 with
# fusion disabled, so the Q/DQ math was right) and 0 as U8U8. An artifact must behave the same
# on every x86 box it is copied to, so the portable form is the default.
DEFAULT_STATIC_WEIGHT_TYPE = "uint8"
WEIGHT_TYPE_REASON = "u8u8: no int16 saturation on x86 CPUs without VNNI"
U8S8_WARNING = (
    "edgemed: warning: --option weight_type=int8 (U8S8) saturates in ONNX Runtime on x86 CPUs "
    "without VNNI, like this one; its drift here is what such a CPU computes"
)
# Calibrator settings per method; `calib_bins` / `calib_percentile` override them.
CALIB_DEFAULTS = {
    "minmax": {},
    "entropy": {"num_bins": 512, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.999},
}
# FP16 layers the fallback may keep in float: weight layers, tensor-mixing ops and pooling. INT8
# candidates are not a fixed list: they are read from the quantized graph (`quantized_nodes`), so
# LayerNormalization, Softmax, Sigmoid, Einsum, ... are in reach wherever ONNX Runtime quantized
# them (a fixed list once left a ViT "66 of 66 layers in float" while still quantized).
FP16_CANDIDATES = (
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat",
    "GlobalAveragePool", "AveragePool", "MaxPool",
)  # fmt: skip
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
INTEGER_OPS = frozenset({"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
                         "DynamicQuantizeMatMul", "MatMulIntegerToFloat"})  # fmt: skip


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization prints to stdout and logs advice; keep `edgemed` output clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def preprocess_for_quant(src: Path, dst: Path) -> Path:
    """ORT's recommended pre-processing (shape inference + graph optimization), no sympy needed."""
    from onnxruntime.quantization import quant_pre_process

    with _quiet():
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


class Preprocessed:
    """`preprocess_for_quant` of each source ONNX once per backend instance, keyed by content
    (accuracy control converts the same reference once per attempt); the ONNX Runtime and the
    TensorRT backends share it. `scratch()` gives the backend's temporary directory."""

    def __init__(self, scratch: Callable[[], Path]) -> None:
        self._scratch = scratch
        self._done: dict[str, Path] = {}
        self._digests: dict[tuple, str] = {}  # (path, mtime, size) -> sha256: hashed once

    def __call__(self, onnx_path: Path) -> Path:
        st = Path(onnx_path).stat()
        stamp = (str(onnx_path), st.st_mtime_ns, st.st_size)
        if stamp not in self._digests:
            self._digests[stamp] = sha256_file(onnx_path)
        digest = self._digests[stamp]
        if digest not in self._done:
            dst = self._scratch() / f"pre-{digest[:16]}.onnx"
            self._done[digest] = preprocess_for_quant(Path(onnx_path), dst)
        return self._done[digest]


def nodes_of_types(onnx_path: Path, op_types: tuple[str, ...]) -> tuple[str, ...]:
    """Names of the nodes of `op_types`, in graph order."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return tuple(n.name for n in model.graph.node if n.op_type in op_types and n.name)


def op_types(onnx_path: Path) -> dict[str, str]:
    """{node name: op type} for the named nodes, in graph order."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {n.name: n.op_type for n in model.graph.node if n.name}


def quantized_nodes(original: Path, quantized: Path) -> tuple[str, ...]:
    """Nodes of `original` that ONNX Runtime quantized in `quantized` (fed by DequantizeLinear,
    or turned into an integer op named `<node>_quant`), in graph order: what `nodes_to_exclude`
    can keep in float."""
    import onnx

    graph = onnx.load(str(quantized), load_external_data=False).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    hit = {
        n.name.removesuffix("_quant")
        for n in graph.node
        if n.op_type not in QDQ_OPS
        and (
            n.op_type in INTEGER_OPS or any(producer.get(i) == "DequantizeLinear" for i in n.input)
        )
    }
    return tuple(name for name in op_types(original) if name in hit)


def calib_options(settings: QuantSettings) -> dict:
    """Calibrator settings for the method; bins/percentile only where the method uses them."""
    method, extra = settings.calib_method, settings.extra
    opts = dict(CALIB_DEFAULTS[method])
    if "calib_bins" in extra:
        if method == "minmax":
            raise InputError(
                "--option calib_bins applies to the entropy and percentile methods, not minmax"
            )
        opts["num_bins"] = _int_option("calib_bins", extra["calib_bins"], 128)
    if "calib_percentile" in extra:
        if method != "percentile":
            raise InputError(
                f"--option calib_percentile applies to the percentile method, not {method}"
            )
        opts["percentile"] = _float_option("calib_percentile", extra["calib_percentile"])
    return opts


def _int_option(key: str, value, minimum: int) -> int:
    if not isinstance(value, int) or value < minimum:
        raise InputError(f"--option {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _float_option(key: str, value) -> float:
    if not isinstance(value, int | float) or not 50.0 < float(value) < 100.0:
        raise InputError(f"--option {key} must be a number in (50, 100), got {value!r}")
    return float(value)


def ranges_from_calibration(
    model_path: Path, calibration, contract: Contract, method: str, options: dict
):
    """Collect activation ranges (onnxruntime TensorsData) batch by batch with progress."""
    from onnxruntime.quantization.calibrate import (
        CalibrationDataReader,
        CalibrationMethod,
        create_calibrator,
    )

    enum = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    input_name = _input_name(model_path)

    class _OneBatch(CalibrationDataReader):
        def __init__(self, batch) -> None:
            self.items = iter([{input_name: batch}])

        def get_next(self):
            return next(self.items, None)

    batches = list(calibration.batches(contract, 32))
    bar = Progress(len(batches), f"calibrate ({method})")
    with tempfile.TemporaryDirectory(prefix="edgemed-calib-") as tmp, _quiet():
        calibrator = create_calibrator(
            Path(model_path),
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=enum,
            extra_options=options,
        )
        for b in batches:
            calibrator.collect_data(_OneBatch(b))  # one batch at a time keeps memory bounded
            bar.advance(1)
        ranges = calibrator.compute_data()
    bar.close()
    return ranges


def _input_name(model_path: Path) -> str:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return next(i.name for i in graph.input if i.name not in inits)


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    if name not in TYPES:
        raise InputError(f"quantization type must be one of {', '.join(TYPES)}, got {name!r}")
    return QuantType.QUInt8 if name == "uint8" else QuantType.QInt8


def quantize_with_ranges(
    pre_path: Path,
    out_path: Path,
    ranges,
    *,
    per_channel: bool,
    types: tuple,
    exclude_nodes: tuple[str, ...],
    extra_options: dict,
) -> None:
    """The one `quantize_static` call (QDQ format) from already calibrated ranges: ONNX Runtime's
    INT8 and TensorRT's Q/DQ differ only in types, granularity and extra options."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    with tempfile.TemporaryDirectory(prefix="edgemed-qdq-") as tmp, _quiet():
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        quantize_static(
            str(pre_path),
            str(out_path),
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=types[0],
            weight_type=types[1],
            nodes_to_exclude=list(exclude_nodes),
            calibrate_method=ranges.calibration_method or CalibrationMethod.MinMax,
            calibration_cache_path=str(cache),
            extra_options=extra_options,
        )


def qdq_from_onnx(pre_path: Path, out_path: Path, ranges, settings: QuantSettings) -> dict:
    """Static INT8 QDQ ONNX from the pre-processed model and calibrated ranges."""
    float_outputs = output_op_types(pre_path)
    act = settings.extra.get("activation_type", "uint8")
    wt = settings.extra.get("weight_type", DEFAULT_STATIC_WEIGHT_TYPE)
    if wt == "int8" and not cpu_has_vnni():
        print(U8S8_WARNING, file=sys.stderr)
    quantize_with_ranges(
        pre_path,
        out_path,
        ranges,
        per_channel=settings.granularity == "per-channel",
        types=(_quant_type(act), _quant_type(wt)),
        exclude_nodes=settings.exclude_nodes,
        extra_options={"OpTypesToExcludeOutputQuantization": list(float_outputs)},
    )
    return {
        "format": "QDQ",
        "activation_type": act,
        "weight_type": wt,
        "weight_type_reason": WEIGHT_TYPE_REASON if wt == "uint8" else "requested",
        "float_output_op_types": list(float_outputs),
    }


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (int8 dot products accumulate in int32, no saturation)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: no warning rather than a guess
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def output_op_types(onnx_path: Path) -> tuple[str, ...]:
    """Op types that produce the graph outputs.

    Their outputs stay float: the logits meet the clinical threshold, and an 8-bit logit step
    moves probabilities near it (measured: 3 -> 1 flips of 468 on the chest X-ray CNN, MinMax).
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    outs = {o.name for o in graph.output}
    return tuple(sorted({n.op_type for n in graph.node if outs & set(n.output)}))


def dynamic_int8_from_onnx(pre_path: Path, out_path: Path, settings: QuantSettings) -> dict:
    """Dynamic INT8: weights quantized offline, activation ranges computed at run time."""
    from onnxruntime.quantization import quantize_dynamic

    wt = settings.extra.get("weight_type", "int8")
    with _quiet():
        quantize_dynamic(
            str(pre_path),
            str(out_path),
            per_channel=settings.granularity == "per-channel",
            weight_type=_quant_type(wt),
            nodes_to_exclude=list(settings.exclude_nodes),
        )
    return {"format": "IntegerOps", "activation_type": "uint8 (dynamic)", "weight_type": wt}


def ensure_contract(path: Path, contract: Contract) -> None:
    """The contract travels inside every ONNX artifact; re-embed it if a tool dropped it."""
    import onnx

    model = onnx.load(str(path))
    if not any(p.key == CONTRACT_KEY for p in model.metadata_props):
        save_onnx(embed_contract(model, contract), path)
