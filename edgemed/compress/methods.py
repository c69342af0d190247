"""The six compression methods, each (target, reference, data, request) -> Outcome."""

from __future__ import annotations

from edgemed.compress.arch import compressed_spec
from edgemed.compress.finetune import FitSettings, fit, hard_loss
from edgemed.compress.pipeline import Outcome, Subject
from edgemed.compress.request import CompressRequest
from edgemed.data import Dataset
from edgemed.errors import InputError


def _settings(req: CompressRequest) -> FitSettings:
    return FitSettings(epochs=req.fit_epochs, lr=req.fit_lr, seed=req.seed)


def _tune(t: Subject, ds: Dataset, req: CompressRequest, label: str):
    hard = hard_loss(t.contract.task)
    return fit(t.module, ds, t.contract, _settings(req), lambda z, y, x: hard(z, y), label)


def prune(t: Subject, ref: Subject, ds: Dataset, req: CompressRequest) -> Outcome:
    """Global unstructured magnitude pruning; the architecture is unchanged (zeros only)."""
    from edgemed.compress.prune import magnitude_prune, make_permanent, sparsity

    params = magnitude_prune(t.module, req.amount)
    result = _tune(t, ds, req, "prune fine-tune")
    make_permanent(params)
    details = {**sparsity(t.module), "note": "dense storage; MACs counted dense"}
    return Outcome(t.module, t.spec, details, result)


def channel_prune(t: Subject, ref: Subject, ds: Dataset, req: CompressRequest) -> Outcome:
    """Structured L1 channel pruning: smaller Conv/BN layers and their consumers."""
    from edgemed.compress.prune import channel_prune as prune_channels

    edits, groups = prune_channels(t.module, req.amount)
    if not edits:
        raise InputError(
            f"{req.model} has no channel group that --amount {req.amount} shrinks (grouped and "
            "low-rank convs are not channel-prunable); raise --amount or use --method prune"
        )
    result = _tune(t, ds, req, "channel-prune fine-tune")
    spec = compressed_spec(t.spec, t.contract.channels, t.contract.num_outputs, edits)
    return Outcome(t.module, spec, {"groups": groups, "edits": len(edits)}, result)


def _lowrank(method: str):
    def run(t: Subject, ref: Subject, ds: Dataset, req: CompressRequest) -> Outcome:
        from edgemed.compress.lowrank import RankRule, factorize

        edits, layers = factorize(t.module, method, RankRule(req.rank, req.energy))
        if not edits:
            flag = f"--rank {req.rank}" if req.rank is not None else f"--energy {req.energy}"
            kind = "Linear or 1x1 conv" if method == "svd" else "kxk conv"
            raise InputError(
                f"no {kind} layer of {req.model} gets smaller at {flag}; choose a lower rank or energy"
            )
        result = _tune(t, ds, req, f"{method} fine-tune")
        spec = compressed_spec(t.spec, t.contract.channels, t.contract.num_outputs, edits)
        return Outcome(t.module, spec, {"layers": layers}, result)

    run.__doc__ = f"Low-rank factorization by {method}, then fine-tuning."
    return run


def binarize(t: Subject, ref: Subject, ds: Dataset, req: CompressRequest) -> Outcome:
    """XNOR-Net weights in every conv but the stem; stored as float, 1-bit size reported."""
    from edgemed.compress.binarize import binarize_convs, finalize, one_bit_size

    paths = binarize_convs(t.module)
    if not paths:
        raise InputError(f"{req.model} has no convolution besides the stem to binarize")
    result = _tune(t, ds, req, "binarize fine-tune")
    finalize(t.module, paths)
    return Outcome(t.module, t.spec, {"layers": paths, **one_bit_size(t.module, paths)}, result)


def distill(t: Subject, ref: Subject, ds: Dataset, req: CompressRequest) -> Outcome:
    """Train the student on the teacher's softened outputs plus the hard labels."""
    from edgemed.compress.distill import distillation_loss

    loss = distillation_loss(
        ref.module, t.contract.task, hard_loss(t.contract.task), req.kd_temperature, req.kd_alpha
    )
    result = fit(t.module, ds, t.contract, _settings(req), loss, "distill")
    details = {"teacher_params": sum(p.numel() for p in ref.module.parameters())}
    return Outcome(t.module, t.spec, details, result)


METHOD_FUNCS = {
    "prune": prune,
    "channel-prune": channel_prune,
    "svd": _lowrank("svd"),
    "tucker": _lowrank("tucker"),
    "distill": distill,
    "binarize": binarize,
}
