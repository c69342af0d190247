"""Where data lives: the one place that resolves dataset paths.

`EDGEMED_DATA` (a directory) first, else `../shared/datasets` (beside the current directory or
beside the source checkout) when it exists. The word `embedded` names the chest X-ray subset that
ships inside the package, so the first run needs no download.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgemed.errors import InputError

ENV = "EDGEMED_DATA"
EMBEDDED = "embedded"
# The datasets the tests, README and benchmarks refer to by name.
KNOWN = {
    "pneumoniamnist": "pneumoniamnist_subset.npz",
    "brain_mri": "brain_mri",
    "nih_chestxray14": "nih_chestxray14_1000",
}


def embedded_dataset_path() -> Path:
    """The bundled PneumoniaMNIST subset (CC BY 4.0, MedMNIST v2)."""
    return Path(__file__).resolve().parent.parent / "resources" / "pneumoniamnist_subset.npz"


def data_path(arg: str | Path) -> Path:
    """A `--data`/`--calib` argument as a path: `embedded` is the bundled subset."""
    return embedded_dataset_path() if str(arg) == EMBEDDED else Path(arg).expanduser()


def datasets_root() -> Path | None:
    """The datasets directory: `$EDGEMED_DATA`, else `../shared/datasets` if present, else None."""
    env = os.environ.get(ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise InputError(f"{ENV}={env} is not a directory; point it at your datasets folder")
        return root
    checkout = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), checkout):
        candidate = base.parent / "shared" / "datasets"
        if candidate.is_dir():
            return candidate
    return None


def find_dataset(name: str) -> Path | None:
    """A known dataset (`pneumoniamnist`, `brain_mri`) under the datasets root, or None."""
    root = datasets_root()
    if root is None:
        return None
    p = root / KNOWN[name]
    return p if p.exists() else None


def missing_reason(name: str) -> str:
    """Why `find_dataset(name)` is None, in one line (for skips and errors)."""
    root = os.environ.get(ENV)
    where = f"{ENV}={root}" if root else f"{ENV} unset and no ../shared/datasets"
    return f"dataset {KNOWN[name]} not found ({where}); set {ENV} to the folder that holds it"


def require_dataset(name: str) -> Path:
    """A known dataset's path, or an InputError saying how to point edgemed at it."""
    path = find_dataset(name)
    if path is None:
        raise InputError(missing_reason(name))
    return path
