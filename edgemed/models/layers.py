"""Convolution and dense building blocks: standard, grouped, depthwise-separable and low-rank."""

from __future__ import annotations

import torch
from torch import nn

CONV_KINDS = ("standard", "grouped", "dwsep", "lowrank")


class LowRankConv2d(nn.Module):
    """LightLayers-style conv: the (Cout x Cin*k*k) weight factored at rank r as a kxk conv to r
    channels followed by a 1x1 conv to Cout."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.reduce = nn.Conv2d(cin, rank, k, stride, k // 2, bias=False)
        self.expand = nn.Conv2d(rank, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.reduce(x))


class LowRankLinear(nn.Module):
    """Dense layer W (out x in) factored as U (out x r) V (r x in)."""

    def __init__(self, fin: int, fout: int, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.reduce = nn.Linear(fin, rank, bias=False)
        self.expand = nn.Linear(rank, fout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.reduce(x))


def conv_bn_act(
    cin: int, cout: int, stride: int = 1, kind: str = "standard", groups: int = 4, rank: int = 8
) -> nn.Sequential:
    """3x3 conv of the given kind + BatchNorm + ReLU."""
    if kind == "standard" or (kind == "grouped" and _gcd_groups(cin, cout, groups) == 1):
        conv: nn.Module = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    elif kind == "grouped":
        conv = nn.Conv2d(cin, cout, 3, stride, 1, groups=_gcd_groups(cin, cout, groups), bias=False)
    elif kind == "dwsep":
        conv = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False),
        )
    elif kind == "lowrank":
        conv = LowRankConv2d(cin, cout, 3, stride, min(rank, cin, cout))
    else:
        raise ValueError(f"unknown conv kind {kind!r}")
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """A residual block's shortcut: identity, or a strided 1x1 conv + BN when the shape changes."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


def _gcd_groups(cin: int, cout: int, groups: int) -> int:
    """Largest g <= groups dividing both channel counts (the stem's 1-3 input channels gives 1)."""
    for g in range(min(groups, cin, cout), 0, -1):
        if cin % g == 0 and cout % g == 0:
            return g
    return 1
