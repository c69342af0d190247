"""Knowledge distillation (Hinton et al. 2015): the student learns from the teacher's softened
outputs and the hard labels,

    loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard_loss(student, labels)

with sigmoid outputs (binary, multilabel: a Bernoulli KL per output) or softmax (multiclass)
softened by temperature T. The teacher runs in eval mode on the same (augmented) batch.
"""

from __future__ import annotations

from collections.abc import Callable

from edgemed.compress.finetune import fit, hard_loss
from edgemed.compress.method import Method, Outcome, fit_settings
from edgemed.errors import InputError


def soft_kl(student_logits, teacher_logits, task: str, temperature: float):
    """Mean KL divergence between the temperature-softened teacher and student distributions."""
    import torch
    import torch.nn.functional as F

    zs, zt = student_logits / temperature, teacher_logits / temperature
    if task == "multiclass":
        return F.kl_div(
            F.log_softmax(zs, 1), F.log_softmax(zt, 1), reduction="batchmean", log_target=True
        )
    pt = torch.sigmoid(zt)
    log_ps, log_1ps = F.logsigmoid(zs), F.logsigmoid(-zs)
    log_pt, log_1pt = F.logsigmoid(zt), F.logsigmoid(-zt)
    kl = pt * (log_pt - log_ps) + (1 - pt) * (log_1pt - log_1ps)
    return kl.sum(1).mean()


def distillation_loss(
    teacher, task: str, hard: Callable, temperature: float, alpha: float
) -> Callable:
    """loss_fn(student_logits, labels, inputs) for `finetune.fit`."""
    import torch

    teacher.eval()

    def loss_fn(z, y, x):
        with torch.no_grad():
            zt = teacher(x)
        z2 = z.reshape(len(z), -1)
        soft = soft_kl(z2, zt.reshape(len(zt), -1), task, temperature)
        return alpha * temperature**2 * soft + (1 - alpha) * hard(z, y)

    return loss_fn


def kl_to_teacher(student, teacher, x, task: str, temperature: float = 1.0) -> float:
    """KL(teacher || student) at temperature T on inputs `x` (both in eval mode)."""
    import torch

    student.eval()
    teacher.eval()
    with torch.no_grad():
        return float(soft_kl(student(x), teacher(x), task, temperature))


def _check_distill(req) -> None:

    if not req.teacher:
        raise InputError("--method distill needs --teacher MODEL (a trained, larger model's dir)")
    if req.temperature is not None and req.temperature <= 0:
        raise InputError(f"--temperature must be positive, got {req.temperature}")
    if req.alpha is not None and not 0.0 <= req.alpha <= 1.0:
        raise InputError(f"--alpha must be in [0, 1], got {req.alpha}")


def _run_distill(t, ref, ds, req):
    """Train the student on the teacher's softened outputs plus the hard labels."""

    s = req.settings()
    task = t.contract.task
    loss = distillation_loss(
        ref.module, task, hard_loss(task, ds, t.contract.num_outputs), s["temperature"], s["alpha"]
    )
    result = fit(t.module, ds, t.contract, fit_settings(req), loss, "distill")
    details = {"teacher_params": sum(p.numel() for p in ref.module.parameters())}
    return Outcome(t.module, t.spec, details, result)


DISTILL = Method(
    "distill",
    _run_distill,
    settings=("teacher", "temperature", "alpha"),
    defaults={"temperature": 4.0, "alpha": 0.7},
    epochs=15,
    lr=3e-3,
    min_epochs=1,
    student=True,
    check=_check_distill,
)
