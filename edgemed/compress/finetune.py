"""Fine-tuning after compression (and distillation training): AdamW + one-cycle schedule, the
weights with the best validation AUC kept, the compressed-but-untuned weights (epoch 0) included."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgemed.contract import Contract
from edgemed.data import Dataset
from edgemed.pipeline.training import evaluate, predict_logits
from edgemed.progress import Progress


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = True


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


def hard_loss(task: str) -> Callable:
    """The training loss of the task: BCE on logits (binary/multilabel) or cross-entropy."""
    import torch

    if task == "multiclass":
        return torch.nn.CrossEntropyLoss()
    bce = torch.nn.BCEWithLogitsLoss()
    return lambda z, y: bce(z.reshape(y.shape[0], -1), y.reshape(y.shape[0], -1))


def fit(
    module, ds: Dataset, contract: Contract, s: FitSettings, loss_fn: Callable, label: str
) -> FitResult:
    """Train `module` in place with `loss_fn(logits, labels, inputs)`; keeps the best-val weights."""
    import torch

    torch.manual_seed(s.seed)
    train, val = ds.split("train"), ds.split("val")
    x_all = torch.from_numpy(contract.normalize(train.images))
    y_all = torch.from_numpy(
        train.labels.astype(np.int64 if contract.task == "multiclass" else np.float32)
    )
    t0 = time.perf_counter()
    best_auc = _val_auc(module, contract, val)
    best, best_epoch = _state(module), 0
    history = [{"epoch": 0, "loss": None, "val_auc": round(best_auc, 5)}]
    if s.epochs == 0:
        return FitResult(tuple(history), 0, time.perf_counter() - t0)
    opt = torch.optim.AdamW(module.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    steps_per_epoch = (len(x_all) + s.batch_size - 1) // s.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=s.lr, total_steps=s.epochs * steps_per_epoch
    )
    gen = torch.Generator().manual_seed(s.seed)
    bar = Progress(s.epochs * steps_per_epoch, label)
    for epoch in range(1, s.epochs + 1):
        loss = _epoch(module, x_all, y_all, s, gen, opt, sched, loss_fn, bar)
        auc = _val_auc(module, contract, val)
        history.append({"epoch": epoch, "loss": round(loss, 5), "val_auc": round(auc, 5)})
        bar.note(f"epoch {epoch}/{s.epochs} loss {loss:.4f} val AUC {auc:.4f}")
        if auc > best_auc + 1e-4:
            best, best_auc, best_epoch = _state(module), auc, epoch
    bar.close()
    module.load_state_dict(best)
    module.eval()
    return FitResult(tuple(history), best_epoch, time.perf_counter() - t0)


def _epoch(module, x_all, y_all, s: FitSettings, gen, opt, sched, loss_fn, bar) -> float:
    import torch

    module.train()
    losses = []
    for idx in torch.randperm(len(x_all), generator=gen).split(s.batch_size):
        xb = _shift(x_all[idx], gen) if s.augment else x_all[idx]
        loss = loss_fn(module(xb), y_all[idx], xb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.advance(1)
    return float(np.mean(losses))


def _val_auc(module, contract: Contract, val) -> float:
    module.eval()
    return float(
        evaluate(contract, val.labels, predict_logits(module, contract, val.images))["auc"]
    )


def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _shift(x, gen):
    """Random shift by up to 1/14 of the size (reflect padding), as in `edgemed train`."""
    import torch

    pad = max(1, x.shape[-1] // 14)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
