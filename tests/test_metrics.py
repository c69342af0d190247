from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from edgemed.evaluation.metrics import auc, binary_metrics, bootstrap_auc_ci, youden_threshold


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 2)  # rounding creates ties
    assert abs(auc(y, s) - roc_auc_score(y, s)) < 1e-12


def test_hand_computed_auc():
    # pairs (pos, neg): (0.8>0.1),(0.8>0.4),(0.35<0.4),(0.35>0.1) -> 3/4
    assert auc([1, 1, 0, 0], [0.8, 0.35, 0.4, 0.1]) == 0.75


def test_youden_and_metrics_at_threshold():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.55, 0.7, 0.9])
    t = youden_threshold(y, s)
    m = binary_metrics(y, s, t, n_boot=200)
    assert m.sensitivity + m.specificity - 1 >= 2 / 3 - 1e-9
    assert 0 <= m.auc_ci95[0] <= m.auc <= m.auc_ci95[1] <= 1


def test_bootstrap_ci_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(400), np.zeros(400)]
    s = rng.normal(y, 1.0)
    lo, hi = bootstrap_auc_ci(y, s, 300)
    lo_s, hi_s = bootstrap_auc_ci(y[::8], s[::8], 300)
    assert lo < auc(y, s) < hi
    assert hi - lo < hi_s - lo_s
