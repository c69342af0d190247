"""One forward pass before any data is loaded or calibrated: does the model fit the contract?

The common mistakes with a third-party network (a tuple or dict output, two logits on binary
data, `in_channels=3` on grayscale, an input smaller than the network's downsampling allows, a
fixed-batch ONNX) otherwise surface as a traceback minutes later, inside training, parity or
calibration. Each is one InputError here, naming the fix.
"""

from __future__ import annotations

import re

import numpy as np

from edgemed.backends.onnxruntime import unsupported_error
from edgemed.contract import Contract
from edgemed.errors import InputError
from edgemed.feature_output import strip_feature_output

PROBE_BATCHES = (2, 1)
MAX_PROBE_SIZE = 512  # the too-small search doubles the input side up to this


def first_line(exc: BaseException, limit: int = 200) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def missing_module_error(exc: ImportError, who: str) -> InputError:
    """ModuleNotFoundError -> one line naming the module to install."""
    name = getattr(exc, "name", None)
    if not name:  # MONAI's OptionalImportError keeps the name only in its message
        found = re.search(r"No module named '([^']+)'", str(exc))
        name = found.group(1) if found else None
    if not name:
        return InputError(f"{who} needs a package that is not installed ({first_line(exc)})")
    top = name.split(".")[0]
    return InputError(
        f"{who} needs the module {name!r}, which is not installed here: pip install {top} "
        "(or the package that provides it)"
    )


def probe_torch(module, contract: Contract, who: str) -> None:
    """Run the module at batch 2 and 1 on the contract's input; InputError on any mismatch."""
    from edgemed.models.outputs import SelectOutput, pick  # lazy: imports torch

    raw, choice = (
        (module.net, module.choice) if isinstance(module, SelectOutput) else (module, None)
    )
    for batch in PROBE_BATCHES:
        out = _torch_forward(raw, contract, batch, who)
        if choice is not None:
            out = _picked(out, choice, pick, who)
        elif not hasattr(out, "shape"):
            raise InputError(_many_outputs(who, out))
        check_output_shape(tuple(out.shape), contract, batch, who)


def _torch_forward(module, contract: Contract, batch: int, who: str):
    import torch

    x = torch.randn(contract.input_shape(batch), generator=torch.Generator().manual_seed(0))
    module.eval()
    try:
        with torch.no_grad():
            return module(x)
    except ImportError as exc:  # an optional dependency imported at call time (MONAI's style)
        raise missing_module_error(exc, who) from None
    except Exception as exc:  # the model's own code failed: find out why, in one line
        raise _forward_error(module, contract, exc, who) from None


def _runs(module, shape: tuple[int, ...]) -> bool:
    import torch

    try:
        with torch.no_grad():
            module(torch.zeros(shape))
        return True
    except Exception:  # any failure means "not at this shape"
        return False


def _forward_error(module, contract: Contract, exc: Exception, who: str) -> InputError:
    h, w = contract.input_size
    c = contract.channels
    shown = f"a 1x{c}x{h}x{w} batch" if contract.layout == "NCHW" else f"a 1x{h}x{w}x{c} batch"
    other = 3 if c == 1 else 1
    if contract.layout == "NCHW" and (
        _first_conv_channels(module) == other or _runs(module, (1, other, h, w))
    ):
        kind = "grayscale" if c == 1 else "RGB"
        return InputError(
            f"{who} takes {other}-channel input but the data is {kind} ({c} channel"
            f"{'s' if c > 1 else ''}): build it with {c} input channel{'s' if c > 1 else ''} "
            f"(e.g. --model-arg in_channels={c} for MONAI networks) or use --channels {other}"
        )
    size = smallest_input(module, contract)
    if size is not None:
        return InputError(
            f"{who} cannot run at {h}x{w} px: the input is too small for the network "
            f"({first_line(exc, 120)}); smallest input that runs: {size} px (sizes tried by "
            f"doubling up to {MAX_PROBE_SIZE}); train at --image-size {size} or larger, or pick a "
            "model for small inputs"
        )
    return InputError(f"{who} fails on {shown} of the contract's input ({first_line(exc)})")


def _first_conv_channels(module) -> int | None:
    """in_channels of the first convolution, where the model starts with one."""
    from torch import nn

    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m.in_channels
    return None


def smallest_input(module, contract: Contract) -> int | None:
    """The smallest square side, doubling from the contract's, at which the module runs."""
    side = max(contract.input_size) * 2
    while side <= MAX_PROBE_SIZE:
        shape = contract.input_shape(1)
        shape = (*shape[:2], side, side) if contract.layout == "NCHW" else (1, side, side, shape[3])
        if _runs(module, shape):
            return side
        side *= 2
    return None


def _picked(out, choice: str | int, pick, who: str):
    flag = "--output-index" if isinstance(choice, int) else "--output-name"
    if hasattr(out, "shape"):
        raise InputError(
            f"{who} returns a single tensor, so there is nothing for {flag} to choose: drop {flag}"
        )
    try:
        chosen = pick(out, choice)
    except (KeyError, IndexError, AttributeError, TypeError):
        raise InputError(
            f"{who} has no output {choice!r}; {_many_outputs(who, out, lead=False)}"
        ) from None
    if not hasattr(chosen, "shape"):
        raise InputError(f"{who}'s output {choice!r} is not a tensor; choose the logits tensor")
    return chosen


def _many_outputs(who: str, out, lead: bool = True) -> str:
    """What a tuple/dict output holds and how to name the logits."""
    if isinstance(out, dict):
        items = [(repr(k), v) for k, v in out.items()]
        what, flag, eg = "a dict", "--output-name", repr(next(iter(out), "logits"))[1:-1]
    elif isinstance(out, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(out)]
        what, flag, eg = f"a {type(out).__name__}", "--output-index", "0"
    else:
        return f"{who} returns {type(out).__name__}, not a tensor of logits"
    shapes = ", ".join(f"{k}: {_shape_text(v)}" for k, v in items[:8])
    body = f"{what} of {len(items)} outputs ({shapes}); name the logits with {flag} {eg}"
    return f"{who} returns {body}" if lead else f"it returns {body}"


def _shape_text(v) -> str:
    shape = getattr(v, "shape", None)
    return "x".join(str(d) for d in shape) if shape is not None else type(v).__name__


def check_output_shape(shape: tuple, contract: Contract, batch: int, who: str) -> None:
    """(batch, K) logits with K = 1 for binary, one per class otherwise ((batch,) for binary)."""
    want = contract.num_outputs
    got = "x".join(str(d) for d in shape) or "a scalar"
    if len(shape) == 0 or shape[0] != batch:
        raise InputError(
            f"{who} returns shape {got} for a batch of {batch} images; a classifier returns "
            f"(batch, {want}) logits"
        )
    if len(shape) == 1 and want == 1:
        return
    if len(shape) != 2:
        raise InputError(
            f"{who} returns shape {got} for a batch of {batch}; a classifier returns "
            f"(batch, {want}) logits (pool or flatten spatial outputs in the model)"
        )
    if shape[1] != want:
        raise InputError(_count_message(who, shape[1], contract))


def _count_message(who: str, got: int, contract: Contract) -> str:
    names = ", ".join(contract.class_names)
    if contract.task == "binary":
        return (
            f"{who} gives {got} logits per image, but binary classification ({names}) needs "
            f"exactly ONE logit (p({contract.class_names[-1]}) = sigmoid(logit)): build the "
            "model with one output (e.g. --model-arg out_channels=1 for MONAI networks)"
        )
    n = contract.num_outputs
    return (
        f"{who} gives {got} logits per image, but the {contract.task} task needs {n}, one per "
        f"class ({names}): build the model with {n} outputs (e.g. --model-arg out_channels={n})"
    )


def onnx_with_output(model, choice: str | int | None, path) -> object:
    """The ONNX graph keeping only the chosen output (by name or position); unchanged if None.
    An edgemed artifact's own feature output (edgemed.feature_output) is never a choice."""

    model = strip_feature_output(model)
    outputs = list(model.graph.output)
    names = [o.name for o in outputs]
    if choice is None:
        return model
    if isinstance(choice, int):
        if not 0 <= choice < len(names):
            raise InputError(
                f"{path} has {len(names)} outputs ({', '.join(names)}); --output-index must be "
                f"0 to {len(names) - 1}"
            )
        keep = outputs[choice]
    elif choice in names:
        keep = outputs[names.index(choice)]
    else:
        raise InputError(
            f"{path} has no output {choice!r}; its outputs are {', '.join(names)}: "
            f"pass --output-name {names[0]}"
        )
    del model.graph.output[:]
    model.graph.output.append(keep)
    return model


def probe_onnx(model, contract: Contract, precision: str, path) -> None:
    """Run the ONNX (already output-selected) in ONNX Runtime at batch 2 and 1 before any data."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own Fail/InvalidGraph types
        raise unsupported_error(path) or InputError(
            f"ONNX Runtime cannot load {path} ({first_line(exc)}); re-export it"
        ) from None
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise InputError(
            f"{path} takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); edgemed "
            "feeds one image tensor: re-export the model with a single input"
        )
    for batch in _onnx_batches(inputs[0], precision, path):
        x = np.random.default_rng(0).standard_normal(contract.input_shape(batch), np.float32)
        try:
            outs = sess.run(None, {inputs[0].name: x})
        except Exception as exc:  # ORT raises its own RuntimeException types
            raise InputError(
                f"{path} fails in ONNX Runtime on a batch of {batch} ({first_line(exc)})"
            ) from None
        if len(outs) > 1:
            shapes = ", ".join(
                f"{o.name}: {_shape_text(v)}" for o, v in zip(sess.get_outputs(), outs, strict=True)
            )
            raise InputError(
                f"{path} has {len(outs)} outputs ({shapes}); name the logits with --output-name "
                f"{sess.get_outputs()[0].name} (or --output-index N)"
            )
        check_output_shape(tuple(outs[0].shape), contract, batch, str(path))


def _onnx_batches(inp, precision: str, path) -> tuple[int, ...]:
    """Batches to probe; a fixed batch is refused where edgemed needs other batch sizes."""
    dim0 = inp.shape[0] if inp.shape else None
    if not isinstance(dim0, int):
        return PROBE_BATCHES
    fix = (
        f"re-export it with a dynamic batch axis (torch.onnx.export(..., dynamic_axes="
        f"{{{inp.name!r}: {{0: 'batch'}}}}))"
    )
    if dim0 != 1:
        raise InputError(
            f"{path} has a fixed batch of {dim0} in input {inp.name!r}; parity, calibration and "
            f"bench run batches of other sizes (1 to 64): {fix}"
        )
    if precision == "int8":
        raise InputError(
            f"{path} has a fixed batch of 1 in input {inp.name!r}; INT8 calibration and accuracy "
            f"control feed batches of 32: {fix}, or export at fp32"
        )
    return (1,)
