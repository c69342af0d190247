"""Clinical metrics in plain numpy: AUC, operating-threshold choice, sensitivity/specificity, CIs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgemed.errors import InputError


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC via the Mann-Whitney U statistic with mid-ranks for ties."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError("AUC needs both classes in the evaluated labels; this split has only one")
    ranks = _midranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _midranks(x: np.ndarray) -> np.ndarray:
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    end = np.cumsum(counts)
    return ((end - counts + 1 + end) / 2.0)[inv]


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximizing sensitivity + specificity - 1 (midpoint between neighbouring scores)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, np.float64)
    cand = np.unique(s)
    mids = np.concatenate([[cand[0] - 1e-6], (cand[:-1] + cand[1:]) / 2, [cand[-1] + 1e-6]])
    best, best_j = 0.5, -np.inf
    for t in mids:
        pred = s >= t
        j = pred[y].mean() + (~pred[~y]).mean() - 1
        if j > best_j + 1e-12:
            best, best_j = float(t), j
    return float(np.clip(best, 1e-6, 1 - 1e-6))


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics of binary scores at one operating threshold."""

    n: int
    auc: float
    auc_ci95: tuple[float, float]
    accuracy: float
    sensitivity: float
    specificity: float
    threshold: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["auc_ci95"] = list(self.auc_ci95)
        return d


def binary_metrics(
    labels: np.ndarray, scores: np.ndarray, threshold: float, n_boot: int = 1000, seed: int = 0
) -> BinaryMetrics:
    """AUC with a 95% bootstrap CI, accuracy, sensitivity and specificity at `threshold`."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, np.float64)
    pred = s >= threshold
    return BinaryMetrics(
        n=len(y),
        auc=auc(y, s),
        auc_ci95=bootstrap_auc_ci(y, s, n_boot, seed),
        accuracy=float((pred == y).mean()),
        sensitivity=float(pred[y].mean()),
        specificity=float((~pred[~y]).mean()),
        threshold=float(threshold),
    )


def bootstrap_auc_ci(
    labels: np.ndarray, scores: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95% CI of AUC, resampling within each class (stratified) so every draw has both."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, np.float64)
    rng = np.random.default_rng(seed)
    pos, neg = s[y], s[~y]
    vals = []
    for _ in range(n_boot):
        p = rng.choice(pos, len(pos))
        q = rng.choice(neg, len(neg))
        vals.append(auc(np.r_[np.ones(len(p)), np.zeros(len(q))], np.r_[p, q]))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)
