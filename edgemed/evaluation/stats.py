"""Statistics for comparing a candidate model with its FP32 reference on the same labelled images.

- `delong_test`: DeLong's test for two correlated AUCs, with the fast O(n log n) algorithm of
  Sun & Xu (2014, IEEE Signal Processing Letters 21(11)) computing the structural components
  (placement values) from mid-ranks instead of the O(m n) pairwise kernel.
- `paired_bootstrap_auc_diff_ci`: percentile CI of AUC(reference) - AUC(candidate), resampling
  the same images for both (stratified by class so every draw has both classes).
- `expected_calibration_error`, `reliability_bins`, `operating_point`.
- `wilson_interval` (a flip rate's CI), `mcnemar_exact` (paired decisions), `normal_ci`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edgemed.evaluation.metrics import _midranks, auc


@dataclass(frozen=True)
class DeLongResult:
    """AUCs of two scorings of the same cases, their DeLong covariance, and the test of equality."""

    auc1: float
    auc2: float
    var1: float
    var2: float
    cov12: float
    z: float
    p_value: float
    diff_ci95: tuple[float, float]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["diff_ci95"] = list(self.diff_ci95)
        return d


def delong_placements(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and the placement values (Sun & Xu): V10 per positive (fraction of negatives scored
    lower, ties half) and V01 per negative (fraction of positives scored higher, ties half)."""
    y = np.asarray(labels).astype(bool).reshape(-1)
    s = np.asarray(scores, np.float64).reshape(-1)
    pos, neg = s[y], s[~y]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError("DeLong needs both classes")
    tz = _midranks(np.concatenate([pos, neg]))
    tx, ty = _midranks(pos), _midranks(neg)
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    auc = float((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n))
    return auc, v10, v01


def delong_covariance(labels: np.ndarray, *score_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance matrix (k, k) for k scorings of the same cases."""
    parts = [delong_placements(labels, s) for s in score_sets]
    aucs = np.array([p[0] for p in parts])
    v10 = np.stack([p[1] for p in parts])
    v01 = np.stack([p[2] for p in parts])
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(parts), len(parts)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(parts), len(parts)))
    return aucs, s10 / m + s01 / n


def delong_test(labels: np.ndarray, scores1: np.ndarray, scores2: np.ndarray) -> DeLongResult:
    """Two-sided DeLong test of AUC(scores1) == AUC(scores2) on the same labelled cases."""
    aucs, cov = delong_covariance(labels, scores1, scores2)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    sd = math.sqrt(max(var, 0.0))
    if sd == 0.0:
        z, p = 0.0, 1.0 if diff == 0.0 else 0.0
    else:
        z = diff / sd
        p = math.erfc(abs(z) / math.sqrt(2.0))
    half = 1.959963984540054 * sd
    return DeLongResult(
        float(aucs[0]),
        float(aucs[1]),
        float(cov[0, 0]),
        float(cov[1, 1]),
        float(cov[0, 1]),
        float(z),
        float(p),
        (diff - half, diff + half),
    )


def paired_bootstrap_auc_diff_ci(
    labels: np.ndarray,
    scores_ref: np.ndarray,
    scores_cand: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile 95% CI of AUC(ref) - AUC(cand), resampling images (within each class) jointly."""
    y = np.asarray(labels).astype(bool).reshape(-1)
    a, b = np.asarray(scores_ref, np.float64), np.asarray(scores_cand, np.float64)
    pos, neg = np.nonzero(y)[0], np.nonzero(~y)[0]
    rng = np.random.default_rng(seed)
    lab = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        diffs[i] = auc(lab, a[idx]) - auc(lab, b[idx])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-width probability bins: count, mean predicted probability, observed positive rate."""
    y = np.asarray(labels, np.float64).reshape(-1)
    p = np.asarray(probs, np.float64).reshape(-1)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        out.append(
            {
                "lo": b / bins,
                "hi": (b + 1) / bins,
                "n": n,
                "mean_p": float(p[sel].mean()) if n else None,
                "frac_pos": float(y[sel].mean()) if n else None,
            }
        )
    return out


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE = sum over equal-width bins of (n_bin / n) * |observed positive rate - mean p|."""
    return ece_from_bins(reliability_bins(labels, probs, bins))


def ece_from_bins(bins: list[dict]) -> float:
    """ECE of `reliability_bins` already computed (the report draws the same bins)."""
    total = sum(b["n"] for b in bins)
    return float(sum(b["n"] / total * abs(b["frac_pos"] - b["mean_p"]) for b in bins if b["n"]))


@dataclass(frozen=True)
class OperatingPoint:
    """Confusion counts and rates of binary decisions against labels."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / max(1, self.tp + self.fp + self.tn + self.fn)

    @property
    def sensitivity(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def specificity(self) -> float | None:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else None

    def confusion(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


def operating_point(labels: np.ndarray, decisions: np.ndarray) -> OperatingPoint:
    """Confusion counts of boolean decisions against 0/1 labels."""
    y = np.asarray(labels).astype(bool).reshape(-1)
    d = np.asarray(decisions).astype(bool).reshape(-1)
    return OperatingPoint(
        tp=int((d & y).sum()),
        fp=int((d & ~y).sum()),
        tn=int((~d & ~y).sum()),
        fn=int((~d & y).sum()),
    )


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95% by default), e.g. a flip rate on a small
    test split: 1 flip in 62 images is 1.6%, with a 95% interval of 0.3-8.6%."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    p, z2 = k / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, center - half), min(1.0, center + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: b and c are the discordant pairs (one right, the other wrong)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return float(min(1.0, 2.0 * tail))


def normal_ci(value: float, var: float, z: float = 1.959964) -> tuple[float, float]:
    """value +- z * sqrt(var), clipped to [0, 1] (an AUC's DeLong interval)."""
    half = z * math.sqrt(max(var, 0.0))
    return max(0.0, value - half), min(1.0, value + half)


def decisive_auc_drop(
    labels: np.ndarray, ref: np.ndarray, cand: np.ndarray, band: float, full: float | None = None
) -> float:
    """The part of AUC(ref) - AUC(cand) made by (positive, negative) pairs whose reference scores
    differ by more than `band`: a re-ordering of two images the reference itself scored within
    the band of each other is numerical noise, like a flip inside the borderline band.

    The full drop (mid-ranks) minus the near pairs' share; near pairs are found by a sorted window
    over distinct (reference, candidate) score pairs weighted by how often each occurs (repeated
    images, resampled sets), so this is O(n log n + distinct near pairs), not O(pos x neg)."""
    y = np.asarray(labels).astype(bool).reshape(-1)
    r, c = np.asarray(ref, np.float64).reshape(-1), np.asarray(cand, np.float64).reshape(-1)
    if full is None:  # AUC(ref) - AUC(cand), when the caller has not computed it already
        full = auc(y, r) - auc(y, c)
    rp, cp, wp = _distinct_pairs(r[y], c[y])
    rn, cn, wn = _distinct_pairs(r[~y], c[~y])  # sorted by reference score
    lo = np.searchsorted(rn, rp - band, side="left")
    hi = np.searchsorted(rn, rp + band, side="right")
    counts = hi - lo
    if counts.sum() == 0:
        return float(full)
    pos = np.repeat(np.arange(len(rp)), counts)
    neg = np.repeat(lo - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(counts.sum())
    signs = np.sign(rp[pos] - rn[neg]) - np.sign(cp[pos] - cn[neg])
    near = (signs * wp[pos] * wn[neg]).sum() / 2.0
    return float(full - near / (wp.sum() * wn.sum()))


def _distinct_pairs(r: np.ndarray, c: np.ndarray):
    """Distinct (r, c) rows sorted by r then c, and how often each occurs."""
    order = np.lexsort((c, r))
    rs, cs = r[order], c[order]
    first = np.flatnonzero(np.r_[True, (rs[1:] != rs[:-1]) | (cs[1:] != cs[:-1])])
    return rs[first], cs[first], np.diff(np.r_[first, len(rs)]).astype(np.float64)


def resample_counts(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n): how often each image appears in each bootstrap resample (uniform, with
    replacement). Drawn once and shared by every label of a multi-output model."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n_boot, n))
    rows = np.repeat(np.arange(n_boot), n)
    return np.bincount(rows * n + idx.reshape(-1), minlength=n_boot * n).reshape(n_boot, n)


def resampled_auc_diff_ci(
    labels: np.ndarray, scores_ref: np.ndarray, scores_cand: np.ndarray, counts: np.ndarray
) -> tuple[float, float]:
    """Percentile 95% CI of AUC(ref) - AUC(cand) over shared resamples (`resample_counts`).

    Each resample's AUCs are the count-weighted pairwise kernel (1 if the positive scores higher,
    1/2 on ties: the mid-rank AUC of the resampled images), so no resample is sorted: the cost is
    one (resamples x positives) @ (positives x negatives) product per label. Resamples without a
    positive or a negative are left out (rare for an evaluable label)."""
    y = np.asarray(labels).astype(bool).reshape(-1)
    r, c = np.asarray(scores_ref, np.float64), np.asarray(scores_cand, np.float64)

    def kernel(s: np.ndarray) -> np.ndarray:
        a, b = s[y][:, None], s[~y][None, :]
        return (a > b) + 0.5 * (a == b)

    w, v = counts[:, y].astype(np.float64), counts[:, ~y].astype(np.float64)
    pairs = w.sum(axis=1) * v.sum(axis=1)
    ok = pairs > 0
    diff = ((w[ok] @ (kernel(r) - kernel(c))) * v[ok]).sum(axis=1) / pairs[ok]
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return float(lo), float(hi)
