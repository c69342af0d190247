"""Fine-tuning after compression (and distillation training) through the one training loop
(edgemed.pipeline.loop: the `edgemed train` recipe), the weights with the best validation AUC
kept, the compressed-but-untuned weights (epoch 0) included."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgemed.contract import Contract
from edgemed.data import Dataset
from edgemed.pipeline.loop import Recipe
from edgemed.pipeline.loop import fit as fit_loop
from edgemed.pipeline.loss import class_weights, task_loss
from edgemed.pipeline.training import predict_logits, selection_auc

FitSettings = Recipe  # compress's name for the recipe it fine-tunes with


@dataclass(frozen=True)
class FitResult:
    history: tuple[dict, ...]
    best_epoch: int
    seconds: float

    def to_dict(self) -> dict:
        return {
            "seconds": round(self.seconds, 2),
            "epochs_run": max(0, len(self.history) - 1),
            "history": list(self.history),
            "best_epoch": self.best_epoch,
        }


def hard_loss(task: str, ds: Dataset | None = None, num_outputs: int = 1) -> Callable:
    """The training loss of the task, class-weighted from `ds`'s training split as in `train`."""
    weights = None
    if ds is not None:
        weights = class_weights(task, ds.split("train").labels, num_outputs, "auto")
    return task_loss(task, weights)


def fit(
    module, ds: Dataset, contract: Contract, s: Recipe, loss_fn: Callable, label: str
) -> FitResult:
    """Train `module` in place with `loss_fn(logits, labels, inputs)`; keeps the best-val weights."""
    val = ds.split("val")

    def score(m) -> float:
        return float(selection_auc(contract, val.labels, predict_logits(m, contract, val.images)))

    out = fit_loop(module, ds, contract, s, loss_fn, score, label, score_start=True)
    module.load_state_dict(out.best_state)
    module.eval()
    return FitResult(out.history, out.best_epoch, out.seconds)
