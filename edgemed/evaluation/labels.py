"""Which labels a split can judge, and the per-label AUC numbers every place reports.

A label (a multi-label finding, or one class of a multi-class model taken one-vs-rest) is
*evaluable* on a split when the split holds at least MIN_PER_CLASS positive and MIN_PER_CLASS
negative images for it. Below that an AUC rests on a handful of ranks and its 95% CI is too wide
to tell a useful label from a useless one (with 4 positives a single image moves the AUC by up
to 0.25). A label that is not evaluable is named with its counts wherever a metric is computed;
it never silently disappears from a mean and it can never pass a floor.

Binary models keep their own rule (an AUC needs one image of each class) so their numbers do
not change: their one label is always the whole model, judged by the gates as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemed.evaluation.stats import delong_covariance, normal_ci

MIN_PER_CLASS = 5
# A 95% CI wider than this (upper - lower) is flagged: an AUC known only to +-0.1 cannot rank
# two models or tell a fair label from a good one.
WIDE_CI = 0.2


@dataclass(frozen=True)
class LabelCount:
    """One label's positives and negatives on a split."""

    label: str
    positives: int
    negatives: int
    min_per_class: int = MIN_PER_CLASS

    @property
    def evaluable(self) -> bool:
        return min(self.positives, self.negatives) >= self.min_per_class

    def counts_text(self) -> str:
        return f"{self.label} ({self.positives} positive, {self.negatives} negative)"

    def to_dict(self) -> dict:
        return {"label": self.label, "positives": self.positives, "negatives": self.negatives}


def label_counts(
    names, y: np.ndarray, min_per_class: int = MIN_PER_CLASS
) -> tuple[LabelCount, ...]:
    """Counts of each column of a 0/1 label matrix (N, labels)."""
    y = np.asarray(y).reshape(len(y), -1).astype(bool)
    return tuple(
        LabelCount(str(n), int(y[:, k].sum()), int((~y[:, k]).sum()), min_per_class)
        for k, n in enumerate(names)
    )


def not_evaluable_text(counts) -> str:
    """'' or a sentence naming each label the split cannot judge, with its counts."""
    bad = [c for c in counts if not c.evaluable]
    if not bad:
        return ""
    n = bad[0].min_per_class
    return (
        f"{len(bad)} label(s) cannot be evaluated on this split (fewer than {n} positive or {n} "
        f"negative images): " + ", ".join(c.counts_text() for c in bad)
    )


def auc_with_ci(y: np.ndarray, scores: np.ndarray) -> dict:
    """AUC with its DeLong 95% CI, the chance verdict and a wide-CI flag, for one label column.
    chance: "above" (lower bound > 0.5), "inverted" (upper bound < 0.5) or "undecided"."""

    aucs, cov = delong_covariance(np.asarray(y).reshape(-1), np.asarray(scores, np.float64))
    lo, hi = normal_ci(float(aucs[0]), float(cov[0, 0]))
    chance = "above" if lo > 0.5 else "inverted" if hi < 0.5 else "undecided"
    return {
        "auc": float(aucs[0]),
        "auc_ci95": [lo, hi],
        "chance": chance,
        "ci_too_wide": hi - lo > WIDE_CI,
    }


def per_label_aucs(names, y: np.ndarray, scores: np.ndarray) -> list[dict]:
    """Per label: counts, evaluable, and (when evaluable) AUC, CI and chance verdict."""
    y = np.asarray(y).reshape(len(y), -1)
    out = []
    for k, c in enumerate(label_counts(names, y)):
        entry = {**c.to_dict(), "evaluable": c.evaluable}
        if c.evaluable:
            entry |= auc_with_ci(y[:, k], scores[:, k])
        else:  # named, with its counts, in `not_evaluable` and in the warning
            entry |= {"auc": None, "auc_ci95": None, "chance": None, "ci_too_wide": None}
        out.append(entry)
    return out


def macro(per: list[dict], key: str = "auc") -> float | None:
    """Mean of `key` over the evaluable labels (None when no label is evaluable)."""
    values = [p[key] for p in per if p.get("evaluable") and p.get(key) is not None]
    return float(np.mean(values)) if values else None


def chance_warning(per: list[dict], where: str) -> str:
    """'' or one loud line naming the labels that are inverted, not above chance, or unjudged."""
    inverted = [p["label"] for p in per if p.get("chance") == "inverted"]
    undecided = [p["label"] for p in per if p.get("chance") == "undecided"]
    missing = [f"{p['label']} ({p['positives']}+/{p['negatives']}-)" for p in per
               if not p.get("evaluable")]  # fmt: skip
    parts = []
    if inverted:
        parts.append(f"WORSE than chance (inverted, AUC 95% CI below 0.5): {', '.join(inverted)}")
    if undecided:
        parts.append(f"not better than chance (AUC 95% CI includes 0.5): {', '.join(undecided)}")
    wide = [p["label"] for p in per if p.get("ci_too_wide")]
    if wide:
        parts.append(f"AUC 95% CI wider than {WIDE_CI:g}, too few cases to rank: {', '.join(wide)}")
    if missing:
        parts.append(
            f"cannot be evaluated (fewer than {MIN_PER_CLASS} positive or negative images): "
            + ", ".join(missing)
        )
    return f"on {where}: " + "; ".join(parts) if parts else ""
