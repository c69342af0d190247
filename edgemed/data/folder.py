"""One-folder-per-class image trees (JPEG/PNG of any mode, single-frame DICOM, names with spaces),
split duplicate-aware."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgemed.data import Dataset, Split
from edgemed.data.dicom import DICOM_SUFFIXES, dicom_pixels
from edgemed.data.images import IMAGE_SUFFIXES, image_from_pixels, read_image
from edgemed.data.split import (
    DuplicateReport,
    conflicting_label_groups,
    duplicate_groups,
    grouped_split,
)
from edgemed.errors import InputError

DEFAULT_FOLDER_SIZE = (128, 128)
# Measured on brain_mri: 0 bits -> 15 near copies, 1 -> 22 (1 group spanning both classes),
# 4 -> 66 (5 cross-class groups, mostly false matches). 1 bit keeps false merges rare.
NEAR_DUPLICATE_BITS = 1


def list_class_files(root: Path) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """Class names (sorted sub-folder names) and (file, class index) pairs; refuses empty/one-class."""
    classes = tuple(
        sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    )
    files = [
        (f, ci)
        for ci, c in enumerate(classes)
        for f in sorted((root / c).rglob("*"))
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
    ]
    counts = {c: sum(1 for _, ci in files if ci == i) for i, c in enumerate(classes)}
    if not files:
        raise InputError(
            f"{root} holds no images; expected one sub-folder per class with PNG/JPEG/TIFF or DICOM files"
        )
    populated = [c for c, n in counts.items() if n]
    if len(populated) < 2:
        raise InputError(
            f"{root} has images for only one class ({', '.join(populated)}); "
            "a classifier needs at least two class folders with images"
        )
    return classes, files


def content_hash(f: Path) -> str:
    """SHA-256 of a file's bytes; of a DICOM image's decoded pixels (and shape), because two
    exports of one image differ in their UIDs and dates, and are still one image for a split."""
    if f.suffix.lower() not in DICOM_SUFFIXES:
        return hashlib.sha256(f.read_bytes()).hexdigest()
    return _pixel_hash(dicom_pixels(f))


def _pixel_hash(arr: np.ndarray) -> str:
    return hashlib.sha256(f"dicom-pixels {arr.shape}\n".encode() + arr.tobytes()).hexdigest()


def _hashed_image(f: Path, size: tuple[int, int], channels: int) -> tuple[str, np.ndarray]:
    """(content hash, image) with one decode of a DICOM file."""
    if f.suffix.lower() not in DICOM_SUFFIXES:
        return content_hash(f), read_image(f, size, channels)
    arr = dicom_pixels(f)
    return _pixel_hash(arr), image_from_pixels(arr, f, size, channels)


def load_folder(
    root: Path,
    image_size: tuple[int, int] | None,
    channels: int,
    seed: int,
    near_duplicates: bool,
    fractions: tuple[float, float, float],
) -> Dataset:
    """Read every image, hash its bytes, group duplicates, and split whole groups."""
    size = tuple(image_size) if image_size else DEFAULT_FOLDER_SIZE
    classes, files = list_class_files(root)
    pairs = [_hashed_image(f, size, channels) for f, _ in files]
    hashes = [h for h, _ in pairs]
    images = np.stack([im for _, im in pairs])
    labels = np.array([ci for _, ci in files], dtype=np.int64)
    ids = tuple(str(f.relative_to(root)) for f, _ in files)
    bits = NEAR_DUPLICATE_BITS if near_duplicates else -1
    groups, exact, near = duplicate_groups(hashes, images, bits)
    n_groups = len({g for g in groups.tolist() if (groups == g).sum() > 1})
    report = DuplicateReport(
        exact_groups=len({h for h in hashes if hashes.count(h) > 1}),
        exact_redundant=exact,
        near_groups=n_groups,
        near_redundant=near,
        conflicting_labels=conflicting_label_groups(labels, groups),
    )
    frac = dict(zip(("train", "val", "test"), fractions, strict=True))
    index = grouped_split(labels, groups, frac, seed)
    everything = Split(images, labels, ids, tuple(hashes))
    splits = {name: everything.take(idx) for name, idx in index.items()}
    data_hash = hashlib.sha256(
        "\n".join(sorted(f"{i} {h}" for i, h in zip(ids, hashes, strict=True))).encode()
    ).hexdigest()
    config = {
        "seed": seed,
        "fractions": list(fractions),
        "near_duplicates": near_duplicates,
        "image_size": list(size),
    }
    task = "binary" if len(classes) == 2 else "multiclass"
    return Dataset(
        root.name, str(root.resolve()), "folder", classes, task, splits, data_hash, report, config
    )
