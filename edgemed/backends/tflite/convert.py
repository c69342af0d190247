"""torch module -> .tflite with litert-torch: NHWC input, fixed batch 1; FP32, FP16 weights, INT8.

Why litert-torch and not onnx2tf (measured on this machine, see FIELD-NOTES): installing
tensorflow + onnx2tf next to the other runtimes downgraded numpy to 1.26, onnx to 1.19 and
onnxruntime to 1.23, which broke NNCF's ONNX backend, so one `all` environment could not hold
every backend; onnx2tf also overwrites its input ONNX in place, and without calibration data it
silently calibrates INT8 on 20 COCO photos with ImageNet statistics. litert-torch 0.10 (with
torch==2.13.0 pinned) installs beside onnxruntime 1.31, openvino 2026.4, nncf 3.4 and numpy 2.4
with `pip check` clean, converts from the torch module directly, and its INT8 (PT2E, symmetric
per-channel) stays within the drift budget on the chest X-ray CNN (0.2-0.9% flips, see METHODS).
Its output has a fixed batch of 1.

FP16 = FP32 model with float16 weights (ai-edge-quantizer `float_casting`, shipped with
litert-torch), dequantized at load: computation stays FP32. INT8 = PT2E quantization: int8
activations, symmetric int8 weights, int8 model input; the logits (the output of the last layer)
stay float by default, as in the ONNX Runtime default, because an 8-bit logit step moves
decisions at the clinical threshold. `integer_output=true` quantizes them too (a full-integer
model, int8 output, for integer-only accelerators).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from edgemed.backends.quant import QuantSettings
from edgemed.contract import Contract
from edgemed.errors import DriftError, InputError
from edgemed.progress import Progress

# Activation observers. minmax is the default, measured on the chest X-ray CNN (468 test images,
# 256 calibration images): minmax 3 flips (0.64%), histogram (PT2E's default, L2 range search)
# 4 flips (0.85%); calibrating in batches of 32 or of 1 gave identical models. Most of those flips
# come from the int8 logit (step ~0.09): with the head kept in float (`exclude_nodes=head`, output
# float32) minmax gave 1 flip (0.21%). So by default only the model output is left unquantized
# (float logits, weights still int8); `integer_output=true` gives the full-integer model.
METHODS = ("minmax", "histogram")
GRANULARITIES = ("per-channel", "per-tensor")
FP16_RECIPE = [
    {
        "regex": ".*",
        "operation": "*",
        "algorithm_key": "float_casting",
        "op_config": {
            "weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT", "granularity": "TENSORWISE"},
            "compute_precision": "FLOAT",
            "explicit_dequantize": True,
            "skip_checks": False,
        },
    }
]


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """litert-torch prints its stage log on stdout (the CLI's result stream): keep it out."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def nhwc_module(module):
    """Wrap a torch module taking NCHW so the exported model takes NHWC (no transpose at run time
    for the caller; the converter folds the permute into the graph)."""
    import torch

    class NHWCInput(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x.permute(0, 3, 1, 2))

    return NHWCInput(module).eval()


def feature_tapped(module) -> tuple[object, bool]:
    """(a module returning (logits, features), True): the features are the input of the last
    torch Linear, what the head reads (the tensor the ONNX feature output names). (module, False)
    where torch.fx cannot trace the module (data-dependent control flow) or it has no Linear:
    that artifact's domain guard then uses input statistics only, and its manifest says so."""
    import torch

    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception:  # any trace failure means "no feature output", never a failed export
        return module, False
    linear = [n for n in gm.graph.nodes if _is_linear(gm, n)]
    out = next(n for n in gm.graph.nodes if n.op == "output")
    if not linear or not isinstance(out.args[0], torch.fx.Node):
        return module, False
    out.args = ((out.args[0], linear[-1].args[0]),)
    gm.recompile()
    return gm.eval(), True


def _is_linear(gm, node) -> bool:
    import torch

    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), torch.nn.Linear)
    return node.op == "call_function" and node.target is torch.nn.functional.linear


def weighted_modules(module) -> tuple[str, ...]:
    """Names of the Conv/Linear submodules, in definition order (what INT8 can keep in float)."""
    import torch

    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    return tuple(n for n, m in module.named_modules() if isinstance(m, kinds))


def module_classes(module) -> dict[str, tuple[str, ...]]:
    """{torch module class name: names of the submodules of that class}, for `exclude_op_types`
    (the root module itself is not one: keeping it float is the FP32 model)."""
    out: dict[str, list[str]] = {}
    for name, m in module.named_modules():
        if name:
            out.setdefault(type(m).__name__, []).append(name)
    return {k: tuple(v) for k, v in out.items()}


def conversion_error(exc: Exception) -> InputError:
    """InputError naming the op (and node) litert-torch could not lower, when it says so."""
    text = str(exc)
    op = re.search(r"Lowering not found: (\S+)", text)
    node = re.search(r"While executing %(\S+)", text)
    where = re.search(r'File "([^"]+)", line (\d+), in (\S+)', text)
    if op:
        at = f" at node {node.group(1)!r}" if node else ""
        src = f" ({where.group(1)}:{where.group(2)})" if where else ""
        return InputError(
            f"LiteRT cannot convert op {op.group(1)}{at}{src}; replace that layer with ops "
            "litert-torch supports (or export another target) and re-export"
        )
    first = (text.strip().splitlines() or [type(exc).__name__])[0][:300]
    return InputError(f"litert-torch could not convert the model ({first}); check its ops")


@contextlib.contextmanager
def quiet_third_party_logs():
    """Silence two import-time log lines that say nothing to the user: torchao's "Failed to load
    ..._C_*.so" (CUDA kernels of torchao that cannot load on a CPU build of torch; unused here) and
    torch's pytree note on torchao registering an Enum as a constant."""
    names = ("torchao", "torch.utils._pytree")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _convert(module, sample, path: Path, quant_config=None) -> None:
    with quiet_third_party_logs():
        import litert_torch

    try:
        with quiet_stdout():
            edge = litert_torch.convert(module, (sample,), quant_config=quant_config)
    except (RuntimeError, ValueError, TypeError, AssertionError, NotImplementedError) as exc:
        raise conversion_error(exc) from None
    with quiet_stdout():
        edge.export(str(path))


def tflite_fp32(module, contract: Contract, path: Path, features: bool = False) -> dict:
    """FP32 .tflite taking NHWC `contract` input at batch 1 (with `features`: a second output)."""
    import torch

    module, tapped = feature_tapped(module) if features else (module, False)
    _convert(nhwc_module(module), torch.zeros(contract.input_shape(1)), path)
    return {"converter": "litert-torch", "weights": "float32", "feature_output": tapped}


def tflite_fp16(fp32_path: Path, path: Path) -> dict:
    """Float16 weights (dequantized to FP32 at load) from an FP32 .tflite."""
    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(str(fp32_path), FP16_RECIPE)
    with quiet_stdout():
        result = q.quantize(enable_progress_report=False)
    Path(path).write_bytes(bytes(result.quantized_model))
    return {"converter": "litert-torch + ai-edge-quantizer float_casting", "weights": "float16"}


def _excluding_quantizer(config, excluded: tuple[str, ...], integer_output: bool):
    """PT2E quantizer that leaves nodes of the `excluded` submodules unannotated (float) and,
    unless `integer_output`, the model output (the logits) unquantized.

    litert-torch's own set_module_name filter does not match torch 2.13's nn_module_stack keys.
    """
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    class ExcludingQuantizer(PT2EQuantizer):
        def annotate(self, model):
            model = super().annotate(model)
            for n in model.graph.nodes:
                if _module_paths(n) & set(excluded):
                    n.meta.pop("quantization_annotation", None)
            _drop_orphaned_shares(model.graph)
            if not integer_output:
                _float_outputs(model.graph)
            return model

    return ExcludingQuantizer().set_global(config)


def _drop_orphaned_shares(graph) -> None:
    """Unannotate the nodes whose quantization is shared with a node now kept float.

    PT2E annotates conv -> (bn) -> relu as one pattern: the relu's spec is a
    SharedQuantizationSpec pointing at the conv. Left pointing at an unannotated conv, torchao's
    `prepare` fails with `KeyError: conv2d` (measured on mobilenetv2-small: every conv followed
    by a ReLU6). Such nodes follow their source into float, until nothing changes.
    """
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    def annotated(node) -> bool:
        return node.meta.get("quantization_annotation") is not None

    changed = True
    while changed:
        changed = False
        for n in graph.nodes:
            ann = n.meta.get("quantization_annotation")
            if ann is None:
                continue
            specs = [*ann.input_qspec_map.values(), ann.output_qspec]
            for spec in specs:
                if not isinstance(spec, SharedQuantizationSpec):
                    continue
                src = spec.edge_or_node
                nodes = src if isinstance(src, tuple) else (src,)
                if not all(annotated(m) for m in nodes):
                    n.meta.pop("quantization_annotation")
                    changed = True
                    break


def _float_outputs(graph) -> None:
    """Drop the output quantization of the nodes that produce the graph outputs."""
    for out in (n for n in graph.nodes if n.op == "output"):
        for producer in out.all_input_nodes:
            ann = producer.meta.get("quantization_annotation")
            if ann is not None:
                ann.output_qspec = None


def _module_paths(node) -> set[str]:
    """Submodule paths a graph node comes from, relative to the wrapped model."""
    out = set()
    for value in node.meta.get("nn_module_stack", {}).values():
        path = str(value[0]).removeprefix("L['self'].")
        if path.startswith("model."):
            out.add(path[len("model.") :])
    return out


def _act_config(method: str, per_channel: bool):
    import dataclasses

    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=per_channel)
    if method == "histogram":
        return config
    from torchao.quantization.pt2e.observer import MinMaxObserver

    act = dataclasses.replace(
        config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12)
    )
    return dataclasses.replace(config, input_activation=act, output_activation=act)


def _export_for_calibration(wrapped, contract: Contract):
    """torch.export with a dynamic batch (calibrate 32 images per call), else batch 1."""
    import torch

    try:
        batch = torch.export.Dim("batch", min=1, max=1024)
        sample = torch.zeros(contract.input_shape(2))
        return torch.export.export(wrapped, (sample,), dynamic_shapes=({0: batch},)).module(), 32
    except Exception:  # a model whose graph pins the batch: calibrate one image per call
        pass
    try:
        sample = torch.zeros(contract.input_shape(1))
        return torch.export.export(wrapped, (sample,)).module(), 1
    except Exception as exc:
        raise conversion_error(exc) from None


def _prepare(quantize_pt2e, graph, quantizer, excluded: tuple[str, ...]):
    """PT2E prepare; a split of shared quantization it still cannot make is a failed attempt
    (DriftError: accuracy control records it and goes on), never a traceback."""

    try:
        return quantize_pt2e.prepare_pt2e(graph, quantizer)
    except (KeyError, AssertionError, RuntimeError, ValueError) as exc:
        kept = ", ".join(excluded) or "none"
        raise DriftError(
            f"torchao PT2E cannot keep {kept} in float on its own ({type(exc).__name__}: "
            f"{str(exc)[:120]}); keep its whole block in float (--option exclude_nodes=...)"
        ) from None


def tflite_int8(module, contract: Contract, calibration, s: QuantSettings, path: Path,
                features: bool = False) -> dict:  # fmt: skip
    """INT8 .tflite: PT2E quantization calibrated on `calibration` (NHWC contract); float logits
    unless `integer_output` (then full-integer); with `features` a second, float output, except
    in a full-integer model (the converter refuses an int8 output the head also reads with
    another scale: that model's guard uses the input statistics only)."""
    import torch

    integer_output = bool(s.extra.get("integer_output", False))
    tap = features and not integer_output
    module, tapped = feature_tapped(module) if tap else (module, False)
    with quiet_third_party_logs():
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import quantize_pt2e

    config = _act_config(s.calib_method, s.granularity == "per-channel")
    quantizer = _excluding_quantizer(config, s.exclude_nodes, integer_output)
    graph, batch = _export_for_calibration(nhwc_module(module), contract)
    n = len(calibration.images)
    bar = Progress(n + 1, "tflite int8 calibration", stream=sys.stderr)
    with torch.no_grad():
        prepared = _prepare(quantize_pt2e, graph, quantizer, s.exclude_nodes)
        for x in calibration.batches(contract, batch):
            prepared(torch.from_numpy(x))
            bar.advance(len(x))
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    # The graph was exported from an eval-mode module; only the GraphModule's flag still says
    # "training" (exported modules refuse .eval()), which makes litert-torch warn for nothing.
    converted.training = False
    bar.note("converting to .tflite")
    _convert(
        converted,
        torch.zeros(contract.input_shape(1)),
        path,
        QuantConfig(pt2e_quantizer=quantizer),
    )
    bar.advance(1)
    bar.close()
    return {
        "converter": "litert-torch PT2E",
        "weights": "int8 symmetric",
        "activations": f"int8 ({s.calib_method} observer)",
        "output": "int8" if integer_output else "float32 logits",
        "calibration_batch": batch,
        "feature_output": tapped,
    }
