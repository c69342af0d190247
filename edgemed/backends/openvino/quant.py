"""OpenVINO model -> INT8 with NNCF (post-training, optionally accuracy-controlled).

Defaults chosen by measurement on the chest X-ray CNN (74 k params, 468 test images, calibrated on
256 balanced training images; flips = test decisions changed vs torch FP32):

    NNCF defaults                                              12 flips (2.6%)
    overflow fix off + MINMAX activations + fast bias corr.   10 flips (2.1%)
    overflow fix on (first layer) + MINMAX + full bias corr.   28 flips (6.0%)
    overflow fix off + MINMAX + full bias correction           1 flip  (0.2%)
    overflow fix off + MINMAX + no bias correction             1 flip  (0.2%), max |dp| 0.033

Bias correction defaults to `auto`: full and none are both tried and the one closer to FP32 on the
validation split is kept (the 224 px brain MRI ResNet-18 drifts ten times less without it, the
brain MRI CNN three times less with it; see `_resolve_bias_correction`).

Why overflow fix off: NNCF's overflow fix quantizes first-layer weights to 7 bits so that CPUs
*without* VNNI (AVX2-only x86, whose pmaddubsw saturates 16-bit sums) cannot overflow. VNNI/AMX
x86 CPUs and ARM do not saturate, and the lost bit cost accuracy here. Deploying on an AVX2-only
CPU: pass `--option overflow_fix=enable` (recorded in the manifest like every setting).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import numpy as np

from edgemed.backends.quant import QuantSettings, calibration_info
from edgemed.contract import Contract
from edgemed.errors import InputError
from edgemed.evaluation.metrics import auc

METHODS = ("minmax", "percentile")
GRANULARITIES = ("per-channel", "per-tensor")
OVERFLOW_FIX = ("disable", "first_layer_only", "enable")
BIAS_CORRECTION = ("auto", "full", "fast", "none")
DEFAULTS = {"overflow_fix": "disable", "bias_correction": "auto"}
AUTO_BIAS_CANDIDATES = ("full", "none")
# Full bias correction runs a sub-graph per layer: on a 64 px DenseNet-121 (121 weighted ops) auto
# took 442 s and 3.7 GB RSS (ONNX Runtime INT8: 50 s). Above this many weighted ops auto compares
# NNCF's fast bias correction with none instead (see BENCHMARKS.md, "OpenVINO INT8 cost").
FULL_BIAS_MAX_OPS = 50
LARGE_AUTO_BIAS_CANDIDATES = ("fast", "none")
# Weighted ops NNCF quantizes; the accuracy-aware fallback may keep them in float.
WEIGHTED_OPS = (
    "Convolution",
    "GroupConvolution",
    "ConvolutionBackpropData",
    "GroupConvolutionBackpropData",
    "MatMul",
)


def compile_config(hint: str, threads: int | None) -> dict:
    """CPU plugin settings for batch-1 latency: one stream, explicit threads and precision."""
    cfg = {"INFERENCE_PRECISION_HINT": hint, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    return cfg


@contextlib.contextmanager
def nncf_output() -> Iterator[None]:
    """NNCF logs and draws progress on stdout; send both to stderr (stdout is the CLI's result)."""
    from nncf.common.logging.logger import nncf_logger

    handlers = [h for h in nncf_logger.handlers if isinstance(h, logging.StreamHandler)]
    old = [(h, h.stream) for h in handlers]
    for h in handlers:
        h.setStream(sys.stderr)
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        nncf_logger.setLevel(level)
        for h, stream in old:
            h.setStream(stream)


def nncf_settings(s: QuantSettings, images: int) -> dict:
    """The NNCF settings this conversion uses (recorded in the manifest)."""
    return {
        "preset": "performance (symmetric)",
        "activations_range_estimator": {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE"}[
            s.calib_method
        ],
        "weights_granularity": s.granularity,
        "overflow_fix": s.extra.get("overflow_fix", DEFAULTS["overflow_fix"]),
        "bias_correction": s.extra.get("bias_correction", DEFAULTS["bias_correction"]),
        "subset_size": images,
        "target_device": "ANY",
        "ignored_types": list(s.exclude_op_types),  # NNCF IgnoredScope(types=...), OpenVINO ops
    }


def _nncf_kwargs(settings: dict, ignored: tuple[str, ...]) -> dict:
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    advanced = AdvancedQuantizationParameters(
        overflow_fix=OverflowFix(settings["overflow_fix"]),
        activations_range_estimator_params=getattr(
            RangeEstimatorParametersSet, settings["activations_range_estimator"]
        ),
        weights_quantization_params=QuantizationParameters(
            per_channel=settings["weights_granularity"] == "per-channel"
        ),
        disable_bias_correction=settings["bias_correction"] == "none",
    )
    return {
        "subset_size": settings["subset_size"],
        "fast_bias_correction": settings["bias_correction"] == "fast",
        "ignored_scope": _ignored_scope(ignored, settings.get("ignored_types", [])),
        "advanced": advanced,
    }


def _ignored_scope(names, types):
    import nncf

    if not (names or types):
        return None
    return nncf.IgnoredScope(names=list(names), types=list(types))


def model_op_types(model) -> tuple[str, ...]:
    """OpenVINO op types present in the model (what `exclude_op_types` may name), sorted."""
    skip = {"Parameter", "Result", "Constant"}
    return tuple(sorted({op.get_type_name() for op in model.get_ordered_ops()} - skip))


def _dataset(images, labels, contract: Contract):
    """NNCF dataset of (input, label) items at batch 1; the model is fed the input only."""
    import nncf

    x = contract.normalize(images)
    return nncf.Dataset([(x[i : i + 1], labels[i]) for i in range(len(x))], _input_of)


def _input_of(item):
    return item[0]


def clinical_metric(contract: Contract, labels: np.ndarray, logits: np.ndarray) -> float:
    """AUC (binary), else mean one-vs-rest AUC over the classes present: higher is better."""
    scores = contract.scores(logits)
    if contract.task == "binary":
        return auc(labels.reshape(-1), scores)
    y = labels.reshape(len(labels), -1)
    y = y if y.shape[1] > 1 else np.eye(len(contract.class_names))[y[:, 0].astype(int)]
    cols = [k for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    return float(np.mean([auc(y[:, k], scores[:, k]) for k in cols]))


def _validation_fn(contract: Contract):
    def validate(compiled, items) -> tuple[float, None]:
        """NNCF's validation_fn: (metric, no per-item values: AUC is a set-level metric)."""
        labels, logits = [], []
        for x, y in items:
            logits.append(np.asarray(compiled(x)[0]).reshape(1, -1))
            labels.append(np.asarray(y).reshape(1, -1))
        return clinical_metric(contract, np.concatenate(labels), np.concatenate(logits)), None

    return validate


def int8_from_ov(model, req, s: QuantSettings, ignored, control):
    """Quantize an OpenVINO model with NNCF on `req.calibration`; `control` = max AUC drop for
    accuracy control, scored on `req.validation` (the validation split, never the calibration
    images: a metric on the images the ranges came from would flatter the quantized model).

    `ignored` are OpenVINO op names kept in float. Returns (quantized model, manifest facts).
    """
    import nncf

    s, choice, q = _resolve_bias_correction(model, req, s, ignored)
    settings = nncf_settings(s, len(req.calibration.images))
    ac = None
    if control is not None:
        q, ac = _accuracy_controlled(model, req, settings, ignored, float(control))
    elif q is None:
        q = _quantize(model, req, s, ignored)
    info = {
        "nncf": {**settings, "nncf_version": nncf.__version__},
        "calibration": calibration_info(req.calibration),
        "float_layers": float_layers(q),
    }
    if ac:
        info["nncf_accuracy_control"] = ac
    if choice:
        info["bias_correction_choice"] = choice
    return q, info


def _accuracy_controlled(model, req, settings: dict, ignored, max_drop: float):
    """nncf.quantize_with_accuracy_control with AUC on the validation split as the metric."""
    import nncf

    kw = _nncf_kwargs(settings, tuple(ignored))
    advanced = kw.pop("advanced")
    val = _validation_images(req)
    with nncf_output():
        q = nncf.quantize_with_accuracy_control(
            model,
            _dataset(req.calibration.images, req.calibration.labels, req.contract),
            _dataset(val.images, val.labels, req.contract),
            _validation_fn(req.contract),
            max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=advanced,
            **kw,
        )
    ac = {
        "method": "nncf.quantize_with_accuracy_control",
        "metric": "AUC on the validation split",
        "max_drop": max_drop,
        "validation_images": len(val.images),
    }
    return q, ac


def _resolve_bias_correction(model, req, s: QuantSettings, ignored):
    """`bias_correction=auto`: quantize with full and with no bias correction and keep the one
    whose outputs stay closer to FP32 on the validation split (mean |delta p|).

    Measured: full bias correction halves the drift of the small CNNs, but on the 224 px
    ResNet-18 it raised the median |delta p| tenfold (0.0003 -> 0.0029 on validation) and flipped
    a test decision; neither setting wins on every model. Returns (settings with the choice,
    the choice for the manifest, the chosen quantized model or None).
    """
    import dataclasses

    if s.extra.get("bias_correction", DEFAULTS["bias_correction"]) != "auto":
        return s, None, None
    val = req.validation
    large = len(weighted_ops(model)) > FULL_BIAS_MAX_OPS
    candidates = LARGE_AUTO_BIAS_CANDIDATES if large else AUTO_BIAS_CANDIDATES
    if val is None or len(val.images) == 0:
        first = candidates[0]
        chosen = dataclasses.replace(s, extra={**s.extra, "bias_correction": first})
        why = f"{first}: no validation images to compare (pass --data to choose by measurement)"
        return chosen, {"chosen": first, "reason": why}, None
    x = req.contract.normalize(val.images)
    ref = _probabilities(model, req.contract, x)
    tried = {}
    for bias in candidates:
        sb = dataclasses.replace(s, extra={**s.extra, "bias_correction": bias})
        q = _quantize(model.clone(), req, sb, ignored)
        tried[bias] = (float(np.mean(np.abs(_probabilities(q, req.contract, x) - ref))), sb, q)
    best = min(candidates, key=lambda b: tried[b][0])  # ties: the first listed
    choice = {
        "chosen": best,
        "candidates": list(candidates),
        "candidates_reason": (
            f"more than {FULL_BIAS_MAX_OPS} weighted ops: fast instead of full (cost)"
            if large
            else "full and none"
        ),
        "mean_abs_dp": {b: round(v[0], 6) for b, v in tried.items()},
        "measured_on": f"{len(x)} validation images, vs the FP32 model",
    }
    return tried[best][1], choice, tried[best][2]


def _quantize(model, req, s: QuantSettings, ignored):
    import nncf

    settings = nncf_settings(s, len(req.calibration.images))
    kw = _nncf_kwargs(settings, tuple(ignored))
    advanced = kw.pop("advanced")
    cal_ds = _dataset(req.calibration.images, req.calibration.labels, req.contract)
    with nncf_output():
        return nncf.quantize(model, cal_ds, advanced_parameters=advanced, **kw)


def _probabilities(model, contract: Contract, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """Scores of an OpenVINO model compiled in f32 on normalized inputs `x`."""
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", compile_config("f32", None))
    logits = [np.asarray(compiled(x[i : i + batch])[0]) for i in range(0, len(x), batch)]
    return contract.scores(np.concatenate(logits).reshape(len(x), -1))


def _validation_images(req):
    """The validation images NNCF's accuracy control scores (an error when there are none)."""
    val = req.validation
    if val is None or len(val.images) == 0:
        raise InputError(
            "--accuracy-control needs validation images: pass --data (the model's own data) so "
            "NNCF can score AUC on its validation split"
        )
    if len(np.unique(np.asarray(val.labels).reshape(len(val.labels), -1), axis=0)) < 2:
        raise InputError(
            "--accuracy-control scores AUC on the validation split, which holds only one class; "
            "pass --data with both classes in its validation split"
        )
    return val


def float_layers(model) -> list[str]:
    """Weighted ops whose weights were left in float by NNCF (kept in float), in graph order."""
    return [
        display_name(op.get_friendly_name())
        for op in model.get_ordered_ops()
        if op.get_type_name() in WEIGHTED_OPS and not _weights_quantized(op)
    ]


def _weights_quantized(op, depth: int = 4) -> bool:
    """NNCF writes int8 weights as Constant(i8) -> Convert -> [Subtract] -> Multiply -> op."""
    node = op.input_value(1).get_node()
    for _ in range(depth):
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            return node.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")
        if node.get_input_size() == 0:
            return False
        node = node.input_value(0).get_node()
    return False


def display_name(ov_name: str) -> str:
    """OpenVINO splits an ONNX Conv/Gemm with bias into '<node>/WithoutBiases' + Add: show <node>."""
    return ov_name.removesuffix("/WithoutBiases")


def weighted_ops(model) -> dict[str, str]:
    """{node name as in the ONNX graph: OpenVINO op name} for the ops NNCF quantizes."""
    return {
        display_name(op.get_friendly_name()): op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in WEIGHTED_OPS
    }


NOT_QUANTIZED_KINDS = frozenset({"FakeQuantize", "Constant", "Convert", "Parameter", "Result"})


def quantized_ops(model) -> dict[str, str]:
    """{node name as in the ONNX graph: OpenVINO op name} of the ops NNCF quantized in `model`
    (an input read from a FakeQuantize, or int8 weights), in graph order: LayerNorm (MVN), Add,
    SoftMax, Multiply, ... wherever NNCF put a FakeQuantize, not only the weighted ops."""
    out = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in NOT_QUANTIZED_KINDS:
            continue
        fed = any(
            op.input_value(i).get_node().get_type_name() == "FakeQuantize"
            for i in range(op.get_input_size())
        )
        if fed or (op.get_type_name() in WEIGHTED_OPS and _weights_quantized(op)):
            out[display_name(op.get_friendly_name())] = op.get_friendly_name()
    return out


def candidate_ops(model, req, s: QuantSettings) -> dict[str, str]:
    """The ops NNCF quantizes in `model` with nothing kept in float, read from one quantization
    (bias correction off: it moves biases, not where FakeQuantize goes)."""
    import dataclasses

    full = dataclasses.replace(
        s, exclude_nodes=(), exclude_op_types=(), extra={**s.extra, "bias_correction": "none"}
    )
    return quantized_ops(_quantize(model.clone(), req, full, ()))


def check_extra(s: QuantSettings) -> None:
    """Values of the OpenVINO-specific --option keys."""
    for key, allowed in (("overflow_fix", OVERFLOW_FIX), ("bias_correction", BIAS_CORRECTION)):
        v = s.extra.get(key)
        if v is not None and v not in allowed:
            raise InputError(
                f"--option {key}={v} is not an OpenVINO setting; choose one of {', '.join(allowed)}"
            )
