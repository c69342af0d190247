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

from edgemed.backends import run_batches
from edgemed.backends.quant import QuantSettings
from edgemed.contract import Contract
from edgemed.errors import DriftError, InputError
from edgemed.onnx_export import save_onnx
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
    # lazy: import cycle (backends.onnxruntime imports this module)
    from edgemed.backends.onnxruntime.quant import ranges_from_calibration

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

    model = float16.convert_float_to_float16(
        onnx.load(str(src)),
        keep_io_types=True,
        node_block_list=list(keep) or None,
        max_finite_val=FP16_MAX,  # the default (1e4) would clip weights silently
    )
    dropped = drop_fp16_round_trips(model)
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
        "fp16_round_trips_removed": dropped,
        **counts,
    }


def drop_fp16_round_trips(model) -> int:
    """Remove FP32 -> FP16 -> FP32 Cast pairs between two FP32 nodes; returns how many.

    onnxconverter-common casts the output of every blocked node to FP16 and back to FP32 at the
    next blocked node, so a value kept FP32 *because* it exceeds 65504 still passes through FP16
    and becomes Inf (measured on a model with 1e5 activations: every output Inf).
    """
    from onnx import TensorProto

    nodes = list(model.graph.node)
    to = {id(n): next((a.i for a in n.attribute if a.name == "to"), None) for n in nodes}
    producer = {o: n for n in nodes for o in n.output}
    outputs = {o.name for o in model.graph.output}
    rename: dict[str, str] = {}
    for b in nodes:
        a = producer.get(b.input[0]) if b.op_type == "Cast" and b.input else None
        if (a is not None and a.op_type == "Cast" and to[id(b)] == TensorProto.FLOAT
                and to[id(a)] == TensorProto.FLOAT16 and b.output[0] not in outputs):  # fmt: skip
            rename[b.output[0]] = a.input[0]  # B's readers read A's FP32 input instead
    if not rename:
        return 0
    for n in nodes:
        n.input[:] = [rename.get(i, i) for i in n.input]
    keep = [n for n in nodes if not (n.op_type == "Cast" and n.output[0] in rename)]
    used = {i for n in keep for i in n.input} | outputs
    keep = [n for n in keep if n.op_type != "Cast" or n.output[0] in used]  # unread FP16 casts
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(rename)


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


@dataclass(frozen=True)
class _Images:
    """Validation images in the shape `activation_magnitudes` reads calibration images."""

    images: np.ndarray

    def batches(self, contract: Contract, batch: int = 32):
        for i in range(0, len(self.images), batch):
            yield contract.normalize(self.images[i : i + batch])


def overflowing_nodes(onnx_path: Path, contract: Contract, images: np.ndarray) -> list[str]:
    """Nodes of an FP32 ONNX whose values on `images` leave FP16's range (for the error message)."""
    import onnx

    mags = activation_magnitudes(onnx_path, _Images(images), contract)
    limit = Fp16Thresholds(FP16_MAX, FP16_MAX)
    return [k.node for k in nodes_to_keep_fp32(onnx.load(str(onnx_path)), mags, limit)]


def refuse_nonfinite(runner, contract: Contract, validation, what: str, fix: str) -> None:
    """Run `runner` on the validation images; NaN/Inf logits -> DriftError (one line)."""

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


def fp16_from_onnx(src: Path, out_path: Path, settings: QuantSettings) -> dict:
    """FP16 weights and compute with FP32 inputs/outputs (onnxconverter-common). Nodes reading a
    weight beyond FP16's range stay FP32 (the converter would clip it, silently)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    kept = nodes_to_keep_fp32(model, {}, Fp16Thresholds(init_max=FP16_MAX))
    block = list(dict.fromkeys([*settings.exclude_nodes, *(k.node for k in kept)]))
    model = float16.convert_float_to_float16(
        model, keep_io_types=True, node_block_list=block or None, max_finite_val=FP16_MAX
    )
    drop_fp16_round_trips(model)  # a value kept FP32 must not pass through FP16 between nodes
    save_onnx(model, out_path)
    return {
        "converter": "onnxconverter-common float16",
        "keep_io_types": True,
        "kept_fp32": [k.to_dict() for k in kept],
    }
