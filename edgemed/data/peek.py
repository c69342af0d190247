"""What a dataset will give the model (size, channels, task, classes), without reading images.

`edgemed train` probes the model with this before the (possibly minutes-long) data load, so a
model that cannot take the data fails at once. Anything unreadable returns None: the full load
then reports it properly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemed.contract import Contract
from edgemed.data.folder import DEFAULT_FOLDER_SIZE
from edgemed.data.locate import data_path
from edgemed.data.npz import KNOWN_CLASSES, npy_shape


def peek_contract(path: str, image_size: tuple[int, int] | None, channels: int) -> Contract | None:
    """The contract shape the data implies (default normalization), or None if not cheap to tell."""
    p = data_path(path)
    try:
        if p.is_file() and p.suffix == ".npz":
            return _peek_npz(p, image_size, channels)
        if p.is_dir():
            return _peek_folder(p, image_size, channels)
    except Exception:  # any problem here is the full loader's to report, with its own message
        return None
    return None


def native_channels(path: str) -> int:
    """3 for an npz of RGB images (N, H, W, 3), else 1 (grey npz, folders, anything unreadable:
    the full loader reports those)."""
    try:
        p = data_path(path)
        if p.is_file() and p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as f:
                shape = npy_shape(f.zip, "train_images")
            return 3 if len(shape) == 4 and shape[3] == 3 else 1
    except Exception:  # the full load names the problem
        return 1
    return 1


def _contract(size, channels: int, names: tuple[str, ...], task: str) -> Contract:
    return Contract(
        input_size=tuple(int(v) for v in size),
        channels=channels,
        class_names=names,
        task=task,
        mean=(0.5,) * channels,
        std=(0.5,) * channels,
    )


def _peek_npz(p: Path, image_size, channels: int) -> Contract | None:

    with np.load(p, allow_pickle=False) as f:
        shape = npy_shape(f.zip, "train_images")
        labels = np.asarray(f["train_labels"])
    if labels.ndim == 2 and labels.shape[1] > 1:
        task, k = "multilabel", labels.shape[1]
    else:
        k = max(int(labels.max()) + 1, 2)
        task = "binary" if k == 2 else "multiclass"
    names = KNOWN_CLASSES.get(p.stem.split("_")[0].lower()) or ()
    if len(names) != k:
        names = tuple(f"class_{i}" for i in range(k))
    return _contract(image_size or shape[1:3], channels, names, task)


def _peek_folder(p: Path, image_size, channels: int) -> Contract | None:

    classes = tuple(
        sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    )
    if len(classes) < 2:
        return None
    task = "binary" if len(classes) == 2 else "multiclass"
    return _contract(image_size or DEFAULT_FOLDER_SIZE, channels, classes, task)
