"""MedMNIST-layout npz reader: {train,val,test}_{images,labels}; labels (N, 1), (N,) or (N, K)."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgemed.data import SPLITS, Dataset, Split
from edgemed.data.images import resize_array, to_uint8
from edgemed.errors import InputError
from edgemed.fileio import sha256_file
from edgemed.imagecheck import check_content, check_finite, check_pixel_count

# Class names of MedMNIST sets we know by file name; others get class_0..class_K unless the npz
# carries its own (a `class_names` or `label_names` string array) or train gets --class-names.
KNOWN_CLASSES = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "breastmnist": ("malignant", "normal/benign"),
    "chestmnist": ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                   "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema",
                   "Fibrosis", "Pleural_Thickening", "Hernia"),
}  # fmt: skip


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
    class_names = arrays.get("names") or KNOWN_CLASSES.get(path.stem.split("_")[0].lower()) or ()
    if len(class_names) != k:
        if "names" in arrays:
            raise InputError(
                f"{path}: its {arrays['names_key']} array names {len(class_names)} classes but "
                f"the labels have {k}; fix the array (one name per label column or class)"
            )
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
            arrays = {k: f[k] for k in need}
            for key in sorted(NAME_KEYS & keys):
                if int(np.prod(npy_shape(f.zip, key))) > MAX_CLASSES:
                    raise InputError(f"{path}: {key} holds more than {MAX_CLASSES} names")
                arrays["names"], arrays["names_key"] = check_names(f[key], f"{path}: {key}"), key
                break
            return arrays
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(
            f"cannot read {path} as an npz file ({exc}); re-download or re-save it"
        ) from None


NAME_KEYS = {"class_names", "label_names"}
MAX_NAME = 64
MAX_CLASSES = 1000


def check_names(values, what: str) -> tuple[str, ...]:
    """Class or label names: distinct, non-empty, printable, at most MAX_NAME characters each."""
    names = tuple(
        str(v).strip() for v in (values.tolist() if hasattr(values, "tolist") else values)
    )
    bad = [n for n in names if not n or len(n) > MAX_NAME or not n.isprintable()]
    if bad or len(set(names)) != len(names) or not names:
        raise InputError(
            f"{what}: class names must be distinct, non-empty, printable and at most {MAX_NAME} "
            f"characters, got {list(names)[:20]}"
        )
    return names


def parse_names(text: str | None, flag: str) -> tuple[str, ...] | None:
    """A comma-separated list of class or label names from the command line (None: not given)."""
    return None if text is None else check_names(text.split(","), flag)


def with_class_names(ds: Dataset, names: tuple[str, ...] | None, flag: str) -> Dataset:
    """The dataset with the user's class names; refused when the count does not match."""
    if names is None:
        return ds
    if len(names) != len(ds.class_names):
        raise InputError(
            f"{flag} names {len(names)} classes but {ds.path} has {len(ds.class_names)} "
            f"({ds.task}); give one name per {'label column' if ds.task == 'multilabel' else 'class'}"
        )
    return replace(ds, class_names=tuple(names))


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
