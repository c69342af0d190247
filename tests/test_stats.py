"""Bench statistics against published values, scikit-learn and hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from edgemed.contract import Contract
from edgemed.evaluation import stats
from edgemed.evaluation.drift import drift_from_logits
from edgemed.evaluation.metrics import auc

# Published example 1 (AUC): Hanley & McNeil, Radiology 143:29-36 (1982), Table 1: CT ratings
# (1 = definitely normal .. 5 = definitely abnormal) of 58 normal and 51 abnormal patients;
# the paper reports area 0.893.
HM_NORMAL = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
HM_ABNORMAL = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])

# Published example 2 (DeLong): the aSAH data of Turck et al., Intensive Care Med 36:107 (2010),
# as used by pROC (Robin et al., BMC Bioinformatics 12:77, 2011). DeLong's test depends on the
# scores only through the placement values, so these are pROC's own expected placements
# (tests/testthat/helper-deLongPlacementsCpp-expected.R) as exact integers: for each of the 41
# poor-outcome cases, 2 x (controls scored lower) + ties; for each of the 72 good-outcome
# controls, 2 x (cases scored higher) + ties. Scores are rebuilt from them below.
# pROC's expected results (tests/testthat/test-roc.test.R, test-var.R) for roc.test(wfns, s100b):
# Z = 2.20898359144091, p = 0.0271757822291882, 95% CI of the difference
# [0.0104061769564846, 0.174214419249478]; var(wfns) = 0.00146991470882363,
# var(s100b) = 0.00266868245717244; AUCs 0.823678861788618 and 0.731368563685637.
WFNS_CASES = [117, 94, 128, 140, 140, 140, 140, 94, 140, 94, 37, 94, 140, 128, 128, 94, 140, 140,
              140, 94, 140, 94, 140, 94, 128, 140, 128, 128, 37, 128, 128, 94, 94, 140, 140, 94, 94,
              140, 140, 140, 140]  # fmt: skip
WFNS_CONTROLS = [80, 80, 80, 80, 18, 80, 66, 66, 80, 66, 66, 80, 80, 80, 66, 80, 66, 80, 80, 53, 44,
                 80, 44, 80, 18, 18, 80, 80, 66, 44, 80, 80, 66, 66, 80, 66, 80, 66, 66, 80, 80, 80,
                 80, 66, 80, 66, 80, 80, 53, 66, 44, 66, 80, 44, 80, 80, 18, 44, 66, 66, 80, 80, 80,
                 53, 80, 66, 66, 44, 44, 80, 80, 80]  # fmt: skip
S100B_CASES = [81, 63, 103, 78, 130, 144, 140, 26, 123, 50, 26, 128, 126, 139, 144, 118, 144, 144,
               144, 26, 144, 120, 0, 50, 116, 144, 118, 144, 38, 118, 81, 63, 74, 116, 144, 88, 144,
               121, 144, 144, 130]  # fmt: skip
S100B_CONTROLS = [58, 55, 66, 80, 28, 52, 66, 66, 80, 73, 80, 70, 63, 77, 52, 77, 63, 58, 52, 80, 53,
                  55, 36, 70, 24, 28, 53, 77, 32, 28, 63, 73, 70, 73, 80, 58, 66, 55, 54, 80, 80, 70,
                  80, 70, 73, 53, 70, 73, 37, 63, 42, 77, 66, 39, 77, 80, 48, 34, 66, 54, 73, 55, 66,
                  77, 80, 52, 54, 28, 52, 54, 24, 27]  # fmt: skip


def scores_from_placements(cases: list[int], controls: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Case scores = their placement; each control placed where its placement says (checked)."""
    s = np.asarray(cases, float)
    u = np.unique(s)
    cands = np.concatenate([[u[0] - 1], u, (u[:-1] + u[1:]) / 2, [u[-1] + 1]])
    t = np.array(
        [next(c for c in cands if 2 * (s > c).sum() + (s == c).sum() == y) for y in controls]
    )
    assert [2 * (t < v).sum() + (t == v).sum() for v in s] == list(cases)
    return s, t


def asah() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w_case, w_ctrl = scores_from_placements(WFNS_CASES, WFNS_CONTROLS)
    s_case, s_ctrl = scores_from_placements(S100B_CASES, S100B_CONTROLS)
    y = np.r_[np.ones(41), np.zeros(72)]
    return y, np.r_[w_case, w_ctrl], np.r_[s_case, s_ctrl]


def slow_delong(y: np.ndarray, score_sets: list[np.ndarray]) -> np.ndarray:
    """DeLong et al. (1988) by definition: O(m n) kernel, structural components, covariance."""
    y = y.astype(bool)
    v10, v01 = [], []
    for s in score_sets:
        pos, neg = s[y], s[~y]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    v10, v01 = np.array(v10), np.array(v01)
    return np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]


def test_auc_of_published_hanley_mcneil_example():
    y = np.r_[np.zeros(58), np.ones(51)]
    s = np.r_[HM_NORMAL, HM_ABNORMAL]
    assert round(auc(y, s), 3) == 0.893
    assert stats.delong_placements(y, s)[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_delong_reproduces_published_proc_results():
    y, wfns, s100b = asah()
    r = stats.delong_test(y, wfns, s100b)
    assert r.auc1 == pytest.approx(0.823678861788618, abs=1e-12)
    assert r.auc2 == pytest.approx(0.731368563685637, abs=1e-12)
    assert r.var1 == pytest.approx(0.00146991470882363, rel=1e-9)
    assert r.var2 == pytest.approx(0.00266868245717244, rel=1e-9)
    assert r.z == pytest.approx(2.20898359144091, rel=1e-9)
    assert r.p_value == pytest.approx(0.0271757822291882, rel=1e-9)
    assert r.diff_ci95[0] == pytest.approx(0.0104061769564846, rel=1e-7)
    assert r.diff_ci95[1] == pytest.approx(0.174214419249478, rel=1e-7)
    flipped = stats.delong_test(y, s100b, wfns)
    assert flipped.z == pytest.approx(-r.z) and flipped.p_value == pytest.approx(r.p_value)


def test_fast_delong_matches_definition_and_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    sets = [np.round(rng.normal(y * k, 1.0), 1) for k in (0.5, 1.0, 1.5)]  # rounding: ties
    aucs, cov = stats.delong_covariance(y, *sets)
    np.testing.assert_allclose(aucs, [roc_auc_score(y, s) for s in sets], atol=1e-12)
    np.testing.assert_allclose(cov, slow_delong(y, sets), rtol=1e-10, atol=1e-15)


def test_delong_identical_scores_give_p_one():
    y, wfns, _ = asah()
    r = stats.delong_test(y, wfns, wfns.copy())
    assert (r.z, r.p_value, r.diff_ci95) == (0.0, 1.0, (0.0, 0.0))


def test_paired_bootstrap_ci_contains_point_estimate():
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(150), np.zeros(150)]
    ref = rng.normal(y * 1.5, 1.0)
    cand = ref + rng.normal(0, 0.8, len(y))  # a noisier copy: lower AUC
    diff = auc(y, ref) - auc(y, cand)
    lo, hi = stats.paired_bootstrap_auc_diff_ci(y, ref, cand, 500)
    assert lo < diff < hi
    assert lo > 0  # the pairing makes the drop detectable
    assert stats.paired_bootstrap_auc_diff_ci(y, ref, ref.copy(), 50) == (0.0, 0.0)


def test_ece_and_reliability_by_hand():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.15, 0.95, 0.92, 0.99])
    # bin [0,.1): p .05, y 0 -> |0-.05| = .05 ; bin [.1,.2): .15, y 1 -> .85
    # bin [.9,1]: mean p (.95+.92+.99)/3 = .953333, observed 2/3 -> .286667
    expected = (1 * 0.05 + 1 * 0.85 + 3 * abs(2 / 3 - 0.95333333333333)) / 5
    assert stats.expected_calibration_error(y, p) == pytest.approx(expected, abs=1e-12)
    bins = stats.reliability_bins(y, p)
    assert [b["n"] for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 3]
    assert bins[9]["frac_pos"] == pytest.approx(2 / 3) and bins[2]["mean_p"] is None
    assert stats.expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0


def test_operating_point_by_hand():
    op = stats.operating_point([1, 1, 1, 0, 0], [1, 0, 1, 1, 0])
    assert (op.tp, op.fn, op.fp, op.tn) == (2, 1, 1, 1)
    assert (op.sensitivity, op.specificity, op.accuracy) == (2 / 3, 0.5, 0.6)
    assert stats.operating_point([0, 0], [0, 1]).sensitivity is None


def _logit(p) -> np.ndarray:
    p = np.asarray(p, np.float64)
    return np.log(p / (1 - p)).reshape(-1, 1)


def test_drift_binary_by_hand():
    c = Contract((28, 28), 1, ("normal", "pneumonia"), threshold=0.5)
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    ref = [0.9, 0.8, 0.52, 0.7, 0.1, 0.2, 0.48, 0.3]
    cand = [0.9, 0.8, 0.49, 0.3, 0.1, 0.2, 0.51, 0.3]  # 3 flips, 2 of them within 0.05
    d = drift_from_logits(c, _logit(ref), _logit(cand), y, n_boot=200, band=0.05).to_dict()
    assert (d["flips"], d["borderline_flips"], d["flip_rate"]) == (3, 2, 3 / 8)
    assert d["decisive_flips"] == 1 and d["flip_margins"] == pytest.approx([0.02, 0.02, 0.2])
    assert d["sensitivity_reference"] == 1.0 and d["sensitivity"] == 0.5
    assert d["sens_drop"] == pytest.approx(0.5)
    assert d["specificity_reference"] == 1.0 and d["specificity"] == 0.75
    assert d["spec_drop"] == pytest.approx(0.25)
    assert d["accuracy"] == pytest.approx(5 / 8)
    assert d["max_abs_dp"] == pytest.approx(0.4) and d["mean_abs_dp"] == pytest.approx(0.46 / 8)
    assert d["auc_reference"] == 1.0 and d["auc_candidate"] == pytest.approx(roc_auc_score(y, cand))
    assert d["auc_drop"] == pytest.approx(1.0 - roc_auc_score(y, cand))
    lo, hi = d["auc_drop_ci95"]
    assert lo <= d["auc_drop"] <= hi
    assert d["details"]["confusion"] == {"tp": 2, "fn": 2, "fp": 1, "tn": 3}
    assert d["per_label"] is None and 0 <= d["delong_p"] <= 1


def test_drift_one_class_split_has_no_auc():
    c = Contract((28, 28), 1, ("normal", "pneumonia"))
    ref, cand = _logit([0.6, 0.7]), _logit([0.6, 0.4])
    d = drift_from_logits(c, ref, cand, np.array([1, 1]), n_boot=10).to_dict()
    assert d["auc_drop"] is None and d["delong_p"] is None and d["specificity"] is None
    assert d["sens_drop"] == 0.5


def test_drift_multilabel_reports_per_label_and_worst():
    c = Contract((28, 28), 1, ("a", "b"), task="multilabel")
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    ref = np.hstack([_logit([0.9, 0.8, 0.2, 0.1]), _logit([0.2, 0.9, 0.8, 0.1])])
    cand = np.hstack([_logit([0.9, 0.8, 0.2, 0.1]), _logit([0.2, 0.4, 0.8, 0.6])])
    # five copies: each label needs >= MIN_PER_CLASS (5) of each class to be evaluable
    y, ref, cand = np.tile(y, (5, 1)), np.tile(ref, (5, 1)), np.tile(cand, (5, 1))
    d = drift_from_logits(c, ref, cand, y, n_boot=20).to_dict()
    a, b = d["per_label"]
    assert (a["label"], a["flips"], a["auc_drop"]) == ("a", 0, 0.0)
    assert (b["label"], b["flips"], b["sens_drop"], b["spec_drop"]) == ("b", 10, 0.5, 0.5)
    assert d["worst_labels"]["sens_drop"] == "b" and d["sens_drop"] == 0.5
    assert d["flips"] == 10 and d["flip_rate"] == 0.5  # images with any changed label
    assert d["macro_labels"] == ["a", "b"] and d["not_evaluable"] == []
    four = drift_from_logits(c, ref[:4], cand[:4], y[:4], n_boot=20)  # 2 of each: named, no AUC
    assert [m["label"] for m in four.not_evaluable] == ["a", "b"] and four.auc_candidate is None
    assert d["accuracy"] == 0.5  # exact-match accuracy: rows 0 and 2 still fully right


def test_drift_multiclass_uses_argmax_one_vs_rest():
    c = Contract((28, 28), 1, ("x", "y", "z"), task="multiclass")
    y = np.array([0, 1, 2, 2])
    ref = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.2, 0.2, 0.6]]))
    cand = ref.copy()
    cand[3] = np.log([0.2, 0.5, 0.3])  # image 3 flips from z to y
    y, ref, cand = np.tile(y, 5), np.tile(ref, (5, 1)), np.tile(cand, (5, 1))  # >= 5 per class
    d = drift_from_logits(c, ref, cand, y, n_boot=10).to_dict()
    assert d["flips"] == 5 and d["accuracy"] == 0.75
    assert d["details"]["confusion_matrix"] == [[5, 0, 0], [0, 5, 0], [0, 5, 5]]
    z = d["per_label"][2]
    assert z["sensitivity_reference"] == 1.0 and z["sensitivity"] == 0.5
    assert math.isclose(d["sens_drop"], 0.5)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [  # scipy.stats.binomtest(k, n).proportion_ci(method="wilson")
        (1, 62, 0.002852867168621827, 0.08586720260689992),
        (0, 468, 0.0, 0.008141418582197817),
        (468, 468, 0.9918585814178022, 1.0),
    ],
)
def test_wilson_interval_matches_scipy(k, n, low, high):
    from edgemed.evaluation.stats import wilson_interval

    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-9) and hi == pytest.approx(high, abs=1e-9)
