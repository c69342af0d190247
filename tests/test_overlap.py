"""A dataset whose own splits share images (by content): `train` and `bench` warn with the count
and record it. The embedded chest X-ray subset really does: 3 validation images are copies of
training images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgemed.data import load_dataset
from edgemed.data.overlap import overlap_warning, split_overlap
from tests.conftest import CXR, run_cli

FAST = ("--seconds", "0.05", "--min-runs", "3")


def test_the_embedded_subset_shares_three_validation_images_with_training():
    ds = load_dataset(CXR)
    o = split_overlap(ds)
    assert o["pairs"] == {"train/val": 3, "train/test": 0, "val/test": 0}
    assert o["images"] == 3 and o["by_split"]["test"] == 0 and o["by_split"]["val"] == 3
    line = overlap_warning(o, ds.path)
    assert "3 val/test images are also in an earlier split (train/val 3" in line
    assert overlap_warning(o, ds.path, "test") is None  # the test split itself is clean


def test_train_warns_once_and_the_card_records_it(tmp_path):
    res = run_cli("train", "--data", CXR, "--epochs", "1", "--width", "0.25",
                  "--out", tmp_path / "m")  # fmt: skip
    assert res.code == 0, res.err
    warnings = [ln for ln in res.err.splitlines() if "share images by content" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("edgemed: warning:")
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["data"]["split_overlap"]["pairs"]["train/val"] == 3


def test_bench_warns_when_its_split_holds_training_images(cxr_onnx, tmp_path):
    with np.load(CXR) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["test_images"] = np.concatenate([arrays["train_images"][:2], arrays["test_images"][2:]])
    leaky = tmp_path / "pneumoniamnist_leaky.npz"
    np.savez(leaky, **arrays)
    out = tmp_path / "b"
    res = run_cli("bench", cxr_onnx, "--data", leaky, *FAST, "--out", out)
    assert res.code == 0, res.err
    assert "edgemed: warning:" in res.err and "2 images of its test split" in res.err
    data = json.loads((out / "results.json").read_text())["data"]
    assert data["split_overlap"]["pairs"]["train/test"] == 2


def test_no_warning_for_a_clean_split(cxr_onnx, tmp_path: Path):
    res = run_cli("bench", cxr_onnx, "--data", CXR, *FAST, "--out", tmp_path / "b")
    assert res.code == 0 and "share images" not in res.err
