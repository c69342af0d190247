"""One verdict per image from a fitted reference: `in`, `out` (never `in` for a non-finite score),
or `unknown` when the bundle carries no reference. Numpy only (runs on the appliance)."""

from __future__ import annotations

import math

import numpy as np

from edgemed.domain.reference import DomainReference
from edgemed.domain.stats import input_statistics

UNKNOWN = {"domain": "unknown", "domain_reason": "the bundle carries no domain reference"}


class DomainGuard:
    """Scores images against a `DomainReference` (feature and input space, one verdict)."""

    def __init__(self, reference: DomainReference) -> None:
        self.reference = reference
        self.thresholds = dict(reference.thresholds)

    @property
    def uses_features(self) -> bool:
        return self.reference.features is not None

    def scores(self, images: np.ndarray, features: np.ndarray | None) -> dict[str, np.ndarray]:
        """{"input": (N,), "features": (N,)} squared Mahalanobis distances (inf when non-finite)."""
        out = {"input": self.reference.inputs.distance(input_statistics(images))}
        if self.uses_features:
            if features is None:
                out["features"] = np.full(len(out["input"]), np.inf)
            else:
                out["features"] = self.reference.features.distance(features)
        return out

    def verdicts(self, images: np.ndarray, features: np.ndarray | None) -> list[dict]:
        """One record per image: domain in/out, the scores, the thresholds and why it is out."""
        s = self.scores(images, features)
        return [
            self._verdict({k: float(v[i]) for k, v in s.items()}) for i in range(len(s["input"]))
        ]

    def _verdict(self, scores: dict[str, float]) -> dict:
        reasons = []
        for name, value in scores.items():
            if not math.isfinite(value):
                reasons.append(f"{name} score is not finite")
            elif value > self.thresholds[name]:
                reasons.append(f"{name} score {value:.1f} above {self.thresholds[name]:.1f}")
        rec = {
            "domain": "out" if reasons else "in",
            "domain_scores": {
                k: (round(v, 3) if math.isfinite(v) else None) for k, v in scores.items()
            },
            "domain_thresholds": {k: round(v, 3) for k, v in self.thresholds.items()},
        }
        if reasons:
            rec["domain_reason"] = "; ".join(reasons)
        return rec

    def out_of_domain(self, images: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        """Boolean (N,) verdicts (non-finite counts as out)."""
        s = self.scores(images, features)
        flags = np.zeros(len(s["input"]), bool)
        for name, v in s.items():
            flags |= ~np.isfinite(v) | (v > self.thresholds[name])
        return flags

    def combined_score(self, images: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        """max over scores of score / threshold (> 1 is out): one number per image, for AUROC."""
        s = self.scores(images, features)
        ratios = [np.where(np.isfinite(v), v / self.thresholds[k], np.inf) for k, v in s.items()]
        return np.max(np.stack(ratios), axis=0)
