"""Where a model comes from: a training dir, an edgemed checkpoint, a factory spec, or an .onnx file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgemed.contract import Contract
from edgemed.errors import InputError
from edgemed.fileio import read_json, sha256_file
from edgemed.models import REBUILD, ModelSpec, build_model
from edgemed.models.checkpoint import (
    FORMAT,
    checkpoint_spec,
    load_checkpoint,
    load_state,
    read_checkpoint,
)
from edgemed.onnx_export import check_onnx_input, contract_from_onnx, load_onnx


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to export: torch module (or ONNX file), its contract, card and source facts."""

    kind: str  # "torch" or "onnx"
    contract: Contract
    source: dict
    module: object | None = None
    onnx_path: Path | None = None
    card: dict | None = None
    output: str | int | None = None  # ONNX: the graph output that holds the logits


def output_flag(output: str | int | None) -> str:
    return "--output-index" if isinstance(output, int) else "--output-name"


def load_model_source(
    model: str,
    checkpoint: str | None = None,
    model_args: dict | None = None,
    contract_path: str | None = None,
    output: str | int | None = None,
) -> LoadedModel:
    """Resolve MODEL as given on the command line (`output`: which output holds the logits)."""
    p = Path(model).expanduser()
    if p.suffix == ".onnx" and not p.is_dir():
        return _from_onnx(p, contract_path, output)
    if ":" in model and not p.exists():
        return _from_factory(model, checkpoint, model_args or {}, contract_path, output)
    if output is not None and (p.is_dir() or p.suffix in (".pt", ".pth", ".ckpt")):
        raise InputError(
            f"{output_flag(output)} applies to a package.module:factory or an .onnx model; "
            f"{model} is an edgemed model, which records its own output: drop the flag"
        )
    if p.is_dir():
        return _from_training_dir(p)
    if p.suffix in (".pt", ".pth", ".ckpt"):
        return _from_checkpoint(p)
    raise InputError(
        f"model {model!r} not found; give a training output dir, a .pt checkpoint, an .onnx file "
        "or package.module:factory"
    )


def _from_training_dir(d: Path) -> LoadedModel:
    if not (d / "model.pt").is_file():
        raise InputError(
            f"{d} is not a training output dir (no model.pt); run `edgemed train` first"
        )
    loaded = _from_checkpoint(d / "model.pt")
    card = read_json(d / "card.json", "model card") if (d / "card.json").exists() else None
    source = {**loaded.source, "kind": "training-dir", "dir": str(d.resolve())}
    return LoadedModel("torch", loaded.contract, source, loaded.module, card=card)


def _from_checkpoint(path: Path) -> LoadedModel:

    module, spec, contract = load_checkpoint(path)
    source = {
        "kind": "checkpoint",
        "path": str(path.resolve()),
        "sha256": sha256_file(path),
        "arch": spec.to_dict(),
    }
    return LoadedModel("torch", contract, source, module)


def _from_onnx(path: Path, contract_path: str | None, output: str | int | None) -> LoadedModel:

    model = load_onnx(path)
    contract = _contract_file(contract_path) if contract_path else contract_from_onnx(model)
    if contract is None:
        raise InputError(
            f"{path} carries no edgemed.contract metadata; pass --contract contract.json"
        )
    check_onnx_input(model, contract, path)
    return LoadedModel(
        "onnx",
        contract,
        {"kind": "onnx", "path": str(path.resolve()), "sha256": sha256_file(path)},
        onnx_path=path,
        output=output,
    )


def _from_factory(
    spec_text: str,
    checkpoint: str | None,
    kwargs: dict,
    contract_path: str | None,
    output: str | int | None = None,
) -> LoadedModel:
    """The factory the user named; an edgemed checkpoint given with it must name the same one."""

    state = read_checkpoint(Path(checkpoint)) if checkpoint else None
    stored = None
    if isinstance(state, dict) and state.get("format") == FORMAT:
        stored, stored_contract = checkpoint_spec(state, Path(checkpoint))
        if stored.name not in (spec_text, REBUILD):
            raise InputError(
                f"checkpoint {checkpoint} was saved from model {stored.name!r}, not the "
                f"{spec_text!r} given with --model; pass --model {stored.name} if you trust it"
            )
        kwargs = {**stored.kwargs, **kwargs}
    if not contract_path and stored is None:
        raise InputError(
            f"model factory {spec_text!r} needs --contract contract.json (input size, normalization, classes)"
        )
    contract = _contract_file(contract_path) if contract_path else stored_contract
    if output is None and stored is not None:
        output = stored.output
    spec = (
        stored
        if stored is not None and stored.name == REBUILD
        else ModelSpec(spec_text, kwargs, output)
    )
    module = build_model(spec, contract.channels, contract.num_outputs, factory=spec_text)
    source = {"kind": "factory", "arch": spec.to_dict()}
    if checkpoint:
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        load_state(module, state, Path(checkpoint))
        source.update(path=str(Path(checkpoint).resolve()), sha256=sha256_file(Path(checkpoint)))
    return LoadedModel("torch", contract, source, module.eval())


def _contract_file(path: str) -> Contract:
    data = read_json(Path(path), "contract file")
    return Contract.from_dict(data.get("contract", data))
