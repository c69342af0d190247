"""Per-window drift monitoring of a result stream against the held-out reference (numpy only).

Every `step` results, the last `window` ones are compared with the held-out in-domain images the
bundle carries (validation + test, pooled: the images its evidence was measured on): the combined
domain score and the confidence (two-sample Kolmogorov-Smirnov), and the positive rate of each
class/label (two-proportion z-test). Each test runs at `alpha` (default 1e-5): a stream of 10,000
images is ~1,000 tests of 4 statistics, so the expected number of false alarms from sampling
stays well below one (union bound 0.04).

Held-out splits of one dataset differ by more than sampling (the chest X-ray subset's test split
is less confident and more often positive than its validation split: 14-19 false alarms in
10,000 images of one split against the other or the pool). So each statistic carries a
tolerance, measured on the reference: the largest distance between one held-out split and the
pool. A window alarms only when it is further from the pool than that, beyond sampling error.
An alarm is raised when a statistic goes out and not again until it has come back in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from edgemed.domain.reference import DomainReference

WINDOW = 100
STEP = 10
ALPHA = 1e-5


@dataclass(frozen=True)
class Alarm:
    """One statistic of one window that differs from the validation reference."""

    statistic: str
    p_value: float
    window_value: float
    reference_value: float
    seen: int  # results observed when it was raised
    tolerance: float = 0.0  # the in-domain split-to-split distance the test allowed

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic D (largest gap between the two ECDFs)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a)
                               - np.searchsorted(b, grid, "right") / len(b))))  # fmt: skip


def ks_pvalue(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> tuple[float, float]:
    """(D, asymptotic p) of the two-sample KS test of D - `margin` (Stephens' correction)."""
    d = ks_distance(a, b)
    ne = len(a) * len(b) / (len(a) + len(b))
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * max(d - margin, 0.0)
    if lam < 0.3:
        return d, 1.0
    p = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return d, float(min(1.0, max(0.0, p)))


def two_proportion_pvalue(k1: int, n1: int, p0: float, n0: int, margin: float = 0.0) -> float:
    """Two-sided p of a window rate k1/n1 differing from a reference rate p0 (measured on n0
    images) by more than `margin`."""
    pooled = (k1 + p0 * n0) / (n1 + n0)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n1 + 1 / n0))
    z = max(abs(k1 / n1 - p0) - margin, 0.0) / se
    return float(math.erfc(z / math.sqrt(2)))


def combined(scores: dict, thresholds: dict) -> float:
    """max over scores of score / threshold (> 1 is out); a missing or non-finite score is inf."""
    vals = [(scores.get(k), t) for k, t in thresholds.items()]
    return max((v / t if v is not None else math.inf) for v, t in vals)


def confidence(probs: np.ndarray, task: str) -> np.ndarray:
    """Binary/multilabel: mean |2p - 1| over outputs; multiclass: the top probability."""
    p = np.asarray(probs, np.float64).reshape(len(probs), -1)
    return p.max(axis=1) if task == "multiclass" else np.abs(2 * p - 1).mean(axis=1)


def _split_statistics(ref: DomainReference, task: str, positives) -> list[tuple]:
    """(combined domain scores, confidence, positive indicators) of each held-out split."""
    t = ref.thresholds
    splits = [(ref.val_input_scores, ref.val_feature_scores, ref.val_probabilities)]
    if len(ref.test_input_scores):
        splits.append((ref.test_input_scores, ref.test_feature_scores, ref.test_probabilities))
    out = []
    for inputs, feats, probs in splits:
        scores = {"input": inputs, "features": feats}
        comb = np.max(np.stack([scores[k] / t[k] for k in t]), axis=0)
        p = probs.reshape(len(probs), -1)
        out.append((comb, confidence(p, task), positives(p)))
    return out


class WindowMonitor:
    """Feed it per-image results (`observe`); it returns the alarms each call raises."""

    def __init__(self, ref: DomainReference, task: str, class_names: tuple[str, ...],
                 thresholds: tuple[float, ...], window: int = WINDOW, step: int = STEP,
                 alpha: float = ALPHA) -> None:  # fmt: skip
        self.ref, self.task, self.names = ref, task, class_names
        self.window, self.step, self.alpha = window, step, alpha
        self.thresholds = np.asarray(thresholds, np.float64)
        splits = _split_statistics(ref, task, self._positives)
        self.ref_combined, self.ref_conf, pos = (
            np.concatenate(x) for x in zip(*splits, strict=True)
        )
        self.ref_rates = pos.mean(axis=0)
        self.rates_n = len(pos)
        self.tolerance = {
            "domain_score": max(ks_distance(s[0], self.ref_combined) for s in splits),
            "confidence": max(ks_distance(s[1], self.ref_conf) for s in splits),
            "rates": np.max([np.abs(s[2].mean(axis=0) - self.ref_rates) for s in splits], axis=0),
        }
        self.scores: deque[float] = deque(maxlen=window)
        self.probs: deque[np.ndarray] = deque(maxlen=window)
        self.seen, self.active = 0, set()

    def observe(self, result: dict) -> list[Alarm]:
        """Add one result (refused ones count for the domain score only)."""
        self.seen += 1
        self.scores.append(combined(result.get("domain_scores") or {}, self.ref.thresholds))
        if "probabilities" in result:
            self.probs.append(np.array(list(result["probabilities"].values()), np.float64))
        if self.seen % self.step or len(self.scores) < self.window:
            return []
        return self._test()

    def _test(self) -> list[Alarm]:
        found = []
        s = np.array(self.scores)
        tol = self.tolerance["domain_score"]
        _, p = ks_pvalue(np.where(np.isfinite(s), s, 1e12), self.ref_combined, tol)
        found.append(("domain_score", p, float(np.median(s)),
                      float(np.median(self.ref_combined)), tol))  # fmt: skip
        if len(self.probs) >= self.window // 2:
            probs = np.stack(self.probs)
            if self.task == "binary":
                probs = probs[:, 1:]
            conf = confidence(probs, self.task)
            tol = self.tolerance["confidence"]
            _, p = ks_pvalue(conf, self.ref_conf, tol)
            found.append(("confidence", p, float(conf.mean()), float(self.ref_conf.mean()), tol))
            found += self._rates(probs)
        return self._raise(found)

    def _positives(self, probs: np.ndarray) -> np.ndarray:
        if self.task == "multiclass":
            return np.eye(probs.shape[1])[probs.argmax(axis=1)]
        return probs >= self.thresholds[: probs.shape[1]]

    def _rates(self, probs: np.ndarray) -> list[tuple]:
        pos = self._positives(probs)
        names = self.names[1:] if self.task == "binary" else self.names
        out = []
        for i, name in enumerate(names):
            k, n = int(pos[:, i].sum()), len(pos)
            ref, tol = float(self.ref_rates[i]), float(self.tolerance["rates"][i])
            p = two_proportion_pvalue(k, n, ref, self.rates_n, tol)
            out.append((f"positive_rate:{name}", p, k / n, ref, tol))
        return out

    def _raise(self, found: list[tuple]) -> list[Alarm]:
        alarms = []
        for name, p, value, ref, tol in found:
            if p < self.alpha and name not in self.active:
                self.active.add(name)
                alarms.append(Alarm(name, p, value, ref, self.seen, tol))
            elif p >= self.alpha:
                self.active.discard(name)
        return alarms


def monitor_for(guard, contract, **kw) -> WindowMonitor | None:
    """A monitor on a bundle's guard (None without a reference: nothing to compare with)."""
    if guard is None:
        return None
    return WindowMonitor(guard.reference, contract.task, tuple(contract.class_names),
                         tuple(contract.thresholds), **kw)  # fmt: skip
