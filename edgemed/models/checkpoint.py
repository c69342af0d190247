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


def load_checkpoint(path: Path, factory: str | None = None) -> tuple[object, ModelSpec, Contract]:
    """Rebuild the module from an edgemed checkpoint: (module in eval mode, spec, contract).

    The stored architecture must be a zoo name (or a compressed zoo model); a stored
    `package.module:factory` is refused unless it equals `factory`, the one the user named.
    """
    data = read_checkpoint(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(
            f"{path} is not an edgemed checkpoint; for a plain state dict use "
            "--model package.module:factory --checkpoint FILE --contract contract.json"
        )
    spec, contract = checkpoint_spec(data, path)
    module = build_model(
        spec, contract.channels, contract.num_outputs, factory, origin=f"checkpoint {path}"
    )
    load_state(module, data.get("state_dict"), path)
    return module.eval(), spec, contract


def checkpoint_spec(data: dict, path: Path) -> tuple[ModelSpec, Contract]:
    """The stored architecture spec and contract, checked for shape (not yet for trust)."""
    arch = data.get("arch")
    if not isinstance(arch, dict) or not isinstance(arch.get("kwargs", {}), dict):
        raise InputError(f"checkpoint {path} has no valid 'arch' entry; re-train or re-copy it")
    if not isinstance(data.get("contract"), dict):
        raise InputError(f"checkpoint {path} has no valid 'contract' entry; re-train or re-copy it")
    output = arch.get("output")
    if output is not None and not isinstance(output, (str, int)):
        raise InputError(f"checkpoint {path} has an invalid 'output' entry; re-train or re-copy it")
    spec = ModelSpec(arch.get("name"), dict(arch.get("kwargs", {})), output)
    return spec, Contract.from_dict(data["contract"])


def load_state(module, state_dict: dict, path: Path) -> None:
    """Load weights strictly; a shape or key mismatch names the checkpoint and the first problem."""
    if not isinstance(state_dict, dict):
        raise InputError(f"checkpoint {path} holds no state dict; re-train or re-copy it")
    try:
        module.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0]
        raise InputError(
            f"checkpoint {path} does not fit the model architecture ({first})"
        ) from None
