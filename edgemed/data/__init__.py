"""Datasets: MedMNIST npz files and one-folder-per-class image trees, with duplicate-aware splits.

`load_dataset(path, ...)` returns a `Dataset` whose splits hold uint8 images (N, H, W, C) already
resized by the contract's rule, labels, sample ids and per-sample SHA-256 hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemed.data.locate import data_path, embedded_dataset_path
from edgemed.data.split import DuplicateReport
from edgemed.errors import InputError

__all__ = [
    "Dataset",
    "Split",
    "card_split_config",
    "embedded_dataset_path",
    "load_dataset",
    "split_kwargs",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split: uint8 images (N, H, W, C), labels (N,) or (N, K), ids and content hashes."""

    images: np.ndarray
    labels: np.ndarray
    ids: tuple[str, ...]
    hashes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> Split:
        idx = np.asarray(idx, dtype=np.int64)
        return Split(
            self.images[idx],
            self.labels[idx],
            tuple(self.ids[i] for i in idx),
            tuple(self.hashes[i] for i in idx),
        )


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset with its splits, class names, task and a hash of the source data."""

    name: str
    path: str
    kind: str
    class_names: tuple[str, ...]
    task: str
    splits: dict[str, Split]
    data_hash: str
    duplicates: DuplicateReport | None = None
    split_config: dict = field(default_factory=dict)

    def split(self, name: str) -> Split:
        if name not in self.splits or len(self.splits[name]) == 0:
            raise InputError(
                f"dataset {self.path} has no '{name}' split (or it is empty); "
                f"available: {', '.join(k for k, v in self.splits.items() if len(v))}"
            )
        return self.splits[name]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "kind": self.kind,
            "class_names": list(self.class_names),
            "task": self.task,
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "data_hash": self.data_hash,
            "duplicates": self.duplicates.to_dict() if self.duplicates else None,
            "split": dict(self.split_config),
        }


def load_dataset(
    path: str | Path,
    image_size: tuple[int, int] | None = None,
    channels: int = 1,
    seed: int = 0,
    near_duplicates: bool = False,
    fractions: tuple[float, float, float] = (0.6, 0.15, 0.25),
) -> Dataset:
    """Load an npz (MedMNIST layout) or an image folder tree (one sub-folder per class).

    Folder trees are split duplicate-aware (byte-identical files, and with `near_duplicates`
    perceptually near-identical ones, stay in one split), class-stratified and seeded.
    """
    p = data_path(path)
    if not p.exists():
        raise InputError(
            f"data path {p} does not exist; pass an .npz file or a folder of class folders"
        )
    if p.is_file() and p.suffix == ".npz":
        from edgemed.data.npz import load_npz  # lazy: import cycle with its package

        return load_npz(p, image_size, channels)
    if p.is_dir():
        from edgemed.data.folder import load_folder  # lazy: import cycle with its package

        return load_folder(p, image_size, channels, seed, near_duplicates, fractions)
    raise InputError(f"data path {p} is neither an .npz file nor a folder of class folders")


def split_kwargs(split: dict | None) -> dict:
    """`load_dataset` keyword arguments that reproduce a recorded split (a card's `data.split`)."""
    s = split or {}
    kwargs = {"seed": s.get("seed", 0), "near_duplicates": s.get("near_duplicates", False)}
    if "fractions" in s:
        kwargs["fractions"] = tuple(s["fractions"])
    return kwargs


def model_dataset(
    card: dict | None, data: str | None, size: tuple[int, int], channels: int, card_split: bool
) -> Dataset | None:
    """The model's own data as its card records it (path, split, content hash), or `data` when
    given (then with the card's split settings only if `card_split`); None when neither names any.
    A card's data whose hash changed is refused, so nothing is measured on other data silently."""
    recorded = (card or {}).get("data") or {}
    path = data or recorded.get("path")
    if not path:
        return None
    cfg = recorded.get("split") if (card_split or not data) else None
    ds = load_dataset(path, size, channels, **split_kwargs(cfg))
    if not data and recorded.get("data_hash") not in (None, ds.data_hash):
        raise InputError(
            f"the training data at {path} changed since the model was trained (hash differs); "
            "pass --data to choose the data explicitly"
        )
    return ds


def card_split_config(data: str | Path, card: dict | None) -> dict:
    """The card's split settings when `data` is the model's own training data, else {} (defaults)."""
    d = (card or {}).get("data") or {}
    if d.get("path") and Path(d["path"]).resolve() == Path(data).resolve():
        return split_kwargs(d.get("split"))
    return {}
