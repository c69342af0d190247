"""One verdict per image from a fitted reference: `in`, `out` (never `in` for a non-finite score),
or `unknown` when the bundle carries no reference. Numpy only (runs on the appliance)."""

from __future__ import annotations

import math

import numpy as np

from edgemed.domain.reference import (
    DomainReference,
    check_feature_size,
    check_matches,
    load_reference,
)
from edgemed.domain.stats import input_statistics

POLICY_KEY = "domain_policy"
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


def infer_features(runner, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits and features from a runner with a feature hook (`infer_features`), else logits only."""
    hook = getattr(runner, "infer_features", None)
    if hook is None:
        return runner.infer(x), None
    logits, feats = hook(x)
    return logits, (None if feats is None else np.asarray(feats, np.float32).reshape(len(x), -1))


def artifact_guard(artifact, runner) -> DomainGuard | None:
    """The guard of an artifact whose runner is active, None without a reference. A reference
    fitted on other model files, other data or another feature width is refused (one line)."""

    ref = load_reference(artifact.path)
    if ref is None:
        return None
    inputs = (artifact.manifest.get("provenance") or {}).get("inputs") or {}
    check_matches(ref, artifact.manifest.get("files") or {}, inputs.get("data"))
    c = artifact.contract
    probe = np.full((1, *c.input_size, c.channels), 128, np.uint8)
    _, feats = infer_features(runner, c.normalize(probe))
    check_feature_size(ref, None if feats is None or ref.features is None else feats.shape[1])
    return DomainGuard(ref)
