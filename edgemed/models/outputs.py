"""Pick the logits out of a model that returns a tuple, list or dict (`--output-name/-index`).

The wrapper's state dict is the wrapped model's own, so weights saved from either load into both.
"""

from __future__ import annotations

import torch
from torch import nn


def pick(out, choice: str | int):
    """The output `choice` names: a dict key (or attribute) for a name, a position for an index."""
    if isinstance(choice, int):
        return out[choice]
    if isinstance(out, dict):
        return out[choice]
    return getattr(out, choice)


class SelectOutput(nn.Module):
    """`net(x)[choice]` as a module, traced and exported as one output."""

    def __init__(self, net: nn.Module, choice: str | int) -> None:
        super().__init__()
        self.net = net
        self.choice = choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pick(self.net(x), self.choice)

    def state_dict(self, *args, **kwargs):  # the wrapped model's keys, without a "net." prefix
        return self.net.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.net.load_state_dict(state_dict, strict=strict, assign=assign)
