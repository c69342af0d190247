"""The calibration stage: `--calib` (a recipe or a data path) resolved to images + a manifest.

Checks before anything is calibrated: enough images, more than one class, no overlap with the
model's test split (by content hash), and pixel statistics close to the training statistics.
There is no built-in or random fallback data: INT8 without calibration images is an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgemed.calibration import (
    DEFAULT_COUNT,
    CalibrationOptions,
    CalibrationRecipe,
    CalibrationSet,
)
from edgemed.contract import Contract
from edgemed.data import card_split_config, load_dataset
from edgemed.data.locate import data_path, datasets_root
from edgemed.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_recipe(path: Path, data_root: Path | None = None) -> CalibrationRecipe:
    """Parse a recipe TOML; `data` is relative to `data_root` (default: see `_recipe_base`)."""
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
    if not isinstance(raw.get("data"), str):
        raise InputError(f"calibration recipe {path} does not say which data (key 'data')")
    raw["data"] = str(_recipe_base(data_root) / raw["data"])
    raw.setdefault("name", Path(path).stem)
    try:
        return CalibrationRecipe(**raw)
    except TypeError as exc:
        raise InputError(f"calibration recipe {path} is malformed ({exc})") from None


def _recipe_base(data_root: Path | str | None) -> Path:
    """--data-root, else the datasets root (EDGEMED_DATA or ../shared/datasets), else the cwd."""

    if data_root:
        return Path(data_root)
    return datasets_root() or Path.cwd()


def recipe_from_arg(
    calib: str, opts: CalibrationOptions = CalibrationOptions()
) -> tuple[CalibrationRecipe, str | None]:
    """`--calib` is a recipe .toml or a data path (then: train split, default count, balanced,
    seed 0 unless `--calib-seed`)."""

    p = data_path(calib)
    if p.suffix == ".toml":
        return load_recipe(p, opts.data_root), str(p.resolve()) if p.exists() else None
    count = DEFAULT_COUNT if opts.count is None else opts.count
    seed = 0 if opts.seed is None else opts.seed
    return CalibrationRecipe(data=str(p), count=count, seed=seed, name="data-path"), None


def calibration_for_export(
    calib: str | None,
    precision: str,
    contract: Contract,
    card: dict | None,
    opts: CalibrationOptions = CalibrationOptions(),
    *,
    static: bool = True,
    fp16_calibration: bool = False,
) -> CalibrationSet | None:
    """The calibration set an export needs: static INT8 (`static`: not dynamic INT8), and FP16
    where the backend measures activation magnitudes (`fp16_calibration`, TensorRT); then
    `--calib` is required.

    Calibration flags given where nothing is calibrated (fp32, fp16, dynamic INT8) are refused.
    """
    static_int8 = precision == "int8" and static
    if precision == "fp16" and fp16_calibration:
        if not calib:
            raise InputError(
                "FP16 for this target keeps in FP32 the layers whose activations would overflow "
                "FP16, measured on calibration images: pass --calib RECIPE.toml or DATA_PATH"
            )
    elif not static_int8:
        given = (["--calib"] if calib is not None else []) + opts.given()
        if given:
            what = "dynamic INT8" if precision == "int8" else precision
            raise InputError(
                f"{', '.join(given)} applies only to static INT8 calibration, not {what}; drop it"
            )
        return None
    if not calib:
        raise InputError(
            "INT8 needs calibration images: pass --calib RECIPE.toml or --calib DATA_PATH"
        )
    for flag, value, key in (
        ("--calib-count", opts.count, "count"),
        ("--calib-seed", opts.seed, "seed"),
    ):
        if value is not None and Path(calib).suffix == ".toml":
            raise InputError(f"{flag} applies to --calib DATA_PATH; a recipe sets '{key}' itself")
    return resolve_calibration(calib, contract, card, opts)


def resolve_calibration(
    calib: str,
    contract: Contract,
    card: dict | None,
    opts: CalibrationOptions = CalibrationOptions(),
) -> CalibrationSet:
    """Resolve `--calib` to a checked CalibrationSet for this model's contract."""

    recipe, recipe_path = recipe_from_arg(calib, opts)
    if not Path(recipe.data).exists():
        raise InputError(
            f"calibration data {recipe.data} does not exist; fix the recipe's 'data' or --data-root"
        )
    cfg = _split_config(recipe.data, card)
    ds = load_dataset(recipe.data, contract.input_size, contract.channels, **cfg)
    full = ds.split(recipe.split)
    split, skipped = _without_test_images(full, card, ds, contract)
    if len(skipped) == len(full):
        raise InputError(
            f"{len(skipped)} of {len(full)} images of the {recipe.split} split of {recipe.data} are "
            "also in the model's test split (same content hash); calibrate on training images "
            'only (e.g. split = "train")'
        )
    idx = select(split.labels, recipe.count, recipe.balance, recipe.seed)
    chosen = split.take(idx)
    _check_count_and_classes(recipe, chosen.labels, ds.class_names)
    _check_test_overlap(chosen.hashes, card, ds, contract)  # a guard: sampling skipped them
    warnings = _stat_warnings(contract, chosen.images) + _skip_warning(skipped, recipe.split)
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
        "skipped_test_overlap": [{"id": i, "sha256": h} for i, h in skipped],
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

    return card_split_config(data, card)


def _check_count_and_classes(recipe: CalibrationRecipe, labels: np.ndarray, class_names) -> None:
    if len(labels) < recipe.min_images:
        raise InputError(
            f"calibration set has {len(labels)} images, fewer than the minimum {recipe.min_images}; "
            "raise the recipe's 'count' (or --calib-count) or point --calib at more images"
        )
    flat = labels if labels.ndim == 1 else labels.argmax(axis=1)
    present = np.unique(flat)
    if len(present) < 2:
        raise InputError(
            f"calibration set holds only one class ({class_names[int(present[0])]}); "
            "INT8 ranges must see every class: add images of the other classes"
        )


def _without_test_images(split, card: dict | None, ds, contract: Contract):
    """The split minus images whose content is also in the model's test split (public splits
    often share a few), and the (id, sha256) of those skipped, so sampling can never leak."""
    test = _model_test_hashes(card, ds, contract)
    keep = np.array([h not in test for h in split.hashes], dtype=bool)
    skipped = [(i, h) for i, h, k in zip(split.ids, split.hashes, keep, strict=True) if not k]
    return (split.take(np.nonzero(keep)[0]) if skipped else split), skipped


def _skip_warning(skipped: list, split_name: str) -> tuple[str, ...]:
    if not skipped:
        return ()
    return (
        f"skipped {len(skipped)} image(s) of the {split_name} split whose content is also in the "
        "model's test split (listed in calibration.json, skipped_test_overlap); the dataset's own "
        "splits share images, so its test metrics are optimistic",
    )


def _check_test_overlap(hashes: tuple[str, ...], card: dict | None, ds, contract: Contract) -> None:
    """Refuse calibration images that are also in the model's test split (by content hash).

    The test split is the one recorded in the model card (recomputed with its split settings),
    also when the calibration images come from another file or folder.
    """
    test = _model_test_hashes(card, ds, contract)
    overlap = sum(h in test for h in hashes)
    if overlap:
        raise InputError(
            f"{overlap} of {len(hashes)} calibration images are also in the model's test split "
            '(same content hash); calibrate on training images only (e.g. split = "train")'
        )


def _model_test_hashes(card: dict | None, ds, contract: Contract) -> set[str]:

    d = (card or {}).get("data") or {}
    if d.get("data_hash") == ds.data_hash:
        model_ds = ds
    elif d.get("path") and Path(d["path"]).exists():
        model_ds = load_dataset(
            d["path"], contract.input_size, contract.channels, **_split_config(d["path"], card)
        )
        if model_ds.data_hash != d.get("data_hash"):
            return set()  # the model's data changed since training: its test split is unknown
    else:
        return set()
    test = model_ds.splits.get("test")
    return set(test.hashes) if test is not None else set()


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
