"""`--init PATH`: start training from weights the user has (transfer learning).

Accepted: a plain state dict (torchvision/timm checkpoint of the same architecture family, also
nested under "state_dict"/"model"/"model_state_dict"), an edgemed `model.pt`, or a `.safetensors`
file when the `safetensors` package is installed. Loading is weights-only (`weights_only=True`,
never a pickled module), bounded in size, and refuses NaN/Inf tensors and files of which no
tensor fits the model. Each tensor of the model is reported as loaded, adapted (a first
convolution of another input-channel count folded by summing / spreading over channels) or
re-initialised (a classifier head of another size); source tensors that fit nothing are ignored.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import InputError

MAX_INIT_BYTES = 2 * 1024**3  # a ResNet-50 is ~100 MB; 2 GiB bounds a hostile file, not a real one
_NESTED = ("state_dict", "model_state_dict", "model")


@dataclass(frozen=True)
class InitReport:
    path: str
    sha256: str
    loaded: tuple[str, ...]
    adapted: tuple[str, ...]
    reinitialised: tuple[str, ...]
    ignored: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "loaded": len(self.loaded),
            "adapted": list(self.adapted),
            "reinitialised": list(self.reinitialised),
            "ignored": list(self.ignored[:50]),
            "ignored_count": len(self.ignored),
        }

    def summary(self) -> str:
        return (
            f"init {self.path}: {len(self.loaded)} tensors loaded, {len(self.adapted)} adapted, "
            f"{len(self.reinitialised)} re-initialised, {len(self.ignored)} ignored"
        )


def read_init_weights(path: str | Path, limit: int = MAX_INIT_BYTES) -> tuple[dict, str]:
    """The file's tensors by name (checked finite) and its sha256; every problem is an InputError."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--init {p}: no such file")
    size = p.stat().st_size
    if size > limit:
        raise InputError(
            f"--init {p} is {size / 1e6:.0f} MB, over the {limit / 1e6:.0f} MB limit for a weights file"
        )
    data = p.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    raw = _load_safetensors(p, data) if p.suffix == ".safetensors" else _load_torch(p)
    state = _state_dict_of(raw, p)
    _check_finite(state, p)
    return state, sha


def _load_torch(p: Path) -> object:
    import torch

    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not zipfile.is_zipfile(p):
            raise InputError(f"--init {p} is corrupt or not a torch weights file") from None
        raise InputError(
            f"--init {p} is not a weights-only file (it pickles objects other than tensors, e.g. "
            "a whole module); save the state dict: torch.save(model.state_dict(), path)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"--init {p} is corrupt or not a torch weights file ({first[:160]})"
        ) from None


def _load_safetensors(p: Path, data: bytes) -> dict:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load
    except ImportError:
        raise InputError(
            f"--init {p} is a .safetensors file but the safetensors package is not installed: "
            "pip install safetensors (or save the weights with torch.save)"
        ) from None
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise InputError(f"--init {p} is not a valid safetensors file ({exc})") from None


def _state_dict_of(raw: object, p: Path) -> dict:
    """The tensors of a plain, nested (timm/lightning style) or edgemed state dict."""
    import torch

    for key in _NESTED:  # an edgemed model.pt nests it under "state_dict", as timm files may
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    if not isinstance(raw, dict):
        raise InputError(f"--init {p} holds no state dict (found {type(raw).__name__})")
    state = {}
    for k, v in raw.items():
        if isinstance(k, str) and isinstance(v, torch.Tensor):
            state[k.removeprefix("module.")] = v
    if not state:
        raise InputError(f"--init {p} holds no named tensors")
    return state


def _check_finite(state: dict, p: Path) -> None:
    import torch

    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise InputError(f"--init {p}: tensor {k!r} holds NaN or Inf values; refusing it")


def head_names(module) -> frozenset[str]:
    """Parameter names of the classifier head: the last Linear layer (else the last layer with
    parameters) in module order."""
    import torch

    layers = [(n, m) for n, m in module.named_modules() if list(m.parameters(recurse=False))]
    linear = [(n, m) for n, m in layers if isinstance(m, torch.nn.Linear)]
    name, mod = (linear or layers)[-1]
    return frozenset(f"{name}.{p}" if name else p for p, _ in mod.named_parameters(recurse=False))


def apply_init(module, state: dict, sha: str, path: str | Path) -> InitReport:
    """Copy the fitting tensors of `state` into `module`; refuse when none fits."""
    target = module.state_dict()
    head = head_names(module)
    merged, loaded, adapted, reinit = dict(target), [], [], []
    for name, t in target.items():
        src = state.get(name)
        if src is None:
            continue
        folded = None if src.shape == t.shape else _channel_fold(src, t)
        if src.shape == t.shape:
            merged[name] = src.to(t.dtype)
            loaded.append(name)
        elif folded is not None:
            merged[name] = folded.to(t.dtype)
            adapted.append(name)
        elif name in head:
            reinit.append(name)
    used = set(loaded) | set(adapted) | set(reinit)
    ignored = tuple(sorted(k for k in state if k not in used))
    # A counter (num_batches_tracked) or a head bias fits any model: only backbone weights count.
    if not any(merged[n].is_floating_point() and n not in head for n in loaded + adapted):
        raise InputError(
            f"--init {path}: no tensor matches the model (another architecture? {len(state)} "
            f"tensors such as {next(iter(state))!r}, the model has e.g. {next(iter(target))!r})"
        )
    module.load_state_dict(merged, strict=True)
    return InitReport(str(path), sha, tuple(loaded), tuple(adapted), tuple(reinit), ignored)


def _channel_fold(src, t):
    """A 4-D conv weight of another input-channel count: 3 -> 1 sums over the input channels
    (the response to a grey image is unchanged), 1 -> C spreads the weight evenly over C."""
    if src.ndim != 4 or t.ndim != 4 or src.shape[0] != t.shape[0] or src.shape[2:] != t.shape[2:]:
        return None
    if t.shape[1] == 1:
        return src.sum(dim=1, keepdim=True)
    if src.shape[1] == 1:
        return src.repeat(1, t.shape[1], 1, 1) / t.shape[1]
    return None
