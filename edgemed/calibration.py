"""Calibration sets: a recipe (calibration/*.toml) or a data path, resolved to images + a manifest.

Checks before anything is calibrated: enough images, more than one class, no overlap with the
model's test split (by content hash), and pixel statistics close to the training statistics.
There is no built-in or random fallback data: INT8 without calibration images is an error.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgemed.contract import Contract
from edgemed.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_COUNT = 256
DEFAULT_MIN_IMAGES = 32


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


def load_recipe(path: Path, data_root: Path | None = None) -> CalibrationRecipe:
    """Parse a recipe TOML; `data` is relative to `data_root` (default: the current directory)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"calibration recipe {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"calibration recipe {path} is not valid TOML ({exc})") from None
    allowed = set(CalibrationRecipe.__dataclass_fields__)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InputError(
            f"calibration recipe {path} has unknown keys {unknown}; allowed: {', '.join(sorted(allowed))}"
        )
    if "data" not in raw:
        raise InputError(f"calibration recipe {path} does not say which data (key 'data')")
    raw["data"] = str((Path(data_root) if data_root else Path.cwd()) / raw["data"])
    raw.setdefault("name", Path(path).stem)
    try:
        return CalibrationRecipe(**raw)
    except TypeError as exc:
        raise InputError(f"calibration recipe {path} is malformed ({exc})") from None


def recipe_from_arg(calib: str, options: dict) -> tuple[CalibrationRecipe, str | None]:
    """`--calib` is a recipe .toml or a data path (then: train split, default count, balanced, seed 0)."""
    p = Path(calib).expanduser()
    if p.suffix == ".toml":
        return load_recipe(p, options.get("data_root")), str(p.resolve()) if p.exists() else None
    count = int(options.get("calib_count") or DEFAULT_COUNT)
    return CalibrationRecipe(data=str(p), count=count, name="data-path"), None


def resolve_calibration(
    calib: str, contract: Contract, card: dict | None, options: dict
) -> CalibrationSet:
    """Resolve `--calib` to a checked CalibrationSet for this model's contract."""
    from edgemed.data import load_dataset

    recipe, recipe_path = recipe_from_arg(calib, options)
    if not Path(recipe.data).exists():
        raise InputError(
            f"calibration data {recipe.data} does not exist; fix the recipe's 'data' or --data-root"
        )
    cfg = _split_config(recipe.data, card)
    ds = load_dataset(recipe.data, contract.input_size, contract.channels, **cfg)
    split = ds.split(recipe.split)
    idx = select(split.labels, recipe.count, recipe.balance, recipe.seed)
    chosen = split.take(idx)
    _check_count_and_classes(recipe, chosen.labels, ds.class_names)
    _check_test_overlap(chosen.hashes, card, ds)
    warnings = _stat_warnings(contract, chosen.images)
    manifest = {
        "recipe": recipe.to_dict(),
        "recipe_path": recipe_path,
        "data_hash": ds.data_hash,
        "class_counts": {
            ds.class_names[int(k)]: int(v)
            for k, v in zip(*np.unique(chosen.labels, return_counts=True), strict=True)
        },
        "samples": [{"id": i, "sha256": h} for i, h in zip(chosen.ids, chosen.hashes, strict=True)],
        "warnings": list(warnings),
    }
    for w in warnings:
        print(f"edgemed: warning: {w}", file=sys.stderr)
    return CalibrationSet(chosen.images, chosen.labels, manifest, warnings)


def select(labels: np.ndarray, count: int, balance: bool, seed: int) -> np.ndarray:
    """Seeded choice of `count` indices; with `balance`, as equal per class as the data allows."""
    rng = np.random.default_rng(seed)
    flat = labels if labels.ndim == 1 else labels.argmax(axis=1)
    if not balance:
        return np.sort(rng.permutation(len(flat))[:count])
    classes = np.unique(flat)
    per = [rng.permutation(np.nonzero(flat == c)[0]) for c in classes]
    out: list[int] = []
    i = 0
    while len(out) < min(count, len(flat)):
        for p in per:
            if i < len(p) and len(out) < count:
                out.append(int(p[i]))
        i += 1
    return np.sort(np.array(out, dtype=np.int64))


def _split_config(data: str, card: dict | None) -> dict:
    """Same split settings as training when calibrating on the model's own data (same test split)."""
    d = (card or {}).get("data") or {}
    if d.get("path") and Path(d["path"]).resolve() == Path(data).resolve():
        s = d.get("split") or {}
        cfg = {"seed": s.get("seed", 0), "near_duplicates": s.get("near_duplicates", False)}
        if "fractions" in s:
            cfg["fractions"] = tuple(s["fractions"])
        return cfg
    return {}


def _check_count_and_classes(recipe: CalibrationRecipe, labels: np.ndarray, class_names) -> None:
    if len(labels) < recipe.min_images:
        raise InputError(
            f"calibration set has {len(labels)} images, fewer than the minimum {recipe.min_images}; "
            "point --calib at more images"
        )
    flat = labels if labels.ndim == 1 else labels.argmax(axis=1)
    present = np.unique(flat)
    if len(present) < 2:
        raise InputError(
            f"calibration set holds only one class ({class_names[int(present[0])]}); "
            "INT8 ranges must see every class: add images of the other classes"
        )


def _check_test_overlap(hashes: tuple[str, ...], card: dict | None, ds) -> None:
    """Refuse calibration images that are also in the model's test split (by content hash)."""
    d = (card or {}).get("data") or {}
    if d.get("data_hash") != ds.data_hash:
        return
    test = set(ds.split("test").hashes) if "test" in ds.splits and len(ds.splits["test"]) else set()
    overlap = sum(h in test for h in hashes)
    if overlap:
        raise InputError(
            f"{overlap} calibration images are also in the model's test split; calibrate on the train split"
        )


def _stat_warnings(contract: Contract, images: np.ndarray) -> tuple[str, ...]:
    """Warn when normalized calibration pixels are far from zero-mean/unit-std (a preprocessing mismatch)."""
    x = contract.normalize(images)
    axes = (0, 2, 3) if contract.layout == "NCHW" else (0, 1, 2)
    mean, std = x.mean(axis=axes), x.std(axis=axes)
    out = []
    if np.any(np.abs(mean) > 1.0) or np.any((std < 0.33) | (std > 3.0)):
        out.append(
            f"calibration pixel statistics are far from the training statistics (normalized mean "
            f"{np.round(mean, 2).tolist()}, std {np.round(std, 2).tolist()}; expected ~0 and ~1): "
            "check that these images are preprocessed like the training images"
        )
    return tuple(out)
