"""Output drift of a candidate model against its FP32 reference on the same images."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgemed.contract import Contract
from edgemed.metrics import auc


@dataclass(frozen=True)
class Drift:
    """max/mean |delta p|, decision flips at the operating threshold, and AUC of both (binary)."""

    n: int
    max_abs_dp: float
    mean_abs_dp: float
    flips: int
    flip_rate: float
    auc_reference: float | None
    auc_candidate: float | None
    auc_drop: float | None
    # binary: how far each flipped image's FP32 probability was from the threshold (ascending)
    flip_margins: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flip_margins"] = list(self.flip_margins)
        return d

    def margin_note(self) -> str:
        """'' or e.g. '; the 2 flipped images were within 0.0004 of the threshold in FP32'."""
        if not self.flip_margins:
            return ""
        k = len(self.flip_margins)
        what = "the flipped image was" if k == 1 else f"the {k} flipped images were"
        return f"; {what} within {max(self.flip_margins):.4f} of the threshold in FP32"


def drift_from_logits(
    contract: Contract, ref_logits: np.ndarray, cand_logits: np.ndarray, labels: np.ndarray | None
) -> Drift:
    """Compare probabilities and decisions; AUCs only when labels hold both classes."""
    p_ref, p_cand = contract.probabilities(ref_logits), contract.probabilities(cand_logits)
    dp = np.abs(p_ref - p_cand)
    d_ref, d_cand = contract.decisions(ref_logits), contract.decisions(cand_logits)
    changed = (d_ref != d_cand).reshape(len(d_ref), -1).any(axis=1)
    margins: tuple[float, ...] = ()
    if contract.task == "binary":
        margins = tuple(sorted(float(v) for v in np.abs(p_ref[changed, 0] - contract.threshold)))
    auc_ref = auc_cand = drop = None
    if labels is not None and contract.task == "binary" and 0 < np.sum(labels) < len(labels):
        auc_ref, auc_cand = auc(labels, p_ref[:, 0]), auc(labels, p_cand[:, 0])
        drop = auc_ref - auc_cand
    return Drift(
        n=len(p_ref),
        max_abs_dp=float(dp.max()),
        mean_abs_dp=float(dp.mean()),
        flips=int(changed.sum()),
        flip_rate=float(changed.mean()),
        auc_reference=auc_ref,
        auc_candidate=auc_cand,
        auc_drop=drop,
        flip_margins=margins,
    )
