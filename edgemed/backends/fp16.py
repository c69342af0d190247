"""FP16 that cannot silently overflow: a mixed FP16/FP32 ONNX and a non-finite output guard.

FP16 tops out at 65504. An FP32 model whose activations or weights go beyond that becomes Inf
(and then NaN) in FP16. TensorRT 11 builds strongly typed networks, so its FP16 engine is exactly
the FP16 ONNX it is given; that ONNX is made here with NVIDIA AutoCast's rule: a node whose input
or output magnitudes, measured on the calibration images, exceed `data_max` (default 512), or that
reads an initializer beyond `init_max` (default 65504), stays FP32; graph inputs and outputs stay
FP32. The conversion itself is onnxconverter-common's `convert_float_to_float16`
(`node_block_list`, `keep_io_types`), which inserts the Casts between FP16 and FP32 parts.

`refuse_nonfinite` is the guard every FP16 export runs on its validation images: NaN/Inf outputs
are refused with one line, never measured as "drift".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgemed.contract import Contract
from edgemed.errors import DriftError, InputError
from edgemed.provenance import package_version

FP16_MAX = 65504.0
# Backend --option keys (TensorRT) and the precisions they apply to.
THRESHOLD_OPTIONS: dict[str, tuple[str, ...]] = {
    "fp16_data_max": ("fp16",),
    "fp16_init_max": ("fp16",),
}


@dataclass(frozen=True)
class Fp16Thresholds:
    """AutoCast's thresholds: activations above data_max / initializers above init_max stay FP32."""

    data_max: float = 512.0
    init_max: float = FP16_MAX

    def to_dict(self) -> dict:
        return asdict(self)


def fp16_thresholds(extra: dict) -> Fp16Thresholds:
    """Thresholds from `--option fp16_data_max=... fp16_init_max=...` (each in (0, 65504])."""
    values = {}
    for key, field in (("fp16_data_max", "data_max"), ("fp16_init_max", "init_max")):
        if key not in extra:
            continue
        v = extra[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < float(v) <= FP16_MAX:
            raise InputError(
                f"--option {key} must be a number in (0, {FP16_MAX:g}] (FP16's largest value), "
                f"got {v!r}"
            )
        values[field] = float(v)
    return Fp16Thresholds(**values)


@dataclass(frozen=True)
class KeptNode:
    """One node kept in FP32 and why (the measured magnitude that crossed a threshold)."""

    node: str
    op: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def activation_magnitudes(onnx_path: Path, calibration, contract: Contract) -> dict[str, float]:
    """max |x| of every float tensor (graph input, node inputs/outputs) over the calibration images."""
    from edgemed.backends.ort_quant import ranges_from_calibration

    ranges = ranges_from_calibration(Path(onnx_path), calibration, contract, "minmax", {})
    out = {}
    for name, r in ranges.data.items():
        lo, hi = (np.asarray(v, dtype=np.float64) for v in r.range_value)
        out[name] = float(max(np.max(np.abs(lo)), np.max(np.abs(hi))))
    return out


def nodes_to_keep_fp32(model, magnitudes: dict[str, float], th: Fp16Thresholds) -> list[KeptNode]:
    """AutoCast's rule over a loaded ONNX model: which nodes must stay FP32, in graph order."""
    from onnx import numpy_helper

    inits = {}
    for i in model.graph.initializer:
        a = numpy_helper.to_array(i)
        if a.dtype.kind == "f" and a.size:
            inits[i.name] = float(np.max(np.abs(a.astype(np.float64))))
    kept = []
    for n in model.graph.node:
        reason = _overflow_reason(n, magnitudes, inits, th)
        if reason:
            kept.append(KeptNode(n.name, n.op_type, reason))
    return kept


def _overflow_reason(node, magnitudes: dict, inits: dict, th: Fp16Thresholds) -> str | None:
    for name in node.input:
        if name in inits and not inits[name] <= th.init_max:  # `not <=` also catches NaN
            return f"initializer {name} reaches {inits[name]:.4g} > {th.init_max:g}"
    for name in (*node.input, *node.output):
        if name in magnitudes and not magnitudes[name] <= th.data_max:
            return f"activation {name} reaches {magnitudes[name]:.4g} > {th.data_max:g}"
    return None


def mixed_fp16_onnx(src: Path, dst: Path, keep: tuple[str, ...]) -> dict:
    """FP16 ONNX with the `keep` nodes in FP32 and FP32 graph inputs/outputs; checked, then saved."""
    import onnx
    from onnxconverter_common import float16

    from edgemed.onnx_export import save_onnx

    model = float16.convert_float_to_float16(
        onnx.load(str(src)),
        keep_io_types=True,
        node_block_list=list(keep) or None,
        max_finite_val=FP16_MAX,  # the default (1e4) would clip weights silently
    )
    counts = precision_counts(model)
    if counts["fp16_initializers"] == 0:
        raise InputError(
            "no layer of this model stays within the FP16 thresholds (every node kept FP32), so "
            "an FP16 model would be FP32; export --precision fp32 or raise --option fp16_data_max"
        )
    onnx.checker.check_model(model)
    save_onnx(model, dst)
    return {
        "converter": "onnxconverter-common float16.convert_float_to_float16",
        "converter_version": package_version("onnxconverter-common"),
        "keep_io_types": True,
        **counts,
    }


def precision_counts(model) -> dict:
    """How much of the model is FP16: initializers by dtype and the Casts between the parts."""
    from onnx import TensorProto, numpy_helper

    fp16 = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16]
    if any(not np.isfinite(numpy_helper.to_array(i)).all() for i in fp16):
        raise InputError("the FP16 conversion produced a non-finite weight; export fp32")
    return {
        "fp16_initializers": len(fp16),
        "fp32_initializers": sum(i.data_type == TensorProto.FLOAT for i in model.graph.initializer),
        "casts": sum(n.op_type == "Cast" for n in model.graph.node),
    }


def refuse_nonfinite(runner, contract: Contract, validation, what: str, fix: str) -> None:
    """Run `runner` on the validation images; NaN/Inf logits -> DriftError (one line)."""
    from edgemed.backends import run_batches

    if validation is None:
        return  # nothing runs here; the export warns that the budget was not checked
    with runner:
        logits = run_batches(runner, contract, validation.images)
    bad = ~np.isfinite(logits).reshape(len(logits), -1).all(axis=1)
    if bad.any():
        raise DriftError(
            f"{what} gives NaN/Inf outputs on {int(bad.sum())} of {len(bad)} validation images "
            f"(a value overflows FP16's range of +-{FP16_MAX:g}); {fix}",
            {"nonfinite_images": int(bad.sum()), "n": len(bad)},
        )
