"""Clinical drift of a candidate against its FP32 reference on one labelled split (bench rows).

Binary models get one set of numbers. Multi-label and multi-class models get the same numbers per
label (one-vs-rest for multi-class) under "per_label"; the top-level numbers are then the worst
label for each drop (largest AUC drop, largest sensitivity and specificity drops), flips count
images with any changed decision, and ECE is the mean over labels.
"""

from __future__ import annotations

import numpy as np

from edgemed.contract import Contract
from edgemed.harness import stats

NEAR = 0.05
ECE_BINS = 10


def label_columns(contract: Contract, labels: np.ndarray) -> np.ndarray:
    """Labels as a 0/1 matrix (N, outputs): one column for binary, one per class otherwise."""
    y = np.asarray(labels)
    if contract.task == "binary":
        return y.reshape(len(y), -1)[:, :1].astype(np.int64)
    if contract.task == "multiclass" and (y.ndim == 1 or y.shape[1] == 1):
        return np.eye(len(contract.class_names), dtype=np.int64)[y.reshape(-1).astype(int)]
    return y.astype(np.int64)


def decision_columns(contract: Contract, logits: np.ndarray) -> np.ndarray:
    """Decisions as a boolean matrix matching `label_columns` (argmax one-hot for multi-class)."""
    d = contract.decisions(logits)
    if contract.task == "multiclass":
        return np.eye(len(contract.class_names), dtype=bool)[d]
    return np.asarray(d, bool).reshape(len(logits), -1)


def one_label(
    y: np.ndarray,
    p_ref: np.ndarray,
    p_cand: np.ndarray,
    d_ref: np.ndarray,
    d_cand: np.ndarray,
    threshold: float,
    n_boot: int,
) -> dict:
    """All drift numbers for one label column."""
    out = _auc_block(y, p_ref, p_cand, n_boot)
    ref_op, cand_op = stats.operating_point(y, d_ref), stats.operating_point(y, d_cand)
    flipped = d_ref != d_cand
    borderline = np.maximum(np.abs(p_ref - threshold), np.abs(p_cand - threshold)) <= NEAR
    dp = np.abs(p_ref - p_cand)
    out.update(
        flips=int(flipped.sum()),
        flip_rate=float(flipped.mean()),
        flips_near_threshold=int((flipped & borderline).sum()),
        accuracy=cand_op.accuracy,
        accuracy_reference=ref_op.accuracy,
        sensitivity=cand_op.sensitivity,
        sensitivity_reference=ref_op.sensitivity,
        sens_drop=_drop(ref_op.sensitivity, cand_op.sensitivity),
        specificity=cand_op.specificity,
        specificity_reference=ref_op.specificity,
        spec_drop=_drop(ref_op.specificity, cand_op.specificity),
        max_abs_dp=float(dp.max()),
        mean_abs_dp=float(dp.mean()),
        ece=stats.expected_calibration_error(y, p_cand, ECE_BINS),
        ece_reference=stats.expected_calibration_error(y, p_ref, ECE_BINS),
        confusion={"tp": cand_op.tp, "fp": cand_op.fp, "tn": cand_op.tn, "fn": cand_op.fn},
        confusion_reference={"tp": ref_op.tp, "fp": ref_op.fp, "tn": ref_op.tn, "fn": ref_op.fn},
        reliability=stats.reliability_bins(y, p_cand, ECE_BINS),
        threshold=float(threshold),
    )
    return out


def _auc_block(y: np.ndarray, p_ref: np.ndarray, p_cand: np.ndarray, n_boot: int) -> dict:
    """AUCs, drop, paired bootstrap CI of the drop and DeLong p; None when a class is absent."""
    if not 0 < int(y.sum()) < len(y):
        keys = ("auc_reference", "auc_candidate", "auc_drop", "auc_drop_ci95", "delong_p")
        return dict.fromkeys(keys)
    dl = stats.delong_test(y, p_ref, p_cand)
    ci = stats.paired_bootstrap_auc_diff_ci(y, p_ref, p_cand, n_boot) if n_boot else None
    return {
        "auc_reference": dl.auc1,
        "auc_candidate": dl.auc2,
        "auc_drop": dl.auc1 - dl.auc2,
        "auc_drop_ci95": list(ci) if ci else None,
        "delong_p": dl.p_value,
        "delong_z": dl.z,
    }


def _drop(ref: float | None, cand: float | None) -> float | None:
    return None if ref is None or cand is None else ref - cand


def clinical_drift(
    contract: Contract,
    ref_logits: np.ndarray,
    cand_logits: np.ndarray,
    labels: np.ndarray,
    n_boot: int = 1000,
) -> dict:
    """The bench row's "drift" block: candidate vs reference on the same images and labels."""
    y = label_columns(contract, labels)
    p_ref = contract.probabilities(ref_logits)
    p_cand = contract.probabilities(cand_logits)
    d_ref, d_cand = decision_columns(contract, ref_logits), decision_columns(contract, cand_logits)
    names = ("positive",) if contract.task == "binary" else contract.class_names
    per = [
        {"label": str(names[k])}
        | one_label(
            y[:, k],
            p_ref[:, k],
            p_cand[:, k],
            d_ref[:, k],
            d_cand[:, k],
            contract.threshold,
            n_boot,
        )
        for k in range(y.shape[1])
    ]
    if len(per) == 1:
        return {"n": len(y), "task": contract.task, **per[0], "per_label": None}
    return {"n": len(y), "task": contract.task, **_worst(per, d_ref, d_cand, y), "per_label": per}


def _worst(per: list[dict], d_ref: np.ndarray, d_cand: np.ndarray, y: np.ndarray) -> dict:
    """Top-level numbers of a multi-output model: the worst label per drop, flips over images."""

    def worst(key: str) -> dict:
        have = [p for p in per if p[key] is not None]
        return max(have, key=lambda p: p[key]) if have else per[0]

    a, s, sp = worst("auc_drop"), worst("sens_drop"), worst("spec_drop")
    flipped = (d_ref != d_cand).any(axis=1)
    near = sum(p["flips_near_threshold"] for p in per)
    exact = (d_cand == y.astype(bool)).all(axis=1)
    out = {k: a[k] for k in ("auc_reference", "auc_candidate", "auc_drop", "auc_drop_ci95")}
    out.update(
        delong_p=a["delong_p"],
        worst_auc_label=a["label"],
        flips=int(flipped.sum()),
        flip_rate=float(flipped.mean()),
        flips_near_threshold=int(near),
        accuracy=float(exact.mean()),
        sensitivity=s["sensitivity"],
        sensitivity_reference=s["sensitivity_reference"],
        sens_drop=s["sens_drop"],
        worst_sens_label=s["label"],
        specificity=sp["specificity"],
        spec_drop=sp["spec_drop"],
        max_abs_dp=max(p["max_abs_dp"] for p in per),
        mean_abs_dp=float(np.mean([p["mean_abs_dp"] for p in per])),
        ece=float(np.mean([p["ece"] for p in per])),
    )
    return out
