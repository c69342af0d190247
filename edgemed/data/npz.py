"""MedMNIST-layout npz reader: {train,val,test}_{images,labels}; labels (N, 1), (N,) or (N, K)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from edgemed.data import SPLITS, Dataset, Split
from edgemed.data.images import resize_array, to_uint8
from edgemed.errors import InputError
from edgemed.fileio import sha256_file
from edgemed.imagecheck import check_content, check_finite, check_pixel_count

# Class names of MedMNIST sets we know by file name; others get class_0..class_K.
KNOWN_CLASSES = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "breastmnist": ("malignant", "normal/benign"),
}


def load_npz(path: Path, image_size: tuple[int, int] | None, channels: int) -> Dataset:
    """Read a MedMNIST npz into a Dataset (resizing only when `image_size` differs)."""
    arrays = _read_arrays(path)
    splits = {}
    for name in SPLITS:
        images, labels = arrays[f"{name}_images"], arrays[f"{name}_labels"]
        if len(images) != len(labels):
            raise InputError(
                f"{path}: {name}_images has {len(images)} rows but {name}_labels has {len(labels)}"
            )
        check_finite(images, f"{path}: {name}_images")
        images = _as_hwc(to_uint8(images), channels, None)
        for i, im in enumerate(images):
            check_content(im, f"{path}: {name}_images[{i}]")
        if image_size is not None and tuple(images.shape[1:3]) != tuple(image_size):
            images = np.stack([resize_array(im, image_size) for im in images])
        hashes = tuple(hashlib.sha256(im.tobytes()).hexdigest() for im in images)
        ids = tuple(f"{name}/{i}" for i in range(len(images)))
        splits[name] = Split(images, _labels(labels, f"{path}: {name}_labels"), ids, hashes)
    task, k = _task(splits["train"].labels)
    class_names = KNOWN_CLASSES.get(path.stem.split("_")[0].lower()) or tuple(
        f"class_{i}" for i in range(k)
    )
    if len(class_names) != k:
        class_names = tuple(f"class_{i}" for i in range(k))
    _check_classes(path, splits["train"].labels, task)
    return Dataset(
        path.stem, str(path.resolve()), "npz", class_names, task, splits, sha256_file(path)
    )


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            need = {f"{s}_{k}" for s in SPLITS for k in ("images", "labels")}
            missing = sorted(need - keys)
            if missing:
                raise InputError(
                    f"{path} lacks the keys {missing}; a MedMNIST-layout npz needs "
                    "train/val/test _images and _labels"
                )
            for k in sorted(need):
                _check_header(path, f.zip, k)
            return {k: f[k] for k in need}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(
            f"cannot read {path} as an npz file ({exc}); re-download or re-save it"
        ) from None


def npy_shape(zf: zipfile.ZipFile, key: str) -> tuple[int, ...]:
    """The shape of array `key` from its .npy header, without reading the array."""
    with zf.open(f"{key}.npy") as fp:
        version = np.lib.format.read_magic(fp)
        reader = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        return tuple(reader(fp)[0])


def _check_header(path: Path, zf: zipfile.ZipFile, key: str) -> None:
    """Image shape from the .npy header, before the array is read: per-image pixel limit."""
    if not key.endswith("_images"):
        return
    shape = npy_shape(zf, key)
    if len(shape) in (3, 4):
        check_pixel_count(f"{path}: {key}", shape[1], shape[2])


def _as_hwc(images: np.ndarray, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise InputError(f"npz images must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
    if images.shape[3] != channels:
        images = (
            images.mean(axis=3, keepdims=True).astype(np.uint8)
            if channels == 1
            else np.repeat(images[..., :1], 3, axis=3)
        )
    if size is not None and tuple(images.shape[1:3]) != tuple(size):
        images = np.stack([resize_array(im, size) for im in images])
    return np.ascontiguousarray(images)


def _labels(labels: np.ndarray, what: str) -> np.ndarray:
    """(N,), (N, 1) or (N, K) non-negative whole numbers -> int64 (refused otherwise, not cast)."""
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2):
        raise InputError(
            f"{what} has shape {labels.shape}; labels must be (N,), (N, 1) or (N, K) multi-label"
        )
    kind = labels.dtype.kind
    if kind not in "biuf":
        raise InputError(f"{what} has dtype {labels.dtype}; labels must be integers")
    check_finite(labels, what)
    if labels.size and (np.any(labels < 0) or np.any(labels != np.floor(labels))):
        raise InputError(f"{what} holds negative or fractional values; labels are class indices")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    return labels.astype(np.int64)


def _task(labels: np.ndarray) -> tuple[str, int]:
    if labels.ndim == 2:
        return "multilabel", labels.shape[1]
    k = int(labels.max()) + 1 if len(labels) else 0
    return ("binary" if k <= 2 else "multiclass"), max(k, 2)


def _check_classes(path: Path, labels: np.ndarray, task: str) -> None:
    present = np.unique(labels) if task != "multilabel" else np.unique(labels.sum(axis=0) > 0)
    if task != "multilabel" and len(present) < 2:
        raise InputError(
            f"{path}: the training split holds only one class ({present.tolist()}); a classifier needs at least two"
        )
