"""torch -> ONNX (dynamic batch, pinned opset) with the contract embedded in metadata_props."""

from __future__ import annotations

import warnings
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
    with warnings.catch_warnings():
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
