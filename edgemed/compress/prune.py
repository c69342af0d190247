"""Pruning: global unstructured magnitude pruning (zeros) and structured L1 channel pruning
(smaller Conv/BN layers: parameters and MACs really go down).

Channel pruning finds *channel groups* in chains of layers: nn.Sequential trees flattened in
order (custom blocks such as residual or dense layers are opaque, their inner Sequentials are
chains of their own). A group is a producer conv (groups=1), then BatchNorm / activations /
pooling / depthwise convs that carry its channels through, then a consumer conv (groups=1). The
zoo's top-level `features` chain also ends in its global-pool + Linear head. Channels whose
producer filters have the smallest L1 norm are removed from every layer of the group.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgemed.compress.method import Method, Outcome, tune
from edgemed.errors import InputError
from edgemed.models.arch import apply_edit, compressed_spec

_PASS_TYPES = (
    "ReLU",
    "ReLU6",
    "SiLU",
    "Identity",
    "Dropout",
    "AvgPool2d",
    "MaxPool2d",
)


@dataclass(frozen=True)
class ChannelGroup:
    """Layers sharing one channel dimension: producer conv, carriers (BN, depthwise), consumer."""

    producer: str
    carriers: tuple[str, ...]
    consumer: str
    channels: int


def magnitude_prune(model, amount: float) -> list:
    """Global L1 unstructured pruning of every Conv2d/Linear weight to `amount` sparsity.

    Masks stay attached (fine-tuning keeps pruned weights at zero); call `make_permanent` after.
    """
    from torch import nn
    from torch.nn.utils import prune

    params = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    return params


def make_permanent(params: list) -> None:
    from torch.nn.utils import prune

    for module, name in params:
        prune.remove(module, name)


def sparsity(model) -> dict:
    """Zero weights among Conv2d/Linear weights, and nonzero parameters overall."""
    from torch import nn

    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return {"weight_sparsity": zeros / max(1, total), "nonzero_params": nonzero}


def channel_groups(model) -> list[ChannelGroup]:
    """Every prunable channel group in `model` (see module docstring)."""
    groups = []
    for chain in _chains(model):
        groups += _groups_in_chain(chain)
    return groups


def channel_prune(model, amount: float) -> tuple[list[dict], list[dict]]:
    """Remove `amount` of the channels of every channel group (lowest L1 filter norm first).

    Modifies `model` in place; returns (architecture edits, per-group report).
    """
    edits, report = [], []
    for g in channel_groups(model):
        keep_n = max(1, int(round(g.channels * (1.0 - amount))))
        if keep_n >= g.channels:
            continue
        keep = _strongest(model.get_submodule(g.producer).weight, keep_n)
        edits += _prune_group(model, g, keep)
        report.append({"producer": g.producer, "channels": g.channels, "kept": keep_n})
    return _last_per_path(edits), report


def _last_per_path(edits: list[dict]) -> list[dict]:
    """Resize edits commute, so one edit per path (its final shape) rebuilds the same model."""
    last = {e["path"]: e for e in edits}
    return [last[p] for p in dict.fromkeys(e["path"] for e in edits)]


def _strongest(weight, n: int):
    import torch

    norms = weight.detach().abs().flatten(1).sum(1)
    return torch.sort(torch.topk(norms, n).indices).values


def _prune_group(model, g: ChannelGroup, keep) -> list[dict]:
    import torch

    n = len(keep)
    edits = []
    prod = model.get_submodule(g.producer)
    edits.append(_conv_edit(g.producer, prod.in_channels, n, 1))
    for path in g.carriers:
        m = model.get_submodule(path)
        if isinstance(m, torch.nn.BatchNorm2d):
            edits.append({"op": "bn", "path": path, "num_features": n})
        else:
            edits.append(_conv_edit(path, n, n, n))
    cons = model.get_submodule(g.consumer)
    if isinstance(cons, torch.nn.Linear):
        edits.append(
            {
                "op": "linear",
                "path": g.consumer,
                "in_features": n,
                "out_features": cons.out_features,
            }
        )
    else:
        edits.append(_conv_edit(g.consumer, n, cons.out_channels, 1))
    with torch.no_grad():
        for i, edit in enumerate(edits):
            old, new = apply_edit(model, edit)
            _copy_sliced(old, new, keep, consumer=i == len(edits) - 1)
    return edits


def _conv_edit(path: str, cin: int, cout: int, groups: int) -> dict:
    return {
        "op": "conv",
        "path": path,
        "in_channels": cin,
        "out_channels": cout,
        "groups": groups,
    }


def _copy_sliced(old, new, keep, consumer: bool) -> None:
    """Copy `old`'s tensors into `new`: input slice for the consumer, output slice otherwise."""
    if consumer:
        new.weight.copy_(old.weight[:, keep])
        if old.bias is not None:
            new.bias.copy_(old.bias)
        return
    for name, t in [*old.named_parameters(recurse=False), *old.named_buffers(recurse=False)]:
        target = getattr(new, name)
        target.copy_(t if t.ndim == 0 else t[keep])


def _chains(model) -> list[list[tuple[str, object]]]:
    """Maximal nn.Sequential trees, flattened into (path, leaf-or-opaque-module) lists."""
    from torch import nn

    chains = []
    for path, m in model.named_modules():
        parent_path = path.rpartition(".")[0]
        parent = model.get_submodule(parent_path) if path else None
        if isinstance(m, nn.Sequential) and not isinstance(parent, nn.Sequential):
            chain = _flatten(m, path)
            if path == "features" and _is_zoo(model):
                head = _head_linear(model)
                chain += [("#pool", None), head] if head else [("#end", None)]
            chains.append(chain)
    return chains


def _flatten(seq, prefix: str) -> list[tuple[str, object]]:
    from torch import nn

    out = []
    for name, child in seq.named_children():
        path = f"{prefix}.{name}" if prefix else name
        out += _flatten(child, path) if isinstance(child, nn.Sequential) else [(path, child)]
    return out


def _is_zoo(model) -> bool:
    return type(model).__module__ == "edgemed.models.zoo"


def _head_linear(model):
    """The zoo head's Linear (directly, or after Dropout in a Sequential), else None."""
    from torch import nn

    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return ("head", head)
    if isinstance(head, nn.Sequential):
        kids = list(head.named_children())
        if isinstance(kids[-1][1], nn.Linear) and all(
            isinstance(k, nn.Dropout) for _, k in kids[:-1]
        ):
            return (f"head.{kids[-1][0]}", kids[-1][1])
    return None


def _groups_in_chain(chain) -> list[ChannelGroup]:
    from torch import nn

    groups = []
    for i, (path, m) in enumerate(chain):
        if not (isinstance(m, nn.Conv2d) and m.groups == 1):
            continue
        carriers, pooled = [], False
        for next_path, nxt in chain[i + 1 :]:
            if next_path == "#pool":
                pooled = True
            elif isinstance(nxt, nn.BatchNorm2d) or _is_depthwise(nxt):
                carriers.append(next_path)
            elif (isinstance(nxt, nn.Conv2d) and nxt.groups == 1 and not pooled) or (
                isinstance(nxt, nn.Linear) and pooled
            ):
                groups.append(ChannelGroup(path, tuple(carriers), next_path, m.out_channels))
                break
            elif type(nxt).__name__ not in _PASS_TYPES:
                break
    return groups


def _is_depthwise(m) -> bool:
    from torch import nn

    return isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels and m.groups > 1


def _check_amount(req) -> None:

    if req.amount is None:
        raise InputError(
            f"--method {req.method} needs --amount X, the fraction to remove (0 < X < 1)"
        )
    if not 0.0 < req.amount < 1.0:
        raise InputError(f"--amount must be between 0 and 1 (exclusive), got {req.amount}")


def _run_prune(t, ref, ds, req):
    """Global unstructured magnitude pruning; the architecture is unchanged (zeros only)."""

    params = magnitude_prune(t.module, req.amount)
    result = tune(t, ds, req, "prune fine-tune")
    make_permanent(params)
    details = {**sparsity(t.module), "note": "dense storage; MACs counted dense"}
    return Outcome(t.module, t.spec, details, result)


def _run_channel_prune(t, ref, ds, req):
    """Structured L1 channel pruning: smaller Conv/BN layers and their consumers."""

    edits, groups = channel_prune(t.module, req.amount)
    if not edits:
        raise InputError(
            f"{req.model} has no channel group that --amount {req.amount} shrinks (grouped and "
            "low-rank convs are not channel-prunable); raise --amount or use --method prune"
        )
    result = tune(t, ds, req, "channel-prune fine-tune")
    spec = compressed_spec(t.spec, t.contract.channels, t.contract.num_outputs, edits)
    return Outcome(t.module, spec, {"groups": groups, "edits": len(edits)}, result)


PRUNE = Method("prune", _run_prune, settings=("amount",), epochs=5, check=_check_amount)
CHANNEL_PRUNE = Method(
    "channel-prune", _run_channel_prune, settings=("amount",), epochs=8, check=_check_amount
)
