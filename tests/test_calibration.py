"""Calibration bad inputs through `edgemed export`: exit code, one-line message, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemed.data import load_dataset
from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Variants of the real chest X-ray subset, each broken in one way."""
    d = tmp_path_factory.mktemp("calib-data")
    with np.load(CXR) as f:
        arrays = {k: f[k] for k in f.files}
    val_normal = arrays["val_labels"][:, 0] == 0
    one_class = {**arrays}
    one_class["val_images"] = arrays["val_images"][val_normal]
    one_class["val_labels"] = arrays["val_labels"][val_normal]
    np.savez(d / "pneumoniamnist_oneclassval.npz", **one_class)
    leaky = {**arrays, "train_images": arrays["test_images"], "train_labels": arrays["test_labels"]}
    np.savez(d / "pneumoniamnist_leaky.npz", **leaky)
    # A public-split style overlap: 3 test images also sit in the training split.
    shared = {
        **arrays,
        "train_images": np.concatenate([arrays["test_images"][:3], arrays["train_images"]]),
        "train_labels": np.concatenate([arrays["test_labels"][:3], arrays["train_labels"]]),
    }
    np.savez(d / "pneumoniamnist_shared3.npz", **shared)
    dark = {k: (v // 5 if k.endswith("_images") else v) for k, v in arrays.items()}
    np.savez(d / "pneumoniamnist_dark.npz", **dark)
    return d


def _recipe(path: Path, **keys) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _refused(cxr_model, where: Path, *args, needles=(), target="onnx") -> None:
    before = tree_snapshot(where)
    res = run_cli("export", "--model", cxr_model, "--target", target, "--out", where / "o", *args)
    assert_user_error(res, *needles)
    assert res.code == 2
    assert tree_snapshot(where) == before


def test_int8_without_calibration(cxr_model, tmp_path):
    _refused(cxr_model, tmp_path, "--precision", "int8", needles=("--calib", "INT8 needs"))


def test_recipe_that_does_not_exist(cxr_model, tmp_path):
    _refused(
        cxr_model, tmp_path, "--precision", "int8", "--calib", tmp_path / "nope.toml",
        needles=("nope.toml", "does not exist"),
    )  # fmt: skip


def test_recipe_pointing_nowhere(cxr_model, tmp_path):
    recipe = _recipe(tmp_path / "r.toml", data="missing/images.npz")
    _refused(
        cxr_model, tmp_path, "--precision", "int8", "--calib", recipe, "--data-root", tmp_path,
        needles=("missing/images.npz", "does not exist", "--data-root"),
    )  # fmt: skip


def test_recipe_with_a_bad_value(cxr_model, tmp_path):
    recipe = _recipe(tmp_path / "r.toml", data=str(CXR), count="many")
    _refused(
        cxr_model, tmp_path, "--precision", "int8", "--calib", recipe,
        needles=("'count'", "positive integer"),
    )  # fmt: skip


def test_one_class_calibration_set(cxr_model, tmp_path, data_dir):
    recipe = _recipe(
        tmp_path / "r.toml", data="pneumoniamnist_oneclassval.npz", split="val", count=64
    )
    _refused(
        cxr_model, tmp_path, "--precision", "int8", "--calib", recipe, "--data-root", data_dir,
        needles=("only one class", "normal", "other classes"),
    )  # fmt: skip


def test_too_few_images(cxr_model, tmp_path):
    _refused(
        cxr_model, tmp_path, "--precision", "int8", "--calib", CXR, "--calib-count", "8",
        needles=("8 images", "minimum 32", "--calib-count"),
    )  # fmt: skip


def test_recipe_count_below_its_minimum(cxr_model, tmp_path):
    recipe = _recipe(tmp_path / "r.toml", data=str(CXR), count=40, min_images=64)
    _refused(
        cxr_model, tmp_path, "--precision", "int8", "--calib", recipe,
        needles=("40 images", "minimum 64"),
    )  # fmt: skip


def test_calibrating_on_the_test_split(cxr_model, tmp_path):
    recipe = _recipe(tmp_path / "r.toml", data=str(CXR), split="test", count=64)
    _refused(
        cxr_model, tmp_path, "--precision", "int8", "--calib", recipe,
        needles=("468 of 468", "test split", "training images"),
    )  # fmt: skip


def test_test_images_hidden_in_another_file(cxr_model, tmp_path, data_dir):
    _refused(
        cxr_model, tmp_path, "--precision", "int8",
        "--calib", data_dir / "pneumoniamnist_leaky.npz", "--calib-count", "64",
        needles=("test split",),
    )  # fmt: skip


@pytest.mark.parametrize(
    "args, needles",
    [
        (("--precision", "fp16", "--calib", CXR), ("--calib", "static INT8", "fp16")),
        (("--precision", "int8", "--quant-mode", "dynamic", "--calib", CXR), ("dynamic INT8",)),
        (("--precision", "fp32", "--calib-count", "64"), ("--calib-count",)),
    ],
)
def test_calibration_flags_where_nothing_is_calibrated(cxr_model, tmp_path, args, needles):
    _refused(cxr_model, tmp_path, *args, needles=needles)


def test_calib_count_with_a_recipe(cxr_model, tmp_path):
    recipe = _recipe(tmp_path / "r.toml", data=str(CXR), count=64)
    _refused(
        cxr_model, tmp_path, "--precision", "int8", "--calib", recipe, "--calib-count", "64",
        needles=("--calib-count", "recipe"),
    )  # fmt: skip
    _refused(
        cxr_model, tmp_path, "--precision", "int8", "--calib", recipe, "--calib-seed", "3",
        needles=("--calib-seed", "recipe sets 'seed'"),
    )  # fmt: skip
    _refused(cxr_model, tmp_path, "--calib-seed", "3", needles=("--calib-seed", "not fp32"))


def test_calib_seed_draws_other_images_and_is_recorded(cxr_model, tmp_path):
    def samples(seed: str | None) -> tuple[dict, list[str]]:
        out = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        res = run_cli(
            "export", "--model", cxr_model, "--target", "onnx", "--precision", "int8",
            "--calib", CXR, "--calib-count", "32", "--max-flip-rate", "1", "--max-auc-drop", "1",
            *(("--calib-seed", seed) if seed else ()), "--out", out,
        )  # fmt: skip
        assert res.code == 0, res.err
        cal = json.loads((out / "calibration.json").read_text())
        return cal["recipe"], [s["sha256"] for s in cal["samples"]]

    (default, a), (seeded, b), (_, c) = samples(None), samples("7"), samples("7")
    assert default["seed"] == 0 and seeded["seed"] == 7
    assert a != b and b == c  # another draw, and the same one again


def test_pixel_statistics_far_off_is_a_recorded_warning(cxr_model, tmp_path, data_dir):
    out = tmp_path / "o"
    res = run_cli(
        "export", "--model", cxr_model, "--target", "onnx", "--out", out,
        "--precision", "int8", "--calib", data_dir / "pneumoniamnist_dark.npz",
        "--calib-count", "64", "--max-flip-rate", "1", "--max-auc-drop", "1",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "warning: calibration pixel statistics are far" in res.err
    cal = json.loads((out / "calibration.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert cal["warnings"] and "preprocessed like the training images" in cal["warnings"][0]
    assert manifest["backend"]["calibration"]["warnings"] == cal["warnings"]


def test_unknown_precision_lists_the_choices(cxr_model, tmp_path):
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", cxr_model, "--target", "onnx", "--out", tmp_path / "o",
        "--precision", "int4",
    )  # fmt: skip
    assert res.code == 2
    assert "int4" in res.err and all(p in res.err for p in ("fp32", "fp16", "int8"))
    assert tree_snapshot(tmp_path) == before


def test_precision_the_target_cannot_do(cxr_model, tmp_path):
    profile = _recipe(tmp_path / "edge.toml", runtime="onnx", precisions=["fp32", "fp16"])
    _refused(
        cxr_model, tmp_path, "--precision", "int8", "--calib", CXR,
        needles=("'int8'", "fp32, fp16"), target=profile,
    )  # fmt: skip


def test_sampling_skips_images_shared_with_the_test_split_and_records_them(
    cxr_model, tmp_path, data_dir
):
    """A dataset whose train split holds 3 test images (as public splits often do): the sampler
    skips them with one warning and lists them; it does not refuse the user's train split."""
    out = tmp_path / "o"
    res = run_cli(
        "export", "--model", cxr_model, "--target", "onnx", "--out", out, "--precision", "int8",
        "--calib", data_dir / "pneumoniamnist_shared3.npz", "--calib-count", "256",
        "--max-flip-rate", "1", "--max-auc-drop", "1",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert res.err.count("skipped 3 image(s) of the train split") == 1
    cal = json.loads((out / "calibration.json").read_text())
    assert len(cal["skipped_test_overlap"]) == 3
    test_hashes = set(load_dataset(CXR).split("test").hashes)
    assert not {s["sha256"] for s in cal["samples"]} & test_hashes
