"""Multilabel: one operating threshold per label, chosen on validation, stored as a list in the
contract, and used by the decisions, the drift (flips and their distance to each label's
threshold) and training."""

from __future__ import annotations

import numpy as np
import pytest

from edgemed.contract import Contract
from edgemed.errors import InputError
from edgemed.evaluation.drift import drift_from_logits
from edgemed.pipeline.training import operating_threshold
from tests.conftest import CXR

ML = Contract(input_size=(28, 28), channels=1, class_names=("a", "b"), task="multilabel")


def test_a_threshold_list_roundtrips_and_decides_per_label():
    c = ML.with_threshold((0.2, 0.9))
    assert Contract.from_json(c.to_json()) == c and c.to_dict()["threshold"] == [0.2, 0.9]
    logits = np.log(np.array([[0.3, 0.8], [0.1, 0.95]]) / (1 - np.array([[0.3, 0.8], [0.1, 0.95]])))
    assert c.decisions(logits).tolist() == [[True, False], [False, True]]
    assert ML.decisions(logits).tolist() == [[False, True], [False, True]]  # one 0.5 for both


@pytest.mark.parametrize(
    ("task", "names", "threshold", "needle"),
    [
        ("binary", ("n", "p"), (0.3,), "only a multilabel contract"),
        ("multilabel", ("a", "b", "c"), (0.3, 0.4), "3 labels here"),
        ("multilabel", ("a", "b"), (0.3, 1.0), "must be in (0, 1)"),
    ],
)
def test_bad_threshold_lists_are_refused(task, names, threshold, needle):
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        Contract(input_size=(28, 28), channels=1, class_names=names, task=task,
                 threshold=threshold)  # fmt: skip


def test_each_label_gets_its_own_threshold_on_validation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 2))
    # label a's scores are centred low, label b's high: one shared threshold would suit neither
    scores = np.stack([0.05 + 0.2 * y[:, 0] + rng.uniform(0, 0.1, 400),
                       0.7 + 0.2 * y[:, 1] + rng.uniform(0, 0.1, 400)], axis=1)  # fmt: skip
    t = operating_threshold(ML, y, scores)
    assert isinstance(t, tuple) and len(t) == 2
    assert 0.15 <= t[0] <= 0.25 and 0.8 <= t[1] <= 0.9
    assert operating_threshold(ML, np.c_[y[:, 0], np.zeros(400, int)], scores)[1] == 0.5


def test_drift_uses_each_labels_threshold():
    c = ML.with_threshold((0.2, 0.9))
    p_ref = np.array([[0.21, 0.5], [0.5, 0.905], [0.1, 0.1], [0.6, 0.95]])
    p_cand = np.array([[0.19, 0.5], [0.5, 0.85], [0.1, 0.1], [0.6, 0.95]])
    logit = np.log(p_ref / (1 - p_ref)), np.log(p_cand / (1 - p_cand))
    d = drift_from_logits(c, logit[0], logit[1], np.array([[1, 0], [0, 1], [0, 0], [1, 1]]))
    # image 0 crosses a's 0.2 (0.01 away: decisive), image 1 crosses b's 0.9 (0.005 away);
    # under one 0.5 threshold neither would have flipped
    assert d.flips == 2 and d.flip_margins == pytest.approx((0.005, 0.01))
    assert [p["threshold"] for p in d.per_label] == [0.2, 0.9]
    assert drift_from_logits(ML, logit[0], logit[1]).flips == 0


def test_training_a_real_multilabel_set_stores_a_threshold_per_label(tmp_path):
    """The chest X-ray subset with a second, real label (image brighter than the median)."""
    from edgemed.models import ModelSpec
    from edgemed.pipeline.training import TrainConfig, train

    with np.load(CXR) as f:
        arrays = {k: f[k] for k in f.files}
    median = np.median(arrays["train_images"].mean(axis=(1, 2)))
    for s in ("train", "val", "test"):
        bright = arrays[f"{s}_images"].mean(axis=(1, 2)) > median
        arrays[f"{s}_labels"] = np.c_[arrays[f"{s}_labels"].reshape(-1), bright].astype(np.uint8)
    path = tmp_path / "cxr_multilabel.npz"
    np.savez(path, **arrays)
    cfg = TrainConfig(data=str(path), model=ModelSpec("cnn", {"width": 0.25}), epochs=1)
    result = train(cfg)
    t = result.contract.threshold
    assert result.contract.task == "multilabel" and isinstance(t, tuple) and len(t) == 2
    assert result.card["contract"]["threshold"] == list(t)
    assert all(0 < v < 1 for v in t)


def test_the_dicom_sr_carries_each_labels_threshold(tmp_path):
    """A multilabel result (threshold list) written to a real DICOM SR and read back."""
    import pydicom
    from pydicom.uid import generate_uid

    from edgemed.serve.sr import Algorithm, build_sr, read_sr_result
    from tests.bundle_support import write_dicom

    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    path = write_dicom(tmp_path / "x.dcm", pixels, StudyInstanceUID=generate_uid(),
                       SeriesInstanceUID=generate_uid())  # fmt: skip
    source = pydicom.dcmread(path)
    result = {"probabilities": {"a": 0.3, "b": 0.95}, "decision": ["a", "b"],
              "threshold": [0.2, 0.9]}  # fmt: skip
    algo = Algorithm("id", "0" * 64, "model", "1", "onnx")
    back = read_sr_result(build_sr(source, result, algo))
    assert back["thresholds"] == {"a": 0.2, "b": 0.9} and back["probabilities"] == {
        "a": 0.3,
        "b": 0.95,
    }
    assert sorted(back["findings"]) == ["a", "b"]


def test_the_multilabel_sr_has_one_finding_per_reported_label_and_passes_dciodvfy(tmp_path):
    """dciodvfy (dicom3tools) reports no error on the SR of a 3-label result."""
    import shutil
    import subprocess

    import pydicom
    from pydicom.uid import generate_uid

    from edgemed.serve.sr import Algorithm, build_sr, read_sr_result
    from tests.bundle_support import write_dicom

    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools)")
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    path = write_dicom(tmp_path / "x.dcm", pixels, StudyInstanceUID=generate_uid(),
                       SeriesInstanceUID=generate_uid())  # fmt: skip
    result = {"probabilities": {"Effusion": 0.3, "Pleural_Thickening": 0.95, "Edema": 0.1},
              "decision": ["Pleural_Thickening"], "threshold": [0.2, 0.9, 0.5]}  # fmt: skip
    sr = build_sr(pydicom.dcmread(path), result, Algorithm("id", "0" * 64, "model", "1", "onnx"))
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    back = read_sr_result(pydicom.dcmread(tmp_path / "sr.dcm"))
    assert back["labels"] == ["Effusion", "Pleural_Thickening", "Edema"]
    assert back["findings"] == ["Pleural_Thickening"] and back["probabilities"]["Edema"] == 0.1
    assert back["thresholds"] == {"Effusion": 0.2, "Pleural_Thickening": 0.9, "Edema": 0.5}
    res = subprocess.run([tool, str(tmp_path / "sr.dcm")], capture_output=True, text=True)
    report = res.stdout + res.stderr
    assert "ComprehensiveSR" in report
    assert not [ln for ln in report.splitlines() if ln.startswith("Error")], report


def test_train_refuses_class_names_of_the_wrong_count_in_one_line(tmp_path):
    from tests.conftest import assert_user_error, run_cli

    res = run_cli("train", "--data", CXR, "--class-names", "normal,pneumonia,other",
                  "--epochs", "1", "--out", tmp_path / "m")  # fmt: skip
    assert_user_error(res, "--class-names names 3 classes", "has 2")
    assert not (tmp_path / "m").exists()
    res = run_cli("train", "--data", CXR, "--class-names", "normal,normal", "--out", tmp_path / "m")
    assert_user_error(res, "--class-names", "distinct")
