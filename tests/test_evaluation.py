"""The evaluation core: output sanity, drift with borderline/decisive flips, limits and verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemed.contract import Contract
from edgemed.evaluation.drift import drift_from_logits
from edgemed.evaluation.limits import (
    BUNDLE_DEFAULTS,
    EXPORT_DEFAULTS,
    METRICS,
    limits_from,
    verdict,
)
from edgemed.evaluation.sanity import OutputError, check_outputs
from edgemed.evaluation.stats import mcnemar_exact

BINARY = Contract(input_size=(28, 28), channels=1, class_names=("normal", "pneumonia"))
THREE = Contract(input_size=(28, 28), channels=1, class_names=("a", "b", "c"), task="multiclass")


def _logits(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(np.int64)
    return rng.normal(2.0 * (y - 0.5) * 2, 1.0, n).astype(np.float32)[:, None], y


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (np.full((50, 1), np.nan), "non-finite"),
        (np.r_[np.zeros((49, 1)), [[np.inf]]], "non-finite"),
        (np.full((50, 1), 0.3), "constant"),
        (np.r_[np.full((25, 1), -600.0), np.full((25, 1), 600.0)], "saturated"),
        (np.zeros((50, 5)), "needs exactly one logit"),
        (np.zeros((50, 2)), "needs exactly one logit"),
    ],
)
def test_sanity_refuses_outputs_no_metric_can_use(bad, needle):
    with pytest.raises(OutputError, match=needle):
        check_outputs(BINARY, bad, "the model")


def test_sanity_accepts_a_real_spread_and_binary_vector():
    x, _ = _logits()
    assert check_outputs(BINARY, x[:, 0], "m").shape == (200, 1)


def test_multiclass_auc_is_computed_one_vs_rest_and_gated():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    ref = np.eye(3)[y] * 3 + rng.normal(0, 1, (300, 3))
    cand = rng.normal(0, 1, (300, 3))  # a model that lost everything
    d = drift_from_logits(THREE, ref, cand, y)
    assert d.auc_drop is not None and d.auc_drop > 0.3 and len(d.per_label) == 3
    v = verdict(limits_from({"auc_drop": 0.0}, EXPORT_DEFAULTS), d)
    assert not v.passed and any(c.metric == "auc_drop" for c in v.failed)


def test_missing_metric_fails_never_passes():
    x, y = _logits()
    d = drift_from_logits(BINARY, x, x, np.zeros_like(y))  # one class: no AUC
    v = verdict(limits_from({}, EXPORT_DEFAULTS), d)
    failed = {c.metric: c.detail for c in v.failed}
    assert "auc_drop" in failed and "could not be computed" in failed["auc_drop"]


def test_borderline_flips_are_not_counted_decisive_ones_are():
    x, y = _logits()
    t = BINARY.threshold
    logit_t = np.log(t / (1 - t))
    near = np.argsort(np.abs(x[:, 0] - logit_t))[:3]
    x[near, 0] = logit_t + 0.002  # FP32 within 0.0005 of the threshold in probability
    cand = x.copy()
    cand[near, 0] = logit_t - 0.002  # ... and just below it in the candidate
    d = drift_from_logits(BINARY, x, cand, y)
    assert d.flips == 3 and d.borderline_flips == 3 and d.decisive_flips == 0
    assert verdict(limits_from({}, EXPORT_DEFAULTS), d).passed
    far = np.argsort(-np.abs(x[:, 0] - logit_t))[:3]
    cand[far, 0] = -cand[far, 0]  # clearly decided images flipped: a damaged model
    d2 = drift_from_logits(BINARY, x, cand, y)
    assert d2.decisive_flips == 3
    v = verdict(limits_from({}, EXPORT_DEFAULTS), d2)
    failed = {c.metric: c.detail for c in v.failed}
    assert "decisive" in failed["flip_rate"]


def test_small_split_says_how_many_images_a_budget_needs():
    x, y = _logits(78)
    cand = x.copy()
    cand[0, 0] = -cand[0, 0] * 10  # one decisive flip on 78 images
    d = drift_from_logits(BINARY, x, cand, y)
    failed = {c.metric: c.detail for c in verdict(limits_from({}, EXPORT_DEFAULTS), d).failed}
    assert "needs >= 100 images" in failed["flip_rate"] and "95% CI" in failed["flip_rate"]


def test_mcnemar_exact_matches_the_binomial():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 * 0.5**6)
    assert mcnemar_exact(3, 3) == 1.0


def test_floors_read_the_lower_bound_and_the_reference_must_beat_chance():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    noise = rng.normal(0, 1, (120, 1))  # an untrained model: AUC near 0.5
    d = drift_from_logits(BINARY, noise, noise, y)
    v = verdict(limits_from({}, BUNDLE_DEFAULTS), d)
    assert "reference_auc" in {c.metric for c in v.failed}
    good, yy = _logits()
    d2 = drift_from_logits(BINARY, good, good, yy)
    assert verdict(limits_from({"min_auc": 0.8, "min_sens": 0.5}, BUNDLE_DEFAULTS), d2).passed


def test_every_metric_reads_a_drift_field_and_has_a_flag():
    x, y = _logits()
    d = drift_from_logits(BINARY, x, x, y)
    for m in METRICS.values():
        assert hasattr(d, m.field) and m.flag.startswith("--")


def test_limit_values_are_checked():
    from edgemed.errors import InputError

    for bad in (-0.1, 1.5, float("nan"), "x", True):
        with pytest.raises(InputError, match="--max-auc-drop"):
            limits_from({"auc_drop": bad}, ())


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    noise=st.floats(0.0, 3.0),
    auc_limit=st.floats(0.0, 0.2),
    flip_limit=st.floats(0.0, 0.3),
)
def test_drift_roundtrips_through_json_with_the_same_verdict(seed, noise, auc_limit, flip_limit):
    """What export writes to a manifest and bench to a row reads back to the same verdict."""
    import json

    from edgemed.evaluation.drift import Drift

    x, y = _logits(120, seed)
    cand = x + np.random.default_rng(seed + 1).normal(0, noise, x.shape)
    d = drift_from_logits(BINARY, x, cand, y)
    back = Drift.from_dict(json.loads(json.dumps(d.to_dict())))
    limits = limits_from({"auc_drop": auc_limit, "flip_rate": flip_limit}, ())
    assert verdict(limits, d) == verdict(limits, back)


def test_decisive_auc_drop_matches_the_pairwise_definition():
    from edgemed.evaluation.stats import decisive_auc_drop

    rng = np.random.default_rng(5)
    for n, band in ((300, 0.0), (300, 0.05), (61, 0.01)):
        y = rng.integers(0, 2, n).astype(bool)
        r = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + y)))
        c = np.round(r + rng.normal(0, 0.03, n), 2)  # ties too
        sr, sc = r[y][:, None] - r[~y][None, :], c[y][:, None] - c[~y][None, :]
        brute = ((np.abs(sr) > band) * (np.sign(sr) - np.sign(sc))).sum() / 2 / sr.size
        assert decisive_auc_drop(y, r, c, band) == pytest.approx(brute, abs=1e-12)


def test_the_one_pareto_front_keeps_only_undominated_points_by_cost():
    from edgemed.evaluation.pareto import pareto_front

    pts = [(3.0, 0.90), (1.0, 0.80), (2.0, 0.85), (2.0, 0.70), (4.0, 0.88), (1.0, 0.80)]
    assert pareto_front(pts) == [1, 2, 0]
    assert pareto_front([]) == []
