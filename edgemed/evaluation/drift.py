"""Drift of a candidate against its FP32 reference on the same images: the one computation that
export, accuracy control, build-engine, bench and the bundle gate all use.

Binary models get one set of numbers. Multi-label and multi-class models get the same numbers per
label (one-vs-rest for multi-class) in `per_label`, each with its counts and whether the split can
evaluate it (evaluation/labels.py); the gates judge every label (limits.verdict). The top-level
numbers are then the headline: AUC = the macro AUC over the evaluable labels (`macro_labels`, the
same set on every row of one split), each drop = its worst label (named in `worst_labels`), flips
count images with any changed decision (multi-class: a changed argmax), ECE is the mean over
labels and `not_evaluable` names the labels the split cannot judge, with their counts.

Flips are split by how close the FP32 output was to the decision boundary: within `band` (the
borderline band) a flip is numerical noise that says nothing clinical (two FP32 runtimes and FP16
already move probabilities that far); beyond it the decision really changed. The flip budget
counts decisive flips; both counts, the band and each flip's distance are reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from edgemed.contract import Contract
from edgemed.evaluation import stats
from edgemed.evaluation.labels import MIN_PER_CLASS, WIDE_CI, label_counts
from edgemed.evaluation.sanity import OutputError, check_outputs

# Default borderline band (probability distance from the threshold), from measurement
# (benchmarks/evidence.py, BENCHMARKS.md "Evidence"): on the validation splits of both shared
# datasets, FP32 runtimes moved probabilities <= 4.8e-7 from torch and FP16 <= 7.5e-4; the band
# is that FP16 noise rounded up. A flip closer to the threshold than FP16 rounding says nothing.
DEFAULT_BAND = 0.001
ECE_BINS = 10
# Above this many images the AUC-drop CI is DeLong's (asymptotically exact, O(n log n)) instead of
# the paired bootstrap (1000 resamples x 2 AUCs: about 1 s at 10,000 images on one core).
BOOTSTRAP_MAX_N = 2000


@dataclass(frozen=True)
class Drift:
    """Candidate vs reference on n images (see the module docstring for multi-output models)."""

    n: int
    task: str
    max_abs_dp: float
    mean_abs_dp: float
    flips: int
    flip_rate: float
    borderline_flips: int
    decisive_flips: int
    decisive_flip_rate: float
    decisive_flip_ci95: tuple[float, float]
    band: float
    flip_margins: tuple[float, ...] = ()  # each flipped image's FP32 distance to the boundary
    mcnemar_p: float | None = None
    auc_reference: float | None = None
    auc_candidate: float | None = None
    auc_drop: float | None = None
    auc_drop_decisive: float | None = None  # pairs the reference separated by more than the band
    auc_reference_ci95: tuple[float, float] | None = None
    auc_candidate_ci95: tuple[float, float] | None = None
    auc_drop_ci95: tuple[float, float] | None = None
    delong_p: float | None = None
    sensitivity: float | None = None
    sensitivity_reference: float | None = None
    sens_drop: float | None = None
    specificity: float | None = None
    specificity_reference: float | None = None
    spec_drop: float | None = None
    accuracy: float | None = None  # exact match over all labels
    accuracy_reference: float | None = None
    ece: float | None = None
    ece_reference: float | None = None
    worst_labels: dict = field(default_factory=dict)
    per_label: tuple[dict, ...] | None = None
    macro_labels: tuple[str, ...] | None = None  # the labels the headline AUC averages
    not_evaluable: tuple[dict, ...] | None = None  # {label, positives, negatives}
    min_per_class: int | None = None  # a label needs this many positives and negatives
    details: dict = field(default_factory=dict)  # confusion, reliability (report only)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in _TUPLES:
            d[k] = None if d[k] is None else list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Drift:
        """A drift block read back from a manifest or a bench row (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in _TUPLES:
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def margin_note(self) -> str:
        """'' or e.g. '; 2 flips, both borderline (FP32 within 0.0004 of the threshold)'."""
        if not self.flips:
            return ""
        worst = max(self.flip_margins) if self.flip_margins else float("nan")
        return (
            f"; {self.flips} flips: {self.borderline_flips} borderline (FP32 within "
            f"{self.band:g} of the threshold), {self.decisive_flips} decisive (farthest "
            f"{worst:.4f})"
        )

    def images_to_resolve(self, max_rate: float) -> int | None:
        """Images needed before one decisive flip fits `max_rate`, when this split is too small."""
        if max_rate <= 0 or 1 / self.n <= max_rate:
            return None
        return int(min(np.ceil(1 / max_rate), 10**12))


_TUPLES = (
    "flip_margins", "decisive_flip_ci95", "auc_reference_ci95", "auc_candidate_ci95",
    "auc_drop_ci95", "per_label", "macro_labels", "not_evaluable",
)  # fmt: skip


def drift_from_logits(
    contract: Contract,
    ref_logits: np.ndarray,
    cand_logits: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    n_boot: int = 0,
    band: float = DEFAULT_BAND,
    names: tuple[str, str] = ("the FP32 reference", "the candidate"),
) -> Drift:
    """Check both outputs (sanity first), then every drift number; AUCs where labels allow."""
    ref = check_outputs(contract, ref_logits, names[0])
    cand = check_outputs(contract, cand_logits, names[1])
    if len(ref) != len(cand):
        raise OutputError(f"{names[1]} scored {len(cand)} images, {names[0]} {len(ref)}")
    cols = contract.reported_index  # export --labels: only the labels the artifact reports
    p_ref, p_cand = contract.probabilities(ref)[:, cols], contract.probabilities(cand)[:, cols]
    d_ref, d_cand = decision_columns(contract, ref), decision_columns(contract, cand)
    flipped = (d_ref != d_cand).any(axis=1)
    margins = boundary_distance(contract, p_ref, d_ref != d_cand)[flipped]
    border = int((margins <= band).sum())
    decisive = int(flipped.sum()) - border
    y = label_columns(contract, labels) if labels is not None else None
    top = _label_numbers(contract, y, p_ref, p_cand, d_ref, d_cand, n_boot, band)
    dp = np.abs(p_ref - p_cand)
    return Drift(
        n=len(ref),
        task=contract.task,
        max_abs_dp=float(dp.max()),
        mean_abs_dp=float(dp.mean()),
        flips=int(flipped.sum()),
        flip_rate=float(flipped.mean()),
        borderline_flips=border,
        decisive_flips=decisive,
        decisive_flip_rate=decisive / len(ref),
        decisive_flip_ci95=stats.wilson_interval(decisive, len(ref)),
        band=float(band),
        flip_margins=tuple(sorted(float(m) for m in margins)),
        mcnemar_p=_mcnemar(contract, labels, ref, cand),
        **_accuracies(contract, labels, d_ref, d_cand),
        **top,
    )


def label_columns(contract: Contract, labels: np.ndarray) -> np.ndarray:
    """Labels as a 0/1 matrix (N, outputs): one column for binary, one per class otherwise."""
    y = np.asarray(labels)
    if contract.task == "binary":
        return y.reshape(len(y), -1)[:, :1].astype(np.int64)
    if contract.task == "multiclass" and (y.ndim == 1 or y.shape[1] == 1):
        return np.eye(len(contract.class_names), dtype=np.int64)[y.reshape(-1).astype(int)]
    return y.astype(np.int64)[:, contract.reported_index]


def decision_columns(contract: Contract, logits: np.ndarray) -> np.ndarray:
    """Decisions as a boolean matrix matching `label_columns` (argmax one-hot for multi-class)."""
    d = contract.decisions(logits)
    if contract.task == "multiclass":
        return np.eye(len(contract.class_names), dtype=bool)[d]
    return np.asarray(d, bool).reshape(len(logits), -1)[:, contract.reported_index]


def boundary_distance(contract: Contract, p_ref: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """Per image, how far the FP32 output lay from the decision boundary it crossed: |p - t|
    for the nearest changed label (binary, multilabel), half the top-2 gap (multiclass)."""
    if contract.task == "multiclass":
        top2 = np.sort(p_ref, axis=1)[:, -2:]
        return (top2[:, 1] - top2[:, 0]) / 2
    dist = np.abs(p_ref - contract.thresholds[contract.reported_index])
    return np.where(changed, dist, np.inf).min(axis=1)


def _accuracies(contract: Contract, labels, d_ref: np.ndarray, d_cand: np.ndarray) -> dict:
    if labels is None:
        return {}
    y = label_columns(contract, labels).astype(bool)
    return {
        "accuracy": float((d_cand == y).all(axis=1).mean()),
        "accuracy_reference": float((d_ref == y).all(axis=1).mean()),
    }


def _mcnemar(contract: Contract, labels, ref: np.ndarray, cand: np.ndarray) -> float | None:
    """Exact McNemar p on paired correctness (reference right / candidate wrong and vice versa)."""
    if labels is None:
        return None
    y = label_columns(contract, labels).astype(bool)
    ok_ref = (decision_columns(contract, ref) == y).all(axis=1)
    ok_cand = (decision_columns(contract, cand) == y).all(axis=1)
    return stats.mcnemar_exact(int((ok_ref & ~ok_cand).sum()), int((~ok_ref & ok_cand).sum()))


def _label_numbers(contract, y, p_ref, p_cand, d_ref, d_cand, n_boot: int, band: float) -> dict:
    """AUC / sensitivity / specificity / ECE fields: the label itself, or the worst label."""
    if y is None:
        return {}
    names = ("positive",) if contract.task == "binary" else contract.reported_names
    thresholds = contract.thresholds[contract.reported_index]
    least, shared = 1, None
    if contract.task != "binary":  # one set of bootstrap resamples for every label (stats)
        least = MIN_PER_CLASS
        if n_boot and len(y) <= BOOTSTRAP_MAX_N:
            shared = stats.resample_counts(len(y), n_boot)
    per = [
        {"label": str(names[k]), "threshold": float(thresholds[k])}
        | one_label(y[:, k], p_ref[:, k], p_cand[:, k], d_ref[:, k], d_cand[:, k], n_boot, band,
                    least, shared)
        for k in range(y.shape[1])
    ]  # fmt: skip
    if contract.task == "binary":
        return _top_fields(per[0]) | {"details": _details(per[0])}
    counts = label_counts(names, y)
    for p, c in zip(per, counts, strict=True):
        ci = p["auc_reference_ci95"]
        p.update(
            c.to_dict(), evaluable=c.evaluable, ci_too_wide=bool(ci and ci[1] - ci[0] > WIDE_CI)
        )
    usable = [p for p in per if p["evaluable"]] or per[:1]
    worst = {key: _worst(usable, key) for key in ("auc_drop_decisive", "sens_drop", "spec_drop")}
    worst["auc_drop"] = worst.pop("auc_drop_decisive")
    out = _top_fields(worst["auc_drop"]) | _macro_fields(per, counts)
    for key, fields_ in (
        ("sens_drop", ("sensitivity", "sensitivity_reference", "sens_drop")),
        ("spec_drop", ("specificity", "specificity_reference", "spec_drop")),
    ):
        out.update({f: worst[key][f] for f in fields_})
    out["ece"] = float(np.mean([p["ece"] for p in per]))
    out["ece_reference"] = float(np.mean([p["ece_reference"] for p in per]))
    out["worst_labels"] = {k: v["label"] for k, v in worst.items()}
    out["per_label"] = tuple(per)
    if contract.task == "multiclass":  # rows: actual class, columns: predicted class
        out["details"] = {
            "confusion_matrix": (y.T @ d_cand.astype(np.int64)).tolist(),
            "confusion_matrix_reference": (y.T @ d_ref.astype(np.int64)).tolist(),
        }
    return out


def _macro_fields(per: list[dict], counts) -> dict:
    """The headline AUCs: macro over the evaluable labels (None when there is none)."""
    used = [p for p in per if p["evaluable"]]
    mean = {k: float(np.mean([p[k] for p in used])) if used else None
            for k in ("auc_reference", "auc_candidate")}  # fmt: skip
    return mean | {
        "auc_reference_ci95": None,
        "auc_candidate_ci95": None,
        "macro_labels": tuple(p["label"] for p in used),
        "not_evaluable": tuple(c.to_dict() for c in counts if not c.evaluable),
        "min_per_class": MIN_PER_CLASS,
    }


def _top_fields(p: dict) -> dict:
    keys = (
        "auc_reference", "auc_candidate", "auc_drop", "auc_drop_decisive", "auc_reference_ci95",
        "auc_candidate_ci95",
        "auc_drop_ci95", "delong_p", "sensitivity", "sensitivity_reference", "sens_drop",
        "specificity", "specificity_reference", "spec_drop", "ece", "ece_reference",
    )  # fmt: skip
    out = {k: p[k] for k in keys}
    for k in ("auc_reference_ci95", "auc_candidate_ci95", "auc_drop_ci95"):
        out[k] = None if out[k] is None else tuple(out[k])
    return out


def _details(p: dict) -> dict:
    return {k: p[k] for k in ("confusion", "confusion_reference", "reliability", "threshold")}


def _worst(per: list[dict], key: str) -> dict:
    have = [p for p in per if p[key] is not None]
    return max(have, key=lambda p: p[key]) if have else per[0]


def one_label(
    y, p_ref, p_cand, d_ref, d_cand, n_boot: int, band: float, least: int = 1, shared=None
) -> dict:
    """All drift numbers for one label column (AUCs when it has >= `least` of each class;
    `shared`: bootstrap resamples shared by all labels, stats.resample_counts)."""
    out = _auc_block(y, p_ref, p_cand, n_boot, band, least, shared)
    ref_op, cand_op = stats.operating_point(y, d_ref), stats.operating_point(y, d_cand)
    bins = stats.reliability_bins(y, p_cand, ECE_BINS)
    out.update(
        flips=int((d_ref != d_cand).sum()),
        sensitivity=cand_op.sensitivity,
        sensitivity_reference=ref_op.sensitivity,
        sens_drop=_drop(ref_op.sensitivity, cand_op.sensitivity),
        specificity=cand_op.specificity,
        specificity_reference=ref_op.specificity,
        spec_drop=_drop(ref_op.specificity, cand_op.specificity),
        ece=stats.ece_from_bins(bins),
        ece_reference=stats.expected_calibration_error(y, p_ref, ECE_BINS),
        confusion=cand_op.confusion(),
        confusion_reference=ref_op.confusion(),
        reliability=bins,
    )
    return out


def _auc_block(y, p_ref, p_cand, n_boot: int, band: float, least: int = 1, shared=None) -> dict:
    """AUCs with DeLong CIs, the drop with its paired-bootstrap CI, DeLong p; None when a class
    has fewer than `least` images."""
    keys = ("auc_reference", "auc_candidate", "auc_drop", "auc_drop_decisive", "auc_reference_ci95",
            "auc_candidate_ci95", "auc_drop_ci95", "delong_p")  # fmt: skip
    if min(int(y.sum()), len(y) - int(y.sum())) < max(1, least):
        return dict.fromkeys(keys)
    dl = stats.delong_test(y, p_ref, p_cand)
    ci = None
    if shared is not None:
        ci = stats.resampled_auc_diff_ci(y, p_ref, p_cand, shared)
    elif n_boot and len(y) <= BOOTSTRAP_MAX_N:
        ci = stats.paired_bootstrap_auc_diff_ci(y, p_ref, p_cand, n_boot)
    elif n_boot:  # large splits: DeLong's normal interval (the bootstrap converges to it)
        ci = tuple(dl.diff_ci95)
    return {
        "auc_reference": dl.auc1,
        "auc_candidate": dl.auc2,
        "auc_drop": dl.auc1 - dl.auc2,
        "auc_drop_decisive": stats.decisive_auc_drop(y, p_ref, p_cand, band, dl.auc1 - dl.auc2),
        "auc_reference_ci95": stats.normal_ci(dl.auc1, dl.var1),
        "auc_candidate_ci95": stats.normal_ci(dl.auc2, dl.var2),
        "auc_drop_ci95": list(ci) if ci else None,
        "delong_p": dl.p_value,
    }


def _drop(ref: float | None, cand: float | None) -> float | None:
    return None if ref is None or cand is None else ref - cand
