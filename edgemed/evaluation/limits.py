"""Metrics that can gate, their limits and the verdict: one home for every gate in edgemed.

A metric is one entry in METRICS: the Drift field it reads, its report column, whether a limit is
a ceiling on a drop or a floor, its CLI flag and its default limit (written here once). `Limits`
holds the limits in force; `verdict(limits, drift)` checks each one. A metric that could not be
computed (None: one class in the labels, no labels) fails its limit; it never passes.
Multi-label and multi-class drifts are judged per label (every label in `per_label`, i.e. every
label the artifact reports): a check fails when any label fails it, and says which. A label the
split cannot evaluate (evaluation/labels.py) fails every floor; drift ceilings judge the evaluable
labels and name the others. The flip rate counts images, so it is one number for all labels.
Export's budget, accuracy control, build-engine's re-check, bench's gate and the bundle's
release gate all call `verdict`, so the same numbers give the same answer everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgemed.errors import InputError
from edgemed.evaluation.drift import Drift


@dataclass(frozen=True)
class Metric:
    """One gateable number: `kind` "max" (drift: positive = worse) or "min" (a floor).
    `column` heads its bench table column, which shows `shown` (default: `field`) as `fmt`."""

    key: str
    field: str
    column: str
    words: str
    kind: str
    flag: str
    default: float | None
    strict: bool = False  # a floor that must be exceeded, not met (better than chance)
    fmt: str = ".4f"
    shown: str | None = None

    @property
    def shown_field(self) -> str:
        return self.shown or self.field


METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("auc_drop", "auc_drop_decisive", "AUC drop (positive = worse)",
               "AUC drop beyond the band (positive = worse)", "max", "--max-auc-drop", 0.005,
               fmt="+.4f", shown="auc_drop"),
        Metric("flip_rate", "decisive_flip_rate", "flips b/d", "decisive flip rate", "max",
               "--max-flip-rate", 0.01),
        Metric("sens_drop", "sens_drop", "sens drop", "sensitivity drop", "max",
               "--max-sens-drop", 0.02, fmt="+.3f"),
        Metric("spec_drop", "spec_drop", "spec drop", "specificity drop", "max",
               "--max-spec-drop", 0.02, fmt="+.3f"),
        Metric("min_auc", "auc_candidate_ci95", "AUC low", "AUC (lower 95% bound)", "min",
               "--min-auc", None),
        Metric("min_sens", "sensitivity", "sens", "sensitivity", "min", "--min-sens", None,
               fmt=".3f"),
        Metric("min_spec", "specificity", "spec", "specificity", "min", "--min-spec", None,
               fmt=".3f"),
        Metric("reference_auc", "auc_reference_ci95", "ref AUC low",
               "FP32 reference AUC (lower 95% bound) above chance", "min",
               "--min-reference-auc", 0.5, strict=True),
    )
}  # fmt: skip
# Which metrics each place gates by default (their limits are METRICS' defaults).
EXPORT_LIMITS = ("auc_drop", "flip_rate", "sens_drop", "spec_drop")  # the flags export takes
EXPORT_DEFAULTS = ("auc_drop", "flip_rate")
BUNDLE_DEFAULTS = ("auc_drop", "flip_rate", "sens_drop", "spec_drop", "reference_auc")
BENCH_DEFAULTS: tuple[str, ...] = ()


@dataclass(frozen=True)
class Limits:
    """The limits in force, metric key -> limit, in METRICS order."""

    items: tuple[tuple[str, float], ...]

    def get(self, key: str) -> float | None:
        return dict(self.items).get(key)

    def to_dict(self) -> dict:
        return {METRICS[k].flag.lstrip("-").replace("-", "_"): v for k, v in self.items}


def limits_from(given: dict[str, float | None], defaults: tuple[str, ...]) -> Limits:
    """Limits from flag values (metric key -> value or None) over `defaults`; bad values refused."""
    unknown = set(given) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}")
    items = []
    for key, m in METRICS.items():
        value = given.get(key)
        if value is None and key in defaults:
            value = m.default
        if value is None:
            continue
        items.append((key, _checked(m, value)))
    return Limits(tuple(items))


def _checked(m: Metric, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{m.flag} must be a number in [0, 1], got {value!r}")
    v = float(value)
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise InputError(f"{m.flag} must be a number in [0, 1], got {value!r}")
    return v


@dataclass(frozen=True)
class Check:
    """One limit checked against one drift: the value read, whether it passed and why."""

    metric: str
    passed: bool
    detail: str
    value: float | None
    limit: float


@dataclass(frozen=True)
class Verdict:
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def excess(self) -> float:
        """Largest fraction of a drift ceiling used (> 1: over); ranks accuracy-control tries."""
        worst = 0.0
        for c in self.checks:
            if METRICS[c.metric].kind != "max":
                continue
            if c.value is None:
                return math.inf
            worst = max(worst, c.value / c.limit if c.limit else (math.inf if c.value > 0 else 0))
        return worst


def metric_value(m: Metric, drift: Drift) -> float | None:
    """The number a metric reads (a CI's lower bound for the AUC floors)."""
    v = getattr(drift, m.field)
    if isinstance(v, tuple | list):
        return float(v[0]) if v else None
    return None if v is None else float(v)


def verdict(limits: Limits, drift: Drift) -> Verdict:
    """Check every limit; a value that is missing or NaN fails."""
    checks = []
    for key, limit in limits.items:
        m = METRICS[key]
        if drift.per_label and drift.task != "binary" and key != "flip_rate":
            checks.append(_per_label_check(m, limit, drift))
        else:
            checks.append(_check(m, metric_value(m, drift), limit, drift))
    return Verdict(tuple(checks))


def _label_value(m: Metric, p: dict) -> float | None:
    v = p.get(m.field)
    if isinstance(v, tuple | list):
        return float(v[0]) if v else None
    return None if v is None else float(v)


def _per_label_check(m: Metric, limit: float, drift: Drift) -> Check:
    """One limit over every label: failing labels named; the worst value kept (excess ranks it)."""
    judged, skipped = [], []
    for p in drift.per_label:
        if p.get("evaluable", True):
            c = _check(m, _label_value(m, p), limit, drift, "not measured")
            judged.append((p["label"], c))
        elif m.kind == "min":
            why = f"cannot be evaluated: {_counts(p)}, fewer than {drift.min_per_class} of a class"
            judged.append((p["label"], Check(m.key, False, f"{m.words} {why}", None, limit)))
        else:
            skipped.append(_counts(p))
    note = f" (not judged, too few cases: {', '.join(skipped)})" if skipped else ""
    if not judged:
        detail = f"{m.words} could not be computed: no label can be evaluated on this split{note}"
        return Check(m.key, False, detail, None, limit)
    failed = [(lab, c) for lab, c in judged if not c.passed]
    sign = 1 if m.kind == "max" else -1
    values = [c.value for _, c in judged if c.value is not None]
    worst = None if failed and any(c.value is None for _, c in failed) else (
        sign * max(sign * v for v in values) if values else None)  # fmt: skip
    if len(failed) == 1:
        detail = f"label {failed[0][0]}: {failed[0][1].detail}{_inverted(m, failed[0][0], drift)}"
    elif failed:
        rel = "<=" if m.strict else "<" if m.kind == "min" else ">"
        detail = f"{m.words} {rel} {m.flag} {limit:g} on {len(failed)} of {len(judged)} labels: " + (
            ", ".join(_short(lab, c, drift) for lab, c in failed))  # fmt: skip
    else:
        lab, c = max(judged, key=lambda lc: sign * lc[1].value)
        detail = f"all {len(judged)} judged labels pass (worst {lab}: {c.detail})"
    return Check(m.key, not failed, detail + note, worst, limit)


def _short(label: str, c: Check, drift: Drift) -> str:
    """'Mass 0.4123', 'Edema 0.0677 (inverted)' or 'Hernia (not evaluable: 0+/181-)'."""
    p = next(p for p in drift.per_label if p["label"] == label)
    if c.value is None:
        why = "not evaluable" if not p.get("evaluable", True) else "not computed"
        return f"{label} ({why}: {p.get('positives')}+/{p.get('negatives')}-)"
    return f"{label} {c.value:.4f}{_inverted(METRICS[c.metric], label, drift)}"


def _inverted(m: Metric, label: str, drift: Drift) -> str:
    """' (inverted: ...)' when an AUC floor's label is worse than chance (CI below 0.5)."""
    p = next(p for p in drift.per_label if p["label"] == label)
    ci = p.get(m.field) if m.field.endswith("ci95") else None
    return " (inverted: AUC 95% CI below 0.5)" if ci and ci[1] < 0.5 else ""


def _counts(p: dict) -> str:
    return f"{p['label']} ({p.get('positives')} positive, {p.get('negatives')} negative)"


def _check(m: Metric, value: float | None, limit: float, drift: Drift, why: str = "") -> Check:
    if value is None or math.isnan(value):
        if not why:
            why = "needs labels of both classes" if drift.auc_reference is None else "not measured"
        return Check(m.key, False, f"{m.words} could not be computed ({why})", None, limit)
    if m.kind == "max":
        ok = value <= limit
        rel = "<=" if ok else ">"
    else:
        ok = value > limit if m.strict else value >= limit
        rel = (">" if m.strict else ">=") if ok else ("<=" if m.strict else "<")
    detail = f"{m.words} {value:.4f} {rel} {m.flag} {limit:g}"
    if m.key == "flip_rate" and not ok:
        detail += _flip_note(drift, limit)
    return Check(m.key, ok, detail, value, limit)


def _flip_note(drift: Drift, limit: float) -> str:
    lo, hi = drift.decisive_flip_ci95
    note = (
        f" ({drift.decisive_flips} decisive of {drift.flips} flips on {drift.n} images, 95% CI "
        f"{lo:.2%}-{hi:.2%}; borderline band {drift.band:g})"
    )
    need = drift.images_to_resolve(limit)
    if need:
        note += f"; this split cannot resolve {limit:.2%}: one flip needs >= {need} images"
    return note
