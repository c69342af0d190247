"""edgemed checkpoints: architecture spec + contract + state dict, loadable with weights_only."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

from edgemed.contract import Contract
from edgemed.errors import InputError
from edgemed.fileio import write_bytes_atomic
from edgemed.models import ModelSpec, build_model

FORMAT = "edgemed-checkpoint/1"


def save_checkpoint(path: Path, module, spec: ModelSpec, contract: Contract) -> None:
    """Write the checkpoint atomically (only tensors and plain values inside)."""
    import torch

    payload = {
        "format": FORMAT,
        "arch": spec.to_dict(),
        "contract": contract.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes_atomic(Path(path), buf.getvalue())


def read_checkpoint(path: Path) -> dict:
    """Load the raw checkpoint dict; missing or corrupt files are InputErrors."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
    ) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"checkpoint {path} is corrupt or not a torch checkpoint ({first}); re-train or re-copy it"
        ) from None


def load_checkpoint(path: Path) -> tuple[object, ModelSpec, Contract]:
    """Rebuild the module from an edgemed checkpoint: (module in eval mode, spec, contract)."""
    data = read_checkpoint(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(
            f"{path} is not an edgemed checkpoint; for a plain state dict use "
            "--model package.module:factory --checkpoint FILE --contract contract.json"
        )
    spec = ModelSpec(data["arch"]["name"], dict(data["arch"]["kwargs"]))
    contract = Contract.from_dict(data["contract"])
    module = build_model(spec, contract.channels, contract.num_outputs)
    load_state(module, data["state_dict"], path)
    return module.eval(), spec, contract


def load_state(module, state_dict: dict, path: Path) -> None:
    """Load weights strictly; a shape or key mismatch names the checkpoint and the first problem."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(
            f"checkpoint {path} does not fit the model architecture ({first})"
        ) from None
