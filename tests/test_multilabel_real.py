"""Multi-label and multi-class evidence on real data.

- NIH ChestX-ray14, 1000 images (../shared/datasets/nih_chestxray14_1000): 14 findings, Hernia
  with no positive image in validation or test, rare labels, subgroups by sex, view and age band
  from its labels.csv. A small CNN is trained once for this module (3 epochs).
- A real 3-class set built here from real images: chest X-ray normal and chest X-ray pneumonia
  (the embedded PneumoniaMNIST subset, 28 px) and brain MRI with a tumor (the brain_mri `yes`
  folder, duplicate-aware split, resized to 28 px grayscale).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edgemed.bundle.gate import gate_limits
from edgemed.errors import InputError
from edgemed.evaluation.drift import drift_from_logits
from edgemed.evaluation.labels import MIN_PER_CLASS
from edgemed.evaluation.limits import verdict
from edgemed.models import ModelSpec
from edgemed.pipeline.training import TrainConfig, evaluate, predict_logits, train
from tests.conftest import CXR, find_dataset, missing_reason


@pytest.fixture(scope="module")
def nih_dir():
    path = find_dataset("nih_chestxray14")
    if path is None:
        pytest.skip(missing_reason("nih_chestxray14"))
    return path


def _names(nih_dir) -> list[str]:
    with open(nih_dir / "labels.csv", newline="") as f:
        return next(csv.reader(f))[7:]


@pytest.fixture(scope="module")
def nih(nih_dir, tmp_path_factory):
    """The NIH npz with its label names as a `label_names` array, and a model trained on it."""
    with np.load(nih_dir / "nih1000_64.npz") as f:
        arrays = {k: f[k] for k in f.files}
    path = tmp_path_factory.mktemp("nih") / "nih_named.npz"
    np.savez(path, **arrays, label_names=np.array(_names(nih_dir)))
    cfg = TrainConfig(data=str(path), model=ModelSpec("cnn", {"width": 0.5}), epochs=3)
    result = train(cfg)
    logits = predict_logits(result.module, result.contract, arrays["test_images"][..., None])
    return result, logits, arrays["test_labels"], path


def test_the_npz_label_names_reach_the_contract_and_a_wrong_count_is_refused(nih, tmp_path):
    from edgemed.data import load_dataset
    from edgemed.data.npz import with_class_names

    result, _, _, path = nih
    assert result.contract.class_names[13] == "Hernia" and len(result.contract.class_names) == 14
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "label_names"}
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays, label_names=np.array(["a", "b"]))
    with pytest.raises(InputError, match="names 2 classes but the labels have 14"):
        load_dataset(bad)
    with pytest.raises(InputError, match="--class-names names 3 classes"):
        with_class_names(load_dataset(path), ("a", "b", "c"), "--class-names")


def test_hernia_is_named_with_its_counts_and_no_validation_metric_is_null(nih):
    card = nih[0].card
    v, t = card["validation"], card["test"]
    assert v["auc"] is not None and v["better_than_chance"] is not None
    assert "Hernia" in v["not_evaluable"] and "Hernia (0+/94-)" in v["warning"]
    assert v["not_thresholded"] == ["Hernia"] and nih[0].contract.threshold[13] == 0.5
    assert len(t["per_label"]) == 14 and "Hernia" in t["not_evaluable"]
    assert "Hernia" not in t["auc_macro_over"] and "Hernia (0+/181-)" in t["warning"]
    # the macro AUC is over exactly the labels with >= MIN_PER_CLASS of each class on the split
    y = nih[2]
    counts = np.minimum(y.sum(0), len(y) - y.sum(0))
    assert len(t["auc_macro_over"]) == int((counts >= MIN_PER_CLASS).sum())
    for p in t["per_label"]:
        assert (p["auc"] is not None) == p["evaluable"]
        if p["evaluable"]:
            lo, hi = p["auc_ci95"]
            assert p["chance"] == ("above" if lo > 0.5 else "inverted" if hi < 0.5 else "undecided")
    assert card["training"]["history"] and all(
        h["val_auc"] > 0 for h in card["training"]["history"]
    )


def test_the_gate_names_unevaluable_and_inverted_labels_and_passes_the_good_subset(nih):
    result, logits, y, _ = nih
    c = result.contract
    limits = gate_limits({})  # the bundle's defaults: drift ceilings + reference above chance
    v = verdict(limits, drift_from_logits(c, logits, logits, y))
    failed = {ch.metric: ch.detail for ch in v.failed}
    assert set(failed) == {"reference_auc"}
    assert "Hernia (not evaluable: 0+/181-)" in failed["reference_auc"]
    drift = drift_from_logits(c, logits, logits, y)
    good = [p["label"] for p in drift.per_label
            if p["auc_reference_ci95"] and p["auc_reference_ci95"][0] > 0.5]  # fmt: skip
    assert good, "the recipe learned no label above chance on NIH 1000"
    sub = c.with_reported(tuple(good))
    d_sub = drift_from_logits(sub, logits, logits, y)
    assert [p["label"] for p in d_sub.per_label] == good and verdict(limits, d_sub).passed
    # the best label's truth reversed: its AUC CI lies below 0.5, the gate and training say so
    k = c.class_names.index(good[0])
    y_inv = y.copy()
    y_inv[:, k] = 1 - y_inv[:, k]
    detail = verdict(limits, drift_from_logits(sub, logits, logits, y_inv)).failed[0].detail
    assert good[0] in detail and "inverted" in detail
    warning = evaluate(c, y_inv, logits)["warning"]
    assert "WORSE than chance" in warning and good[0] in warning.split(";")[0]


def test_reported_labels_are_checked_and_kept_through_the_contract(nih):
    c = nih[0].contract
    with pytest.raises(InputError, match="unknown"):
        c.with_reported(("Hernia", "Fracture"))
    sub = c.with_reported(("Hernia", "Effusion"))
    assert sub.reported == ("Effusion", "Hernia")  # output order
    back = type(c).from_json(sub.to_json())
    assert back == sub and back.reported_index.tolist() == [2, 13]


def test_subgroups_by_sex_view_and_age_band_carry_every_label(nih, nih_dir, tmp_path):
    from edgemed.data import load_dataset
    from edgemed.evaluation.groups import ImageKeys, group_drifts, read_groups_csv

    result, logits, y, path = nih
    groups = tmp_path / "groups.csv"
    with open(nih_dir / "labels.csv", newline="") as f, open(groups, "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["image", "sex", "view", "age"])
        for r in csv.DictReader(f):
            band = "<40" if int(r["age"]) < 40 else "40-59" if int(r["age"]) < 60 else "60+"
            w.writerow([f"{r['split']}/{r['index']}", r["sex"], r["view"], band])
    ds = load_dataset(path)
    split = ds.split("test")
    every = frozenset(i for s in ("train", "val", "test") for i in ds.split(s).ids)
    keys = ImageKeys(split.ids, split.hashes, every)
    table = read_groups_csv(groups, keys)
    drifts = group_drifts(result.contract, logits, logits, y, table)
    assert {g.column for g in drifts} == {"sex", "view", "age"}
    for g in drifts:
        assert len(g.drift.per_label) == 14
        names = {m["label"] for m in g.drift.not_evaluable}
        assert "Hernia" in names and set(g.drift.macro_labels).isdisjoint(names)


def _three_class(brain_dir, tmp_path):
    """Chest X-ray normal (0), chest X-ray pneumonia (1), brain MRI tumor (2), all 28 px gray."""
    from edgemed.data import load_dataset

    brain = load_dataset(brain_dir, image_size=(28, 28), channels=1)
    arrays = {}
    with np.load(CXR) as f:
        for s, n in (("train", 120), ("val", 40), ("test", 60)):
            yb = f[f"{s}_labels"].reshape(-1)
            tumor = brain.split(s).images[brain.split(s).labels == 1][..., 0]
            cxr = [f[f"{s}_images"][yb == k][:n] for k in (0, 1)]
            arrays[f"{s}_images"] = np.concatenate([*cxr, tumor])
            arrays[f"{s}_labels"] = np.r_[np.zeros(len(cxr[0])), np.ones(len(cxr[1])),
                                          np.full(len(tumor), 2)].astype(np.uint8)  # fmt: skip
    path = tmp_path / "three_class.npz"
    np.savez(path, **arrays, class_names=np.array(["normal", "pneumonia", "brain tumor"]))
    return path, arrays


def test_a_real_three_class_set_gets_top1_ovr_auc_confusion_and_argmax_flips(brain_dir, tmp_path):
    path, arrays = _three_class(brain_dir, tmp_path)
    cfg = TrainConfig(data=str(path), model=ModelSpec("cnn", {"width": 0.25}), epochs=2)
    result = train(cfg)
    c, t = result.contract, result.card["test"]
    assert c.task == "multiclass" and c.class_names == ("normal", "pneumonia", "brain tumor")
    assert t["auc_macro_over"] == list(c.class_names) and 0 <= t["accuracy_top1"] <= 1
    x, y = arrays["test_images"][..., None], arrays["test_labels"]
    ref = predict_logits(result.module, c, x)
    cand = ref + np.random.default_rng(0).normal(0, 0.5, ref.shape)
    d = drift_from_logits(c, ref, cand, y)
    m = np.array(d.details["confusion_matrix"])
    assert m.shape == (3, 3) and m.sum() == len(y) and m.sum(1).tolist() == np.bincount(y).tolist()
    assert d.flips == int((ref.argmax(1) != cand.argmax(1)).sum())
    assert d.accuracy == pytest.approx(float((cand.argmax(1) == y).mean()))
    assert [p["label"] for p in d.per_label] == list(c.class_names)
    v = verdict(gate_limits({"min_sens": 1.0}), d)
    sens = next(ch for ch in v.checks if ch.metric == "min_sens")
    assert sens.passed == all(p["sensitivity"] >= 1.0 for p in d.per_label)
    if not sens.passed:
        assert any(f"label {n}" in sens.detail or n in sens.detail for n in c.class_names)
    with pytest.raises(InputError, match="multi-label"):
        c.with_reported(("normal",))


def test_cli_ships_only_the_labels_that_pass_and_refuses_all_14(nih, tmp_path):
    """train dir -> export (all 14 / the good labels) -> bench -> bundle (default gate) ->
    predict, through the real CLI: all 14 refused naming Hernia, the subset signed, and predict
    answers only for the reported labels."""
    from PIL import Image

    from edgemed.models import ModelSpec as Spec
    from edgemed.pipeline.training import write_training_dir
    from tests.conftest import assert_user_error, run_cli

    result, logits, y, path = nih
    model = write_training_dir(result, Spec("cnn", {"width": 0.5}), tmp_path / "model", False)
    drift = drift_from_logits(result.contract, logits, logits, y)
    good = [p["label"] for p in drift.per_label
            if p["auc_reference_ci95"] and p["auc_reference_ci95"][0] > 0.5]  # fmt: skip
    keys = tmp_path / "keys"
    assert run_cli("keygen", "--out", keys).code == 0
    res = run_cli("export", "--model", model, "--target", "onnx", "--labels", "Hernia,Fracture",
                  "--out", tmp_path / "bad")  # fmt: skip
    assert_user_error(res, "--labels", "Fracture")
    for name, labels in (("all", None), ("good", ",".join(good))):
        extra = ("--labels", labels) if labels else ()
        res = run_cli("export", "--model", model, "--target", "onnx", "--data", path, *extra,
                      "--out", tmp_path / name)  # fmt: skip
        assert res.code == 0, res
        res = run_cli("bench", tmp_path / name, "--data", path, "--seconds", "0.1",
                      "--min-runs", "5", "--out", tmp_path / f"bench-{name}")  # fmt: skip
        assert res.code == 0, res
    res = run_cli("bundle", "--model", tmp_path / "all", "--report", tmp_path / "bench-all",
                  "--key", keys / "edgemed.key", "--out", tmp_path / "all.edgemed")  # fmt: skip
    assert_user_error(res, "release gate refused", "Hernia (not evaluable: 0+/181-)")
    res = run_cli("bundle", "--model", tmp_path / "good", "--report", tmp_path / "bench-good",
                  "--key", keys / "edgemed.key", "--out", tmp_path / "good.edgemed")  # fmt: skip
    assert res.code == 0, res
    png = tmp_path / "x.png"
    with np.load(path) as f:
        Image.fromarray(f["test_images"][0]).save(png)
    res = run_cli("predict", tmp_path / "good.edgemed", png, "--pubkey", keys / "edgemed.pub")
    assert res.code == 0, res
    answer = json.loads(res.out.strip().splitlines()[-1])
    assert list(answer["probabilities"]) == good and len(answer["threshold"]) == len(good)
