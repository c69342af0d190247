"""Data readers on the real datasets and on trees of awkward images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgemed.data import load_dataset
from edgemed.errors import InputError
from tests.conftest import CXR


def test_medmnist_npz_reader_on_real_subset():
    ds = load_dataset(CXR)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 2428, "val": 270, "test": 468}
    train = ds.split("train")
    assert train.images.shape == (2428, 28, 28, 1) and train.images.dtype == np.uint8
    assert train.labels.shape == (2428,) and set(np.unique(train.labels)) == {0, 1}
    assert ds.class_names == ("normal", "pneumonia") and ds.task == "binary"


def test_npz_labels_shaped_n_and_resize(tmp_path):
    src = np.load(CXR)
    arrays = {k: src[k] for k in src.files}
    for s in ("train", "val", "test"):
        arrays[f"{s}_labels"] = arrays[f"{s}_labels"][:, 0]  # (N,) instead of (N, 1)
    np.savez(tmp_path / "flat.npz", **arrays)
    ds = load_dataset(tmp_path / "flat.npz", image_size=(32, 32), channels=3)
    assert ds.split("val").images.shape == (270, 32, 32, 3)
    assert ds.split("val").labels.shape == (270,)


def test_multilabel_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 40), ("val", 10), ("test", 10)):
        arrays[f"{s}_images"] = rng.integers(0, 255, (n, 16, 16), dtype=np.uint8)
        arrays[f"{s}_labels"] = rng.integers(0, 2, (n, 3), dtype=np.uint8)
    np.savez(tmp_path / "ml.npz", **arrays)
    ds = load_dataset(tmp_path / "ml.npz")
    assert ds.task == "multilabel" and ds.split("train").labels.shape == (40, 3)
    assert len(ds.class_names) == 3


def test_brain_mri_folder_reader_reads_every_real_image(brain_dir):
    ds = load_dataset(brain_dir, image_size=(64, 64))
    total = sum(len(s) for s in ds.splits.values())
    assert total == 253 and ds.class_names == ("no", "yes")
    ids = [i for s in ds.splits.values() for i in s.ids]
    assert any(" " in i for i in ids)  # file names with spaces
    assert all(s.images.shape[1:] == (64, 64, 1) for s in ds.splits.values())


def _write_modes(root):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        base = rng.integers(0, 255, (20, 24), dtype=np.uint8)
        Image.fromarray(base).save(root / cls / "gray L.png")
        Image.fromarray(np.stack([base] * 3, 2)).save(root / cls / "rgb image.jpg")
        Image.fromarray(np.dstack([base] * 3 + [np.full_like(base, 255)])).save(
            root / cls / "rgba.png"
        )
        Image.fromarray(base).convert("P").save(root / cls / "palette.png")
        Image.fromarray(base.astype(np.uint16) * 257).save(root / cls / "sixteen.png")
    return root


def test_folder_reader_handles_every_mode(tmp_path):
    ds = load_dataset(
        _write_modes(tmp_path / "tree"),
        image_size=(16, 16),
        channels=3,
        fractions=(0.5, 0.25, 0.25),
    )
    images = np.concatenate([s.images for s in ds.splits.values()])
    assert images.shape == (10, 16, 16, 3)
    sixteen = [
        im
        for s in ds.splits.values()
        for im, i in zip(s.images, s.ids, strict=False)
        if "sixteen" in i
    ]
    gray = [
        im
        for s in ds.splits.values()
        for im, i in zip(s.images, s.ids, strict=False)
        if "gray" in i
    ]
    assert (
        np.abs(sixteen[0].astype(int) - gray[0].astype(int)).max() <= 1
    )  # 16-bit scaled to 8-bit range


def test_folder_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        load_dataset(tmp_path / "empty")
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(one / "x.png")
    with pytest.raises(InputError, match="only one class"):
        load_dataset(tmp_path / "one")
    bad = _write_modes(tmp_path / "bad")
    (bad / "a" / "broken scan.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError, match="broken scan.png"):
        load_dataset(bad)


def test_npz_bad_inputs(tmp_path):
    np.savez(tmp_path / "nokeys.npz", images=np.zeros((2, 4, 4)))
    with pytest.raises(InputError, match="lacks the keys"):
        load_dataset(tmp_path / "nokeys.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(InputError, match="cannot read"):
        load_dataset(tmp_path / "corrupt.npz")
    with pytest.raises(InputError, match="does not exist"):
        load_dataset(tmp_path / "missing.npz")
