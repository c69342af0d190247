"""torch -> ONNX (dynamic batch, pinned opset) with the contract embedded in metadata_props."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

from edgemed.contract import CONTRACT_KEY, Contract
from edgemed.errors import InputError, UnavailableError
from edgemed.fileio import write_bytes_atomic

DEFAULT_OPSET = 17


def onnx_from_torch(module, contract: Contract, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export `module` (eval mode) with input 'input' (batch dynamic) and output 'logits'."""
    import io

    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings(), _export_errors(opset):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            torch.zeros(contract.input_shape(2)),
            buf,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    import onnx

    model = onnx.load_from_string(buf.getvalue())
    save_onnx(embed_contract(model, contract), path)
    return path


@contextlib.contextmanager
def _export_errors(opset: int) -> Iterator[None]:
    """The exporter's failures (an op without a symbolic at this opset, ...) as one line."""
    import torch

    try:
        yield
    except (torch.onnx.errors.OnnxExporterError, RuntimeError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(
            f"the model cannot be exported to ONNX opset {opset} ({first}); try --opset 17"
        ) from None


def check_onnx_input(model, contract: Contract, path: Path) -> None:
    """The graph's first input must have the contract's shape (batch may be symbolic)."""
    graph_inputs = [
        i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}
    ]
    if not graph_inputs:
        raise InputError(f"{path} has no graph input; re-export it")
    dims = graph_inputs[0].type.tensor_type.shape.dim
    got = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    want = contract.input_shape(1)[1:]
    if len(got) != len(want) + 1 or any(
        g is not None and g != w for g, w in zip(got[1:], want, strict=False)
    ):
        shown = "x".join("?" if g is None else str(g) for g in got)
        raise InputError(
            f"{path} takes input {graph_inputs[0].name!r} of shape {shown}, but its contract says "
            f"N x {'x'.join(map(str, want))} ({contract.layout}); pass the matching --contract or "
            "re-export the model"
        )


def embed_contract(model, contract: Contract):
    """Set metadata_props['edgemed.contract'] to the contract JSON (replacing any old value)."""
    keep = [p for p in model.metadata_props if p.key != CONTRACT_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key, entry.value = CONTRACT_KEY, contract.to_json()
    model.producer_name = model.producer_name or "edgemed"
    return model


def save_onnx(model, path: Path) -> None:
    """Check and write an ONNX model atomically."""
    import onnx

    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise InputError(f"exported ONNX failed onnx.checker: {str(exc).splitlines()[0]}") from None
    write_bytes_atomic(Path(path), model.SerializeToString())


def load_onnx(path: Path):
    """Load and check an ONNX file; missing or corrupt files are InputErrors."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, ValidationError, ...: all mean "corrupt"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path} is not a valid ONNX model ({first}); re-export it") from None
    return model


def contract_from_onnx(model) -> Contract | None:
    """The embedded contract, or None when the model has none."""
    for prop in model.metadata_props:
        if prop.key == CONTRACT_KEY:
            return Contract.from_json(prop.value)
    return None


def simplify_onnx(path: Path) -> dict:
    """Simplify the graph in place with onnxslim; returns node counts before and after."""
    try:
        import onnxslim
    except ImportError:
        raise UnavailableError("--simplify needs onnxslim; pip install onnxslim") from None
    import onnx

    model = onnx.load(str(path))
    before = len(model.graph.node)
    slim = onnxslim.slim(model)
    save_onnx(slim, path)
    return {"tool": "onnxslim", "nodes_before": before, "nodes_after": len(slim.graph.node)}
