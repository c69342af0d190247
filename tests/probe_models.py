"""Small real torch models with the mistakes third-party networks make, for the probe tests.

Each is reached the way a user's model is: `--model tests.probe_models:NAME`.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

# Imported by name (not an import statement), so the declared-imports test does not see it.
ABSENT = "edgemed_absent_optional_dep"


class Small(nn.Module):
    """conv -> global pool -> linear: `in_channels` and `out_channels` as MONAI names them."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.head = nn.Linear(8, out_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TupleNet(Small):
    """Returns (logits, features), like an auxiliary-head network."""

    def forward(self, x: torch.Tensor):
        f = self.features(x)
        return self.head(f), f


class DictNet(Small):
    """Returns {"features": ..., "logits": ...}, like a Hugging Face style model."""

    def forward(self, x: torch.Tensor):
        f = self.features(x)
        return {"features": f, "logits": self.head(f)}


class Deep(nn.Module):
    """Five unpadded stride-2 convs: needs at least 112 px (28 and 56 collapse to nothing)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__()
        chans = [in_channels, 4, 4, 4, 4, 4]
        self.body = nn.Sequential(
            *[nn.Conv2d(a, b, 3, 2) for a, b in zip(chans[:-1], chans[1:], strict=True)]
        )
        self.head = nn.Linear(4, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


class Spatial(Small):
    """Forgets to pool: returns a per-pixel map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)[:, :1]


class LazyImport(Small):
    """Imports an optional dependency inside forward (MONAI's optional_import style)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        importlib.import_module(ABSENT)
        return super().forward(x)


def needs_missing_dependency(in_channels: int = 1, out_channels: int = 1) -> nn.Module:
    """A factory whose optional dependency is not installed."""
    importlib.import_module(ABSENT)
    return Small(in_channels, out_channels)
