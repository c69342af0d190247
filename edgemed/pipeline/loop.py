"""The one training loop (`edgemed train` and compress's fine-tuning/distillation): AdamW with
linear warm-up then cosine decay, on-the-fly augmentation, optional head-only first epochs, the
weights with the best validation score kept."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgemed.contract import Contract
from edgemed.data import Dataset
from edgemed.errors import InputError
from edgemed.pipeline.augment import AugmentSettings, augment_batch
from edgemed.progress import Progress


@dataclass(frozen=True)
class Recipe:
    """How the weights are fitted (recorded in the card). `patience` None: no early stopping
    (the default: the schedule runs to its low-LR end, the best-validation weights are kept);
    otherwise epochs without a gain count only from `patience_start(...)` on."""

    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    patience: int | None = None
    freeze_epochs: int = 0
    seed: int = 0


@dataclass(frozen=True)
class FitOutcome:
    best_state: dict
    history: tuple[dict, ...]
    best_epoch: int
    seconds: float


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor of optimizer step `step` (0-based): linear warm-up to 1, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def patience_start(epochs: int, warmup_epochs: float, freeze_epochs: int = 0) -> int:
    """The first epoch whose stale validation score counts towards early stopping: the one that
    ends past the middle of the cosine decay (LR below half its peak). Stopping earlier cuts the
    low-LR end the schedule is built for; on small validation sets a plateau there is noise."""
    middle = warmup_epochs + (epochs - warmup_epochs) / 2
    return max(freeze_epochs + 1, math.ceil(middle))


def fit(
    module,
    ds: Dataset,
    contract: Contract,
    r: Recipe,
    loss_fn: Callable,
    score: Callable,
    label: str = "train",
    head: frozenset[str] = frozenset(),
    score_start: bool = False,
) -> FitOutcome:
    """Train `module` in place with `loss_fn(logits, labels, inputs)`; `score(module)` is the
    validation score of an epoch (higher is better). `head`: parameter names trained alone during
    the first `r.freeze_epochs` epochs. `score_start`: the untrained weights compete as epoch 0."""
    import torch

    torch.manual_seed(r.seed)
    x_all, y_all = _tensors(ds.split("train"), contract)
    steps_per_epoch = (len(x_all) + r.batch_size - 1) // r.batch_size
    total = max(1, r.epochs * steps_per_epoch)
    opt = torch.optim.AdamW(module.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    warm = min(total - 1, round(r.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: warmup_cosine(i, warm, total))
    gen = torch.Generator().manual_seed(r.seed)
    stats = _norm_tensors(contract)
    t0 = time.perf_counter()
    track = _Best(
        module, score, score_start, patience_start(r.epochs, r.warmup_epochs, r.freeze_epochs)
    )
    bar = Progress(total, label)
    for epoch in range(1, r.epochs + 1):
        _set_trainable(module, head if epoch <= r.freeze_epochs else None)
        loss = _epoch(module, x_all, y_all, r, (gen, opt, sched, loss_fn, stats), bar)
        value = track.update(module, epoch, loss)
        bar.note(f"epoch {epoch}/{r.epochs} loss {loss:.4f} val AUC {value:.4f}")
        if r.patience and track.stale >= r.patience:
            bar.note(f"early stop: val AUC did not improve for {r.patience} epochs")
            break
    bar.close()
    _set_trainable(module, None)
    return track.outcome(time.perf_counter() - t0)


class _Best:
    """The best-scoring weights so far and the per-epoch history."""

    def __init__(self, module, score: Callable, score_start: bool, count_from: int = 1) -> None:
        self.score, self.best, self.best_value, self.best_epoch = score, None, -math.inf, 0
        self.history: list[dict] = []
        self.stale, self.count_from = 0, count_from
        if score_start:
            self.update(module, 0, None)

    def update(self, module, epoch: int, loss: float | None) -> float:
        module.eval()
        value = float(self.score(module))
        self.history.append(
            {
                "epoch": epoch,
                "loss": None if loss is None else round(loss, 5),
                "val_auc": round(value, 5),
            }
        )
        if value > self.best_value + 1e-4:
            self.best = {k: v.detach().clone() for k, v in module.state_dict().items()}
            self.best_value, self.best_epoch, self.stale = value, epoch, 0
        elif epoch >= self.count_from:
            self.stale += 1
        return value

    def outcome(self, seconds: float) -> FitOutcome:
        if self.best is None:
            raise InputError(
                "the validation score could not be computed in any epoch (NaN): check that the "
                "validation split has both classes and that the loss did not diverge (lower --lr)"
            )
        return FitOutcome(self.best, tuple(self.history), self.best_epoch, seconds)


def _tensors(split, contract: Contract):
    import torch

    x = torch.from_numpy(contract.normalize(split.images))
    y = split.labels.astype(np.int64 if contract.task == "multiclass" else np.float32)
    return x, torch.from_numpy(y)


def _norm_tensors(contract: Contract):
    """(mean, std) as (1, C, 1, 1) tensors: augmentation works on [0, 1] pixels."""
    import torch

    if contract.layout != "NCHW":
        raise InputError(f"training needs an NCHW contract, got {contract.layout}")
    shape = (1, contract.channels, 1, 1)
    mean = torch.tensor(contract.mean, dtype=torch.float32).reshape(shape)
    return mean, torch.tensor(contract.std, dtype=torch.float32).reshape(shape)


def _set_trainable(module, only: frozenset[str] | None) -> None:
    for name, p in module.named_parameters():
        p.requires_grad_(only is None or name in only)


def _epoch(module, x_all, y_all, r: Recipe, parts, bar) -> float:
    import torch

    gen, opt, sched, loss_fn, (mean, std) = parts
    module.train()
    losses = []
    for idx in torch.randperm(len(x_all), generator=gen).split(r.batch_size):
        xb = augment_batch(x_all[idx], r.augment, mean, std, gen)
        loss = loss_fn(module(xb), y_all[idx], xb)
        if not torch.isfinite(loss):
            raise InputError(
                f"the training loss became {loss.item()} (diverged): lower --lr or check the data"
            )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.advance(1)
    return float(np.mean(losses))
