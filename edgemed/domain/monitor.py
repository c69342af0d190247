"""Per-window drift monitoring of a result stream against the validation reference (numpy only).

Every `step` results, the last `window` ones are compared with the validation split the bundle
carries: the combined domain score (two-sample Kolmogorov-Smirnov), the confidence (KS), and the
positive rate of each class/label (two-proportion z-test). Each test runs at `alpha` (default
1e-5): a stream of 10,000 images is ~1,000 tests of 4 statistics, so the expected number of false
alarms over it stays well below one (union bound 0.04). An alarm is raised when a statistic goes
out and not again until it has come back in (one event per episode).
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

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def ks_pvalue(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(D, asymptotic p) of the two-sample Kolmogorov-Smirnov test (Stephens' correction)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a)
                            - np.searchsorted(b, grid, "right") / len(b))))  # fmt: skip
    ne = len(a) * len(b) / (len(a) + len(b))
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    if lam < 0.3:
        return d, 1.0
    p = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return d, float(min(1.0, max(0.0, p)))


def two_proportion_pvalue(k1: int, n1: int, p0: float, n0: int) -> float:
    """Two-sided p of a window rate k1/n1 against a reference rate p0 measured on n0 images."""
    pooled = (k1 + p0 * n0) / (n1 + n0)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n1 + 1 / n0))
    z = abs(k1 / n1 - p0) / se
    return float(math.erfc(z / math.sqrt(2)))


def combined(scores: dict, thresholds: dict) -> float:
    """max over scores of score / threshold (> 1 is out); a missing or non-finite score is inf."""
    vals = [(scores.get(k), t) for k, t in thresholds.items()]
    return max((v / t if v is not None else math.inf) for v, t in vals)


def confidence(probs: np.ndarray, task: str) -> np.ndarray:
    """Binary/multilabel: mean |2p - 1| over outputs; multiclass: the top probability."""
    p = np.asarray(probs, np.float64).reshape(len(probs), -1)
    return p.max(axis=1) if task == "multiclass" else np.abs(2 * p - 1).mean(axis=1)


class WindowMonitor:
    """Feed it per-image results (`observe`); it returns the alarms each call raises."""

    def __init__(self, ref: DomainReference, task: str, class_names: tuple[str, ...],
                 thresholds: tuple[float, ...], window: int = WINDOW, step: int = STEP,
                 alpha: float = ALPHA) -> None:  # fmt: skip
        self.ref, self.task, self.names = ref, task, class_names
        self.window, self.step, self.alpha = window, step, alpha
        t = ref.thresholds
        parts = [ref.val_input_scores / t["input"]]
        if "features" in t:
            parts.append(ref.val_feature_scores / t["features"])
        self.ref_combined = np.max(np.stack(parts), axis=0)
        probs = ref.val_probabilities.reshape(len(ref.val_probabilities), -1)
        self.ref_conf = confidence(probs, task)
        self.thresholds = np.asarray(thresholds, np.float64)
        self.ref_rates = self._positives(probs).mean(axis=0)
        self.rates_n = len(probs)
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
        d, p = ks_pvalue(np.where(np.isfinite(s), s, 1e12), self.ref_combined)
        found.append(("domain_score", p, float(np.median(s)), float(np.median(self.ref_combined))))
        if len(self.probs) >= self.window // 2:
            probs = np.stack(self.probs)
            if self.task == "binary":
                probs = probs[:, 1:]
            conf = confidence(probs, self.task)
            _, p = ks_pvalue(conf, self.ref_conf)
            found.append(("confidence", p, float(conf.mean()), float(self.ref_conf.mean())))
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
            p = two_proportion_pvalue(k, n, float(self.ref_rates[i]), self.rates_n)
            out.append((f"positive_rate:{name}", p, k / n, float(self.ref_rates[i])))
        return out

    def _raise(self, found: list[tuple]) -> list[Alarm]:
        alarms = []
        for name, p, value, ref in found:
            if p < self.alpha and name not in self.active:
                self.active.add(name)
                alarms.append(Alarm(name, p, value, ref, self.seen))
            elif p >= self.alpha:
                self.active.discard(name)
        return alarms


def monitor_for(guard, contract, **kw) -> WindowMonitor | None:
    """A monitor on a bundle's guard (None without a reference: nothing to compare with)."""
    if guard is None:
        return None
    return WindowMonitor(guard.reference, contract.task, tuple(contract.class_names),
                         tuple(contract.thresholds), **kw)  # fmt: skip
