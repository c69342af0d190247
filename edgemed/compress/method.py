"""What a compression method is: one `Method` (its settings, defaults, checks and `run`) declared
in its own module and named by one line in `edgemed.compress.METHODS`.

`run(target, reference, data, request) -> Outcome`. A method with `student=True` (distillation)
gets the reference model from `--teacher` and a separate target (the student, from `--model`);
every other method compresses the reference itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from edgemed.compress.finetune import fit, hard_loss
from edgemed.contract import Contract
from edgemed.models import ModelSpec
from edgemed.pipeline.loop import Recipe


@dataclass(frozen=True)
class Subject:
    """A torch model to compress (or the reference it is compared with)."""

    module: object
    spec: ModelSpec
    contract: Contract
    source: dict
    card: dict | None = None


@dataclass(frozen=True)
class Outcome:
    """A compressed model: module, its rebuildable spec, method details and fine-tuning record."""

    module: object
    spec: ModelSpec
    details: dict
    fit: object


@dataclass(frozen=True)
class Method:
    """One compression method. `settings` are the request fields (CLI flags) it takes; any other
    method setting given is refused. `defaults` fill unset settings; `check(req)` refuses bad
    values with one line; `run` compresses (imports torch inside)."""

    name: str
    run: Callable
    settings: tuple[str, ...] = ()
    defaults: dict = field(default_factory=dict)
    epochs: int = 5
    lr: float = 1e-3
    min_epochs: int = 0
    student: bool = False
    check: Callable | None = None


def fit_settings(req):

    return Recipe(epochs=req.fit_epochs, lr=req.fit_lr, seed=req.seed)


def tune(t: Subject, ds, req, label: str):
    """Fine-tune `t.module` on the hard labels (every method but distillation)."""

    hard = hard_loss(t.contract.task, ds, t.contract.num_outputs)
    return fit(t.module, ds, t.contract, fit_settings(req), lambda z, y, x: hard(z, y), label)
