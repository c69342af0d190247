"""Train a zoo (or factory) model on CPU with early stopping on validation AUC; write checkpoint + card."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgemed.contract import Contract
from edgemed.data import Dataset, load_dataset
from edgemed.data.npz import with_class_names
from edgemed.data.overlap import split_overlap
from edgemed.data.peek import peek_contract
from edgemed.errors import InputError
from edgemed.evaluation.drift import label_columns
from edgemed.evaluation.labels import (
    MIN_PER_CLASS,
    chance_warning,
    label_counts,
    macro,
    not_evaluable_text,
    per_label_aucs,
)
from edgemed.evaluation.metrics import auc, binary_metrics, youden_threshold
from edgemed.evaluation.stats import delong_covariance, normal_ci
from edgemed.fileio import staged_dir, write_json_atomic
from edgemed.models import ModelSpec, build_model
from edgemed.models.checkpoint import save_checkpoint
from edgemed.models.complexity import measure_complexity
from edgemed.models.probe import probe_torch
from edgemed.pipeline.augment import AugmentSettings, check_augment
from edgemed.pipeline.init_weights import apply_init, head_names, read_init_weights
from edgemed.pipeline.loop import Recipe, fit, patience_start
from edgemed.pipeline.loss import (
    CLASS_WEIGHTS,
    WEIGHT_CAP,
    check_weight_cap,
    class_weights,
    raw_class_weights,
    task_loss,
)
from edgemed.provenance import provenance


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (recorded in the model card)."""

    data: str
    model: ModelSpec = field(default_factory=lambda: ModelSpec("cnn"))
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int | None = None  # off: the cosine schedule runs to its end (loop.Recipe)
    seed: int = 0
    image_size: tuple[int, int] | None = None
    channels: int = 1
    near_duplicates: bool = False
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    class_weights: str = "auto"
    class_weight_cap: float | None = WEIGHT_CAP
    warmup_epochs: float = 1.0
    init: str | None = None
    freeze_epochs: int = 0
    threads: int | None = None
    class_names: tuple[str, ...] | None = None  # --class-names: overrides the data's names

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    def recipe(self):
        """The fitting recipe of this run (edgemed.pipeline.loop)."""
        return Recipe(
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            weight_decay=self.weight_decay,
            warmup_epochs=self.warmup_epochs,
            augment=self.augment,
            patience=self.patience,
            freeze_epochs=self.freeze_epochs,
            seed=self.seed,
        )


@dataclass(frozen=True)
class TrainResult:
    module: object
    contract: Contract
    card: dict


def contract_for(ds: Dataset) -> Contract:
    """Contract from the training split: its size, channels, and pixel mean/std after /255."""
    train = ds.split("train").images.astype(np.float32) / 255.0
    axes = (0, 1, 2)
    mean = tuple(round(float(v), 4) for v in train.mean(axis=axes))
    std = tuple(round(max(float(v), 1e-3), 4) for v in train.std(axis=axes))
    return Contract(
        input_size=tuple(train.shape[1:3]),
        channels=train.shape[3],
        class_names=ds.class_names,
        task=ds.task,
        mean=mean,
        std=std,
    )


def train(cfg: TrainConfig, ds: Dataset | None = None) -> TrainResult:
    """Run training and evaluation; returns the best-on-validation model, its contract and card."""
    import torch

    check_recipe(cfg)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    init = read_init_weights(cfg.init) if cfg.init else None  # refused before data loads
    module, peeked = None, None
    if ds is None:  # probe the model on the data's shape first: loading may take minutes
        peeked = peek_contract(cfg.data, cfg.image_size, cfg.channels)
        module = _probed_model(cfg, peeked)
        ds = load_dataset(cfg.data, cfg.image_size, cfg.channels, cfg.seed, cfg.near_duplicates)
    ds = with_class_names(ds, cfg.class_names, "--class-names")
    contract = contract_for(ds)
    require_evaluable_validation(contract, ds.split("val").labels)
    if module is None or _probe_key(peeked) != _probe_key(contract):
        module = _probed_model(cfg, contract)
    init_report = apply_init(module, *init, cfg.init) if init else None
    train_labels = ds.split("train").labels
    weights = class_weights(
        contract.task, train_labels, contract.num_outputs, cfg.class_weights, cfg.class_weight_cap
    )
    raw = raw_class_weights(contract.task, train_labels, contract.num_outputs, cfg.class_weights)
    fitted = _fit(module, ds, contract, cfg, weights, init_report is not None)
    module.load_state_dict(fitted.best_state)
    module.eval()
    val_scores = contract.scores(predict_logits(module, contract, ds.split("val").images))
    contract = contract.with_threshold(
        operating_threshold(contract, ds.split("val").labels, val_scores)
    )
    validation = validation_check(contract, ds.split("val").labels, val_scores)
    test_logits = predict_logits(module, contract, ds.split("test").images)
    card = {
        "model": cfg.model.to_dict(),
        "complexity": measure_complexity(module, contract.input_shape(1)).to_dict(),
        "test": evaluate(contract, ds.split("test").labels, test_logits),
        "validation": validation,
        "training": {
            "seconds": round(fitted.seconds, 2),
            "epochs_run": len(fitted.history),
            "history": list(fitted.history),
            "best_epoch": fitted.best_epoch,
            "recipe": recipe_record(cfg, (weights, raw), init_report),
        },
        "data": {**ds.summary(), "split_overlap": split_overlap(ds)},
        "contract": contract.to_dict(),
        "config": cfg.to_dict(),
        "provenance": provenance(
            inputs={"data": ds.data_hash, **({"init": init[1]} if init else {})}
        ),
    }
    return TrainResult(module, contract, card)


def operating_threshold(contract: Contract, labels: np.ndarray, scores: np.ndarray):
    """Chosen on validation (Youden's J): one for binary, one per label for multilabel (0.5 for a
    label whose validation column has one class: nothing to choose from); multiclass: argmax."""
    if contract.task == "binary":
        return youden_threshold(labels, scores)
    if contract.task == "multiclass":
        return 0.5
    y = np.asarray(labels).reshape(len(labels), -1)
    return tuple(
        youden_threshold(y[:, k], scores[:, k]) if 0 < int(y[:, k].sum()) < len(y) else 0.5
        for k in range(y.shape[1])
    )


def _probed_model(cfg: TrainConfig, contract: Contract | None):
    """Build the model and run one batch through it (edgemed.models.probe) when `contract` is known."""
    import torch

    if contract is None:
        return None
    torch.manual_seed(cfg.seed)  # the same initial weights however often the model is built
    # A TrainConfig is built by the caller from its command line, never read from a file, so its
    # model (factory included) is the one the user named for this run.
    module = build_model(cfg.model, contract.channels, contract.num_outputs, factory=cfg.model.name)
    probe_torch(module, contract, f"model {cfg.model.name!r}")
    return module


def _probe_key(contract: Contract | None) -> tuple | None:
    """What the model is built and probed for (a peeked shape must match the loaded data)."""
    if contract is None:
        return None
    return (contract.input_size, contract.channels, contract.task, contract.num_outputs)


def validation_check(contract: Contract, labels: np.ndarray, scores: np.ndarray) -> dict:
    """Validation AUC (DeLong 95% CI) and whether the model beats chance (lower bound > 0.5).
    Multi-label/multi-class: per label (evaluation/labels.py), the macro AUC over the evaluable
    labels, better_than_chance only when every label is above chance, and a warning naming
    the labels that are inverted, not above chance or cannot be evaluated."""

    y = np.asarray(labels)
    if contract.task != "binary":
        out = _per_label_summary(contract, y, np.asarray(scores), "validation")
        if contract.task == "multilabel":  # operating_threshold kept 0.5 for these
            out["not_thresholded"] = [
                p["label"] for p in out["per_label"] if not p["positives"] or not p["negatives"]
            ]
        return out
    if not 0 < int(y.sum()) < len(y):
        return {"auc": None, "auc_ci95": None, "better_than_chance": None}
    aucs, cov = delong_covariance(y.reshape(-1), np.asarray(scores, np.float64))
    lo, hi = normal_ci(float(aucs[0]), float(cov[0, 0]))
    return {"auc": float(aucs[0]), "auc_ci95": [lo, hi], "better_than_chance": lo > 0.5}


def _per_label_summary(
    contract: Contract, labels: np.ndarray, probs: np.ndarray, where: str
) -> dict:

    onehot = label_columns(contract, labels)
    per = per_label_aucs(contract.class_names, onehot, probs)
    return {
        "auc": macro(per),
        "auc_macro_over": [p["label"] for p in per if p["evaluable"]],
        "better_than_chance": all(p.get("chance") == "above" for p in per),
        "min_per_class": MIN_PER_CLASS,
        "per_label": per,
        "not_evaluable": [p["label"] for p in per if not p["evaluable"]],
        "warning": chance_warning(per, f"the {where} split ({len(onehot)} images)"),
    }


def selection_auc(contract: Contract, labels: np.ndarray, logits: np.ndarray) -> float:
    """The model-selection number on validation: the AUC (binary) or the macro AUC over the
    labels the validation split can evaluate (the same set every epoch: it depends on labels)."""
    if contract.task == "binary":
        return auc(labels, contract.scores(logits))
    return evaluate(contract, labels, logits)["auc"]


def require_evaluable_validation(contract: Contract, labels: np.ndarray) -> None:
    """Refuse to train when no label of the validation split can be evaluated (nothing to select
    on: early stopping would follow noise)."""

    if contract.task == "binary":
        return
    counts = label_counts(contract.class_names, label_columns(contract, labels))
    if not any(c.evaluable for c in counts):
        raise InputError(
            f"no label can be evaluated on the validation split: {not_evaluable_text(counts)}; "
            "model selection needs at least one: use a larger validation split"
        )


def evaluate(
    contract: Contract, labels: np.ndarray, logits: np.ndarray, n_boot: int = 1000
) -> dict:
    """Binary: AUC (95% CI), accuracy, sensitivity, specificity at the contract threshold.
    Multiclass/multilabel: per-label AUC (DeLong 95% CI, chance verdict), sensitivity and
    specificity at each threshold, the macro AUC over the evaluable labels (named, with the
    others and their counts), top-1 accuracy (multiclass) or exact-match accuracy (multilabel)."""
    if contract.task == "binary":
        return binary_metrics(labels, contract.scores(logits), contract.threshold, n_boot).to_dict()
    probs = contract.probabilities(logits)
    out = {"n": len(labels)} | _per_label_summary(contract, labels, probs, "test")
    y = label_columns(contract, labels).astype(bool)
    d = contract.decisions(logits)
    if contract.task == "multiclass":
        out["accuracy_top1"] = float((d == y.argmax(axis=1)).mean())
        d = np.eye(probs.shape[1], dtype=bool)[d]
    else:
        out["accuracy_exact_match"] = float((d == y).all(axis=1).mean())
    for p, k in zip(out["per_label"], range(y.shape[1]), strict=True):
        p["threshold"] = float(contract.thresholds[k]) if contract.task != "multiclass" else None
        p["sensitivity"] = float(d[y[:, k], k].mean()) if p["positives"] else None
        p["specificity"] = float((~d[~y[:, k], k]).mean()) if p["negatives"] else None
    return out


def predict_logits(module, contract: Contract, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Torch FP32 logits for uint8 images (N, H, W, C) through the contract's normalization."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(contract.normalize(images[i : i + batch]))
            out.append(module(x).float().numpy())
    return np.concatenate(out).reshape(len(images), -1)


def _fit(module, ds: Dataset, contract: Contract, cfg: TrainConfig, weights, from_init: bool):
    """The one training loop (edgemed.pipeline.loop) with this task's (weighted) loss."""

    loss = task_loss(contract.task, weights)
    val = ds.split("val")
    return fit(
        module,
        ds,
        contract,
        cfg.recipe(),
        lambda logits, y, _x: loss(logits, y),
        lambda m: selection_auc(contract, val.labels, predict_logits(m, contract, val.images)),
        head=head_names(module) if from_init else frozenset(),
    )


def check_recipe(cfg: TrainConfig) -> None:
    """Refuse recipe settings that make no sense, naming the flag."""
    check_augment(cfg.augment)
    if cfg.class_weights not in CLASS_WEIGHTS:
        raise InputError(
            f"--class-weights must be one of {', '.join(CLASS_WEIGHTS)}, got {cfg.class_weights!r}"
        )
    if not 0 <= cfg.warmup_epochs <= cfg.epochs:
        raise InputError(f"--warmup-epochs must be between 0 and --epochs ({cfg.epochs})")
    check_weight_cap(cfg.class_weight_cap)
    if cfg.patience is not None and cfg.patience < 1:
        raise InputError("--patience must be >= 1 (leave it out for no early stopping)")
    if not 0 <= cfg.weight_decay < 1:
        raise InputError("--weight-decay must be >= 0 and < 1")
    if cfg.freeze_epochs and not cfg.init:
        raise InputError("--freeze-epochs trains the head of initialised weights: give --init")
    if not 0 <= cfg.freeze_epochs < cfg.epochs:
        raise InputError(f"--freeze-epochs must be >= 0 and smaller than --epochs ({cfg.epochs})")


def recipe_record(cfg: TrainConfig, weights: tuple, init_report) -> dict:
    """What the card records of the recipe beyond the config: the early-stopping rule, the
    resolved class weights (clipped, and as computed before the cap) and the init."""
    values, raw = weights
    return {
        "schedule": "linear warm-up, cosine decay to 0 at the last epoch (AdamW)",
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "warmup_epochs": cfg.warmup_epochs,
        "weight_decay": cfg.weight_decay,
        "early_stopping": early_stopping_record(cfg),
        "selection": "the epoch with the best validation AUC (macro over evaluable labels)",
        "augment": cfg.augment.to_dict(),
        "class_weights": {
            "mode": cfg.class_weights,
            "cap": cfg.class_weight_cap,
            "values": values,
            "uncapped": raw,
        },
        "freeze_epochs": cfg.freeze_epochs,
        "init": init_report.to_dict() if init_report else None,
    }


def early_stopping_record(cfg: TrainConfig) -> dict:
    if cfg.patience is None:
        return {"patience": None, "rule": "off: every epoch runs, the best-validation one is kept"}
    start = patience_start(cfg.epochs, cfg.warmup_epochs, cfg.freeze_epochs)
    return {
        "patience": cfg.patience,
        "counted_from_epoch": start,
        "rule": "stop after `patience` epochs without a validation gain, counted from the epoch "
        "that ends past the middle of the cosine decay",
    }


def write_training_dir(result: TrainResult, spec: ModelSpec, out: Path, force: bool) -> Path:
    """Write `model.pt` and `card.json` into `out` atomically."""

    if result.card["test"].get("auc") is None:
        missing = ", ".join(result.card["test"].get("not_evaluable") or [])
        raise InputError(
            "training produced no test metrics"
            + (f": no label can be evaluated on the test split ({missing})" if missing else "")
        )
    with staged_dir(out, force) as tmp:
        save_checkpoint(tmp / "model.pt", result.module, spec, result.contract)
        write_json_atomic(tmp / "card.json", result.card)
    return out
