"""Fit a domain reference with the converted artifact itself (export side).

Features come from the artifact's own runner (INT8 features for an INT8 artifact), on at most
`MAX_FIT_IMAGES` training images; thresholds are set on the validation split so that at most
`fpr` of it is flagged, half of the rate to each score when both exist (a union bound), and the
flag rate measured there is recorded with its Wilson interval.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemed.artifact import file_entries
from edgemed.backends import eval_batch
from edgemed.contract import Contract
from edgemed.data import model_dataset
from edgemed.domain import DEFAULT_FPR, FORMAT
from edgemed.domain.guard import infer_features
from edgemed.domain.reference import DomainReference, fit_gaussian, save_reference, threshold_at
from edgemed.domain.stats import NAMES, input_statistics
from edgemed.errors import InputError
from edgemed.evaluation.stats import wilson_interval
from edgemed.feature_output import with_feature_output
from edgemed.onnx_export import load_onnx, save_onnx

MAX_FIT_IMAGES = 4096
MIN_VAL_IMAGES = 20


@dataclass(frozen=True)
class DomainData:
    """The images a reference is fitted (train) and calibrated (val) on, and their data hash."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    data_hash: str
    test_images: np.ndarray | None = None  # the monitor's reference pools val and test


def run_with_features(runner, contract: Contract, images: np.ndarray, batch: int = 64):
    """(logits (N, K), features (N, D) or None) over uint8 images, in batches."""
    step = min(batch, getattr(runner, "batch_limit", None) or batch)
    pairs = [infer_features(runner, contract.normalize(images[i : i + step]))
             for i in range(0, len(images), step)]  # fmt: skip
    logits = np.concatenate([p[0] for p in pairs]).reshape(len(images), -1).astype(np.float32)
    if any(p[1] is None for p in pairs):
        return logits, None
    return logits, np.concatenate([p[1] for p in pairs])


def _groups(labels: np.ndarray) -> np.ndarray | None:
    """Class labels for class-conditional means; None (one mean) for multi-label targets."""
    lab = np.asarray(labels)
    if lab.ndim == 2 and lab.shape[1] > 1:
        return None
    return lab.reshape(-1).astype(np.int64)


def fit_reference(runner, contract: Contract, data: DomainData, fpr: float = DEFAULT_FPR,
                  model_files: dict | None = None, feature_output: dict | None = None,
                  batch: int = 64) -> DomainReference:  # fmt: skip
    """Fit on train, calibrate on val (at most `fpr` flagged there), with the artifact's runner."""

    if len(data.val_images) < MIN_VAL_IMAGES:
        raise InputError(
            f"the domain threshold needs at least {MIN_VAL_IMAGES} validation images, the data "
            f"has {len(data.val_images)}; use more data or export with --domain-fpr 0 (no guard)"
        )
    rng = np.random.default_rng(0)
    idx = np.sort(rng.permutation(len(data.train_images))[:MAX_FIT_IMAGES])
    _, train_feats = run_with_features(runner, contract, data.train_images[idx], batch)
    val_logits, val_feats = run_with_features(runner, contract, data.val_images, batch)
    groups = _groups(data.train_labels[idx])
    inputs = fit_gaussian(input_statistics(data.train_images[idx]), groups)
    feats = None if train_feats is None or val_feats is None else fit_gaussian(train_feats, groups)
    val_in = inputs.distance(input_statistics(data.val_images))
    val_f = feats.distance(val_feats) if feats else np.zeros(0)
    thresholds, flagged = _thresholds(val_in, val_f if feats else None, fpr)
    k, n = int(flagged.sum()), len(flagged)
    meta = {
        "format": FORMAT,
        "method": {
            "features": "class-conditional Mahalanobis, Ledoit-Wolf shared covariance"
            if feats
            else None,
            "input": f"Mahalanobis on {len(NAMES)} input statistics, Ledoit-Wolf covariance",
        },
        "feature_output": feature_output if feats else None,
        "feature_size": int(feats.means.shape[1]) if feats else None,
        "input_statistics": list(NAMES),
        "model_files": model_files or {},
        "data_hash": data.data_hash,
        "fitted_on": {"split": "train", "n": len(idx)},
        "calibrated_on": {"split": "val", "n": n},
        "target_fpr": fpr,
        "thresholds": thresholds,
        "val_flag_rate": {"k": k, "n": n, "rate": k / n, "ci95": list(wilson_interval(k, n))},
    }
    held = _held_out(runner, contract, data, inputs, feats, batch)
    meta["monitor_reference"] = {"splits": ["val", "test"] if len(held[2]) else ["val"],
                                 "n": n + len(held[2])}  # fmt: skip
    probs = contract.probabilities(val_logits)
    return DomainReference(meta, feats, inputs, val_f, val_in, probs, *held)


def _held_out(runner, contract: Contract, data: DomainData, inputs, feats, batch: int):
    """Scores and probabilities of the test split: the monitor's reference is every held-out
    in-domain image the evidence was measured on (val + test), not val alone, whose own sampling
    difference from test was measured as 14 false window alarms in 10,000 test images."""
    images = data.test_images
    if images is None or len(images) == 0:
        return np.zeros(0), np.zeros(0), np.zeros((0, 0))
    logits, f = run_with_features(runner, contract, images, batch)
    f_scores = feats.distance(f) if feats is not None and f is not None else np.zeros(0)
    return f_scores, inputs.distance(input_statistics(images)), contract.probabilities(logits)


def _thresholds(val_in: np.ndarray, val_f: np.ndarray | None, fpr: float):
    """Thresholds at `fpr` split evenly over the scores (union bound) and the val images flagged."""
    share = fpr / 2 if val_f is not None else fpr
    thresholds = {"input": threshold_at(val_in, share)}
    flagged = val_in > thresholds["input"]
    if val_f is not None:
        thresholds["features"] = threshold_at(val_f, share)
        flagged |= val_f > thresholds["features"]
    return thresholds, flagged


def write_reference(root: Path, ref: DomainReference) -> dict:
    """Write the reference into the artifact dir; returns the manifest's `domain` block."""
    names = save_reference(ref, Path(root))
    m = ref.meta
    return {
        "files": list(names),
        "feature_output": m["feature_output"],
        "feature_size": m["feature_size"],
        "target_fpr": m["target_fpr"],
        "thresholds": m["thresholds"],
        "val_flag_rate": m["val_flag_rate"],
        "data_hash": m["data_hash"],
    }


def domain_data(card: dict | None, data: str | None, contract: Contract) -> DomainData | None:
    """The model's training and validation splits (as parity reads them), None without data."""

    ds = model_dataset(card, data, contract.input_size, contract.channels, card_split=False)
    if ds is None:
        return None
    tr, va = ds.split("train"), ds.split("val")
    if len(va) < MIN_VAL_IMAGES:
        print(
            f"edgemed: warning: no domain guard: its threshold needs at least {MIN_VAL_IMAGES} "
            f"validation images, the data has {len(va)}; results will say domain unknown",
            file=sys.stderr,
        )
        return None
    te = ds.split("test")
    return DomainData(tr.images, tr.labels, va.images, va.labels, ds.data_hash, te.images)


def add_feature_output(onnx_path: Path, requested: str | None, where: str) -> dict | None:
    """Rewrite the reference ONNX with its feature output; the manifest's description or None."""

    model, found = with_feature_output(load_onnx(onnx_path), requested, where)
    if found is None:
        return None
    save_onnx(model, onnx_path)
    return found.to_dict()


def export_domain(backend, model_dir: Path, conv, threads, data: DomainData, fpr: float,
                  feature_output: dict | None) -> dict:  # fmt: skip
    """Fit the reference with the artifact just written to `model_dir` and store it there."""

    files = file_entries(Path(model_dir), list(conv.files))
    with backend.runner(Path(model_dir) / conv.model_file, conv.info, threads) as runner:
        ref = fit_reference(runner, conv.contract, data, fpr, files, feature_output,
                            eval_batch(conv.info))  # fmt: skip
    return write_reference(model_dir, ref)
