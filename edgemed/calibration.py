"""Calibration nouns: the `--calib` options, a recipe (calibration/*.toml), a resolved set.

The stage that resolves `--calib` to a `CalibrationSet` (and checks it) is
`edgemed.pipeline.calibration`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from edgemed.contract import Contract
from edgemed.errors import InputError

DEFAULT_COUNT = 256
DEFAULT_MIN_IMAGES = 32


@dataclass(frozen=True)
class CalibrationOptions:
    """The flags that shape `--calib`: `--calib-count` and `--calib-seed` (how many images, and
    which, when it is a data path) and `--data-root` (what a recipe's 'data' is relative to)."""

    count: int | None = None
    data_root: str | None = None
    seed: int | None = None

    def given(self) -> list[str]:
        """The flags set, as the user wrote them."""
        flags = (("--calib-count", self.count), ("--data-root", self.data_root),
                 ("--calib-seed", self.seed))  # fmt: skip
        return [f for f, v in flags if v is not None]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CalibrationRecipe:
    """Which images calibrate: data path, split, how many, class balance, seed."""

    data: str
    split: str = "train"
    count: int = DEFAULT_COUNT
    balance: bool = True
    seed: int = 0
    min_images: int = DEFAULT_MIN_IMAGES
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        where = f"calibration recipe {self.name or self.data}"
        for key in ("count", "min_images", "seed"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "seed" else 1):
                raise InputError(f"{where}: '{key}' must be a positive integer, got {v!r}")
        if self.split not in ("train", "val", "test"):
            raise InputError(f"{where}: 'split' must be train, val or test, got {self.split!r}")
        if not isinstance(self.balance, bool):
            raise InputError(f"{where}: 'balance' must be true or false, got {self.balance!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CalibrationSet:
    """Resolved calibration images (uint8 N,H,W,C at the contract size) and their manifest."""

    images: np.ndarray
    labels: np.ndarray
    manifest: dict
    warnings: tuple[str, ...] = ()

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()

    def batches(self, contract: Contract, batch: int = 32) -> Iterator[np.ndarray]:
        """Normalized float32 batches in the contract's layout."""
        for i in range(0, len(self.images), batch):
            yield contract.normalize(self.images[i : i + batch])

    def inputs(self, contract: Contract) -> np.ndarray:
        return contract.normalize(self.images)
