"""Rebuildable compressed architectures: a base ModelSpec plus an ordered list of layer edits.

A compressed checkpoint stores `ModelSpec(REBUILD, {"base": ...,
"in_channels": C, "num_outputs": K, "edits": [...]})`. Each edit replaces the module at a dotted
path by a module of new shape built from the one already there (so kernel, stride, padding and
bias carry over). Compression methods install their layers through `apply_edit` too, so what they
build and what `rebuild` rebuilds cannot diverge; `load_checkpoint`'s strict state-dict check holds.

Edit kinds (all values plain ints/strings, so checkpoints stay loadable with weights_only=True):
    {"op": "conv",   "path": P, "in_channels": I, "out_channels": O, "groups": G}
    {"op": "bn",     "path": P, "num_features": N}
    {"op": "linear", "path": P, "in_features": I, "out_features": O}
    {"op": "svd",    "path": P, "rank": R}          Linear or 1x1 conv -> two thin layers
    {"op": "tucker", "path": P, "rank_in": A, "rank_out": B}   kxk conv -> 1x1, kxk core, 1x1
"""

from __future__ import annotations

from edgemed.models import REBUILD, ModelSpec, build_model

__all__ = ["REBUILD", "apply_edit", "compressed_spec", "rebuild"]


def rebuild(
    base: dict, in_channels: int, num_outputs: int, edits: list[dict], factory: str | None = None
):
    """Build the base architecture and apply `edits` in order (the checkpoint's factory); the base
    may be a non-zoo factory only when it is `factory`, the one the user named for this run."""
    model = build_model(
        ModelSpec(base["name"], dict(base.get("kwargs", {}))), in_channels, num_outputs, factory
    )
    for edit in edits:
        apply_edit(model, edit)
    return model


def compressed_spec(source: ModelSpec, channels: int, outputs: int, edits: list[dict]) -> ModelSpec:
    """The spec of `source` with `edits` appended (an already compressed source keeps its base)."""
    if source.name == REBUILD:
        kw = source.kwargs
        return ModelSpec(REBUILD, {**kw, "edits": [*kw["edits"], *edits]})
    return ModelSpec(
        REBUILD,
        {
            "base": source.to_dict(),
            "in_channels": channels,
            "num_outputs": outputs,
            "edits": list(edits),
        },
    )


def get_module(model, path: str):
    return model.get_submodule(path)


def set_module(model, path: str, module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def apply_edit(model, edit: dict):
    """Replace the module at edit['path'] by the edited one; returns (old, new)."""
    old = get_module(model, edit["path"])
    try:
        builder = _BUILDERS[edit["op"]]
    except KeyError:
        raise ValueError(f"unknown architecture edit {edit['op']!r}") from None
    new = builder(old, edit)
    set_module(model, edit["path"], new)
    return old, new


def _conv(old, e: dict):
    from torch import nn

    return nn.Conv2d(
        e["in_channels"],
        e["out_channels"],
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        e["groups"],
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )


def _bn(old, e: dict):
    from torch import nn

    return nn.BatchNorm2d(
        e["num_features"], old.eps, old.momentum, old.affine, old.track_running_stats
    )


def _linear(old, e: dict):
    from torch import nn

    return nn.Linear(e["in_features"], e["out_features"], bias=old.bias is not None)


def _svd(old, e: dict):
    """Linear (out x in) -> Linear(in, r) . Linear(r, out); a 1x1 conv likewise as two 1x1 convs."""
    from torch import nn

    r, has_bias = e["rank"], old.bias is not None
    if isinstance(old, nn.Linear):
        return nn.Sequential(
            nn.Linear(old.in_features, r, bias=False), nn.Linear(r, old.out_features, bias=has_bias)
        )
    return nn.Sequential(
        nn.Conv2d(old.in_channels, r, 1, old.stride, old.padding, bias=False),
        nn.Conv2d(r, old.out_channels, 1, bias=has_bias),
    )


def _tucker(old, e: dict):
    """kxk conv -> 1x1 (Cin -> r_in), kxk core (r_in -> r_out, original stride/padding), 1x1 (-> Cout)."""
    from torch import nn

    ri, ro = e["rank_in"], e["rank_out"]
    return nn.Sequential(
        nn.Conv2d(old.in_channels, ri, 1, bias=False),
        nn.Conv2d(ri, ro, old.kernel_size, old.stride, old.padding, old.dilation, bias=False),
        nn.Conv2d(ro, old.out_channels, 1, bias=old.bias is not None),
    )


_BUILDERS = {"conv": _conv, "bn": _bn, "linear": _linear, "svd": _svd, "tucker": _tucker}
