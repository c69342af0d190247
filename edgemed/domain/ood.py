"""Evidence for the guard itself: how well it separates in-domain from out-of-domain images.

Per OOD set: AUROC of the combined score (in-domain test split vs the OOD images), the share
flagged, the in-domain false-flag rate at the threshold that flags 95% of the OOD set
(FPR@95TPR); plus the in-domain false-flag rate on the test split with its Wilson interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemed.contract import Contract
from edgemed.domain.fit import run_with_features
from edgemed.evaluation.stats import wilson_interval


@dataclass(frozen=True)
class Scored:
    """Combined scores (score / threshold; > 1 is out) and the verdicts of one image set."""

    scores: np.ndarray
    flagged: np.ndarray


def score_images(runner, guard, contract: Contract, images: np.ndarray, batch: int = 64) -> Scored:
    """Run the artifact (features) and the guard over uint8 images."""

    _, feats = run_with_features(runner, contract, images, batch)
    return Scored(guard.combined_score(images, feats), guard.out_of_domain(images, feats))


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(score of an OOD image > score of an in-domain one), ties counted half (Mann-Whitney)."""
    neg, pos = np.asarray(negatives, np.float64), np.asarray(positives, np.float64)
    allv = np.concatenate([neg, pos])
    allv = np.where(np.isfinite(allv), allv, np.finfo(np.float64).max)
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    i = 0
    while i < len(sorted_v):  # average ranks over ties
        j = i
        while j + 1 < len(sorted_v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    r_pos = ranks[len(neg) :].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def auroc_ci(negatives: np.ndarray, positives: np.ndarray, z: float = 1.959964) -> list[float]:
    """Hanley-McNeil 95% interval of the AUROC."""
    a, n1, n2 = auroc(negatives, positives), len(positives), len(negatives)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / (n1 * n2)
    half = z * float(np.sqrt(max(var, 0.0)))
    return [max(0.0, a - half), min(1.0, a + half)]


def fpr_at_tpr(negatives: np.ndarray, positives: np.ndarray, tpr: float = 0.95) -> float:
    """Share of in-domain images flagged at the threshold that flags `tpr` of the OOD set."""
    pos = np.sort(np.where(np.isfinite(positives), positives, np.inf))
    cut = pos[int(np.floor((1 - tpr) * len(pos)))]
    return float(np.mean(np.asarray(negatives) >= cut))


def ood_row(name: str, in_domain: Scored, ood: Scored) -> dict:
    """The bench row of one OOD set against the in-domain test split."""
    return {
        "ood_set": name,
        "n": len(ood.scores),
        "auroc": auroc(in_domain.scores, ood.scores),
        "auroc_ci95": auroc_ci(in_domain.scores, ood.scores),
        "flagged": float(ood.flagged.mean()),
        "fpr_at_95tpr": fpr_at_tpr(in_domain.scores, ood.scores),
    }


def in_domain_row(scored: Scored) -> dict:
    """The in-domain false-flag rate with its Wilson interval."""

    k, n = int(scored.flagged.sum()), len(scored.flagged)
    return {"n": n, "flagged": k, "rate": k / n, "ci95": list(wilson_interval(k, n))}
