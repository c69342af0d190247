"""XNOR-Net-style binarized convolution weights: W_b = sign(W) * mean|W| per output channel.

During fine-tuning each conv's weight is a parametrization of a latent float weight, with a
straight-through estimator (gradient passed where |W| <= 1). Afterwards the parametrization is
removed, leaving plain Conv2d layers whose float weights take exactly two values (+a, -a) per
output channel, so the model exports like any other; the size they would take stored as 1 bit
per weight plus one float scale per output channel is reported separately. As in XNOR-Net the
first convolution (the image stem) and the Linear head stay full precision.
"""

from __future__ import annotations

import math

from edgemed.compress.method import Method, Outcome, tune
from edgemed.errors import InputError


def _sign_scale_module():
    import torch
    from torch import nn

    class SignScale(nn.Module):
        """sign(W) * mean|W| per output channel, forward; clipped identity gradient, backward."""

        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return binarized(w).detach() + (w.clamp(-1, 1) - w.clamp(-1, 1).detach())

    return SignScale


def binarized(w):
    """sign(W) * mean|W| over each output channel (sign(0) taken as +1)."""
    import torch

    alpha = w.abs().flatten(1).mean(1).reshape(-1, *([1] * (w.ndim - 1)))
    return torch.where(w >= 0, alpha, -alpha)


def binarize_convs(model) -> list[str]:
    """Attach the binarizing parametrization to every Conv2d except the first; returns their paths."""
    from torch import nn
    from torch.nn.utils import parametrize

    convs = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    sign_scale = _sign_scale_module()
    for _, m in convs[1:]:
        parametrize.register_parametrization(m, "weight", sign_scale())
    return [p for p, _ in convs[1:]]


def finalize(model, paths: list[str]) -> None:
    """Bake the binarized weights into plain Conv2d weights (parametrizations removed)."""
    from torch.nn.utils import parametrize

    for p in paths:
        parametrize.remove_parametrizations(model.get_submodule(p), "weight", True)


def one_bit_size(model, paths: list[str]) -> dict:
    """Bytes of all parameters as float32 vs. with the binarized convs at 1 bit per weight plus one
    float32 scale per output channel (BatchNorm running statistics not counted in either)."""
    params = dict(model.named_parameters())
    float_bytes = 4 * sum(p.numel() for p in params.values())
    binary = {f"{p}.weight" for p in paths}
    bits = 0
    for name, t in params.items():
        bits += t.numel() + 32 * t.shape[0] if name in binary else 32 * t.numel()
    return {
        "float32_param_bytes": int(float_bytes),
        "one_bit_param_bytes": int(math.ceil(bits / 8)),
        "binarized_layers": len(paths),
        "binarized_weights": int(sum(params[f"{p}.weight"].numel() for p in paths)),
    }


def values_per_channel(weight) -> list[int]:
    """Distinct values in each output channel of a weight tensor (2 for a binarized conv)."""
    return [int(len(set(ch.flatten().tolist()))) for ch in weight.detach()]


def _run_binarize(t, ref, ds, req):
    """XNOR-Net weights in every conv but the stem; stored as float, 1-bit size reported."""

    paths = binarize_convs(t.module)
    if not paths:
        raise InputError(f"{req.model} has no convolution besides the stem to binarize")
    result = tune(t, ds, req, "binarize fine-tune")
    finalize(t.module, paths)
    return Outcome(t.module, t.spec, {"layers": paths, **one_bit_size(t.module, paths)}, result)


BINARIZE = Method("binarize", _run_binarize, epochs=10)
