"""The task's training loss, with class weights / per-label pos_weight from the training split."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edgemed.errors import InputError

CLASS_WEIGHTS = ("auto", "none")
WEIGHT_CAP = 10.0  # measured on NIH 1000 (BENCHMARKS.md, issue 27); labels there reach 180


def class_weights(
    task: str, labels: np.ndarray, num_outputs: int, mode: str, cap: float | None = WEIGHT_CAP
) -> tuple | None:
    """`auto`: binary/multilabel -> pos_weight = negatives/positives per label; multiclass ->
    n / (K * n_k) per class, each clipped to [1/cap, cap] (`cap` None: unclipped). A label or
    class with no example of one kind keeps weight 1 (there is nothing to balance). `none` ->
    None (an unweighted loss)."""
    raw = raw_class_weights(task, labels, num_outputs, mode)
    if raw is None or cap is None:
        return raw
    check_weight_cap(cap)
    return tuple(round(min(max(v, 1 / cap), cap), 4) for v in raw)


def check_weight_cap(cap: float | None) -> None:
    if cap is not None and not (isinstance(cap, (int, float)) and 1 <= cap < math.inf):
        raise InputError(f"--class-weight-cap must be a number >= 1, got {cap!r}")


def raw_class_weights(task: str, labels: np.ndarray, num_outputs: int, mode: str) -> tuple | None:
    """The unclipped weights of `class_weights` (recorded in the card next to the clipped ones)."""
    if mode not in CLASS_WEIGHTS:
        raise InputError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTS)}, got {mode!r}")
    if mode == "none":
        return None
    y = np.asarray(labels)
    if task == "multiclass":
        counts = np.bincount(y.reshape(-1).astype(np.int64), minlength=num_outputs)
        w = np.where(counts > 0, len(y) / (num_outputs * np.maximum(counts, 1)), 1.0)
    else:
        y = y.reshape(len(y), -1).astype(np.float64)
        pos = y.sum(axis=0)
        neg = len(y) - pos
        w = np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0)
    return tuple(round(float(v), 4) for v in w)


def task_loss(task: str, weights: tuple | None = None) -> Callable:
    """loss(logits, labels): BCE on logits (binary/multilabel, `weights` as pos_weight) or
    cross-entropy (multiclass, `weights` per class)."""
    import torch

    w = None if weights is None else torch.tensor(weights, dtype=torch.float32)
    if task == "multiclass":
        return torch.nn.CrossEntropyLoss(weight=w)
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=w)
    return lambda z, y: bce(z.reshape(y.shape[0], -1), y.reshape(y.shape[0], -1))
