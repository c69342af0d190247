"""Output sanity, checked before any metric: a broken model must not reach a drift number.

A metric computed on NaN, on constant outputs or on saturated probabilities is vacuous: every
comparison with NaN is False (so `max |dp| nan` passes a tolerance), a constant model has no
ranking, and at |logit| > 20 every probability is within 2e-9 of 0 or 1, so |delta p| is ~0
whatever the model does. Each problem is refused with one line naming it.
"""

from __future__ import annotations

import numpy as np

from edgemed.contract import Contract
from edgemed.errors import InputError

# |logit| (binary, multilabel) or top-1 minus top-2 logit (multiclass) beyond which the
# probability is within 2e-9 of 0/1; a model saturated there on nearly every image is refused.
SATURATED_LOGIT = 20.0
SATURATED_FRACTION = 0.99
# Outputs whose spread over the images is below this (relative to their size) are constant.
CONSTANT_SPREAD = 1e-6


class OutputError(InputError):
    """A model's outputs cannot be evaluated (non-finite, wrong count, constant, saturated)."""


def check_outputs(contract: Contract, logits: np.ndarray, who: str) -> np.ndarray:
    """`logits` as float64 (N, K) after every check; OutputError naming `who` otherwise."""
    x = np.asarray(logits)
    if x.dtype.kind not in "fiu":
        raise OutputError(f"{who} returned {x.dtype} outputs, not numbers; check the model")
    x = x.astype(np.float64)
    if contract.task == "binary" and x.ndim == 1:
        x = x[:, None]
    _check_count(contract, x, who)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise OutputError(
            f"{who} gave non-finite outputs (NaN/Inf) for {int(bad.sum())} of {len(x)} images; "
            "the model is broken (reduced precision: an activation overflowed), nothing was scored"
        )
    if len(x) >= 2:
        _check_spread(contract, x, who)
    return x


def _check_count(contract: Contract, x: np.ndarray, who: str) -> None:
    want = contract.num_outputs
    if x.ndim != 2 or x.shape[1] != want:
        got = "x".join(str(d) for d in x.shape[1:]) or "a scalar"
        need = "exactly one logit" if want == 1 else f"{want} logits (one per class)"
        raise OutputError(
            f"{who} gives {got} outputs per image, but the contract's {contract.task} task "
            f"({', '.join(contract.class_names)}) needs {need}; fix the model's head or the "
            "contract (--contract)"
        )


def _check_spread(contract: Contract, x: np.ndarray, who: str) -> None:
    n = len(x)
    if contract.task == "multiclass":
        centred = x - x.mean(axis=1, keepdims=True)
        top2 = np.sort(x, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
    else:
        centred, margin = x, np.abs(x).ravel()
    spread = centred.max(axis=0) - centred.min(axis=0)
    if (spread <= CONSTANT_SPREAD * (1.0 + np.abs(centred).max(axis=0))).all():
        raise OutputError(
            f"{who} gives the same output for all {n} images (constant); it does not "
            "discriminate, so no metric means anything: retrain or check the weights"
        )
    saturated = float((margin > SATURATED_LOGIT).mean())
    if saturated >= SATURATED_FRACTION:
        raise OutputError(
            f"{who} is saturated: {saturated:.1%} of {n} images have probabilities within 2e-9 "
            f"of 0 or 1 (|logit| > {SATURATED_LOGIT:g}), so drift and parity are blind; "
            "the model collapsed in training (check the learning rate and the card's AUC)"
        )
