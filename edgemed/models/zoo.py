"""The compact model families: a base CNN scaled by depth and width (standard, grouped,
depthwise-separable or low-rank convolutions), a small DenseNet, a MobileNetV2-style net,
and a ResNet-18 baseline."""

from __future__ import annotations

import torch
from torch import nn

from edgemed.models.layers import LowRankLinear, conv_bn_act, shortcut


def _ch(c: int, width: float) -> int:
    return max(4, int(round(c * width / 4)) * 4)


class CompactCNN(nn.Module):
    """Three stages of 3x3 conv blocks (16/32/64 channels x width, 2 blocks x depth each),
    global average pooling, dropout and a (optionally low-rank) linear head emitting logits."""

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 1,
        width: float = 1.0,
        depth: float = 1.0,
        conv: str = "standard",
        groups: int = 4,
        rank: int = 8,
        dropout: float = 0.2,
        base: int = 16,
    ) -> None:
        super().__init__()
        blocks = max(1, int(round(2 * depth)))
        layers: list[nn.Module] = [conv_bn_act(in_channels, _ch(base, width), 1, "standard")]
        cin = _ch(base, width)
        for stage in range(3):
            cout = _ch(base * 2**stage, width)
            for b in range(blocks):
                stride = 2 if (b == 0 and stage > 0) else 1
                layers.append(conv_bn_act(cin, cout, stride, conv, groups, rank))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        head_rank = min(rank, cin)
        self.head = (
            LowRankLinear(cin, num_outputs, head_rank)
            if conv == "lowrank"
            else nn.Linear(cin, num_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(x))


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth),
            nn.ReLU(inplace=True),
            nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


class SmallDenseNet(nn.Module):
    """DenseNet-BC with three dense blocks and compressing transitions (growth 12 by default)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 1,
        growth: int = 12,
        layers: tuple[int, ...] = (4, 4, 4),
        width: float = 1.0,
    ) -> None:
        super().__init__()
        growth = max(4, int(round(growth * width)))
        c = 2 * growth
        mods: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)]
        for i, n in enumerate(layers):
            for _ in range(n):
                mods.append(_DenseLayer(c, growth))
                c += growth
            if i < len(layers) - 1:
                mods += [
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(c, c // 2, 1, bias=False),
                    nn.AvgPool2d(2),
                ]
                c //= 2
        mods += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*mods)
        self.head = nn.Linear(c, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU6(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU6(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.use_res else y


class SmallMobileNetV2(nn.Module):
    """MobileNetV2-style net: inverted residual bottlenecks (expansion 4), width multiplier."""

    SETTINGS = ((16, 1, 1), (24, 2, 2), (32, 2, 2), (64, 2, 2))  # (channels, blocks, first stride)

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 1,
        width: float = 1.0,
        expand: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        c = _ch(16, width)
        mods: list[nn.Module] = [
            nn.Conv2d(in_channels, c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU6(inplace=True),
        ]
        for ch, n, s in self.SETTINGS:
            cout = _ch(ch, width)
            for i in range(n):
                mods.append(_InvertedResidual(c, cout, s if i == 0 else 1, expand))
                c = cout
        last = _ch(128, width)
        mods += [nn.Conv2d(c, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*mods)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.short = shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class ResNet18(nn.Module):
    """ResNet-18 (11.2 M parameters at width 1), the MedMNIST v2 baseline; a 3x3 stem for small inputs."""

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 1,
        width: float = 1.0,
        small_input: bool = True,
    ) -> None:
        super().__init__()
        c = _ch(64, width)
        stem = (
            [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)]
            if small_input
            else [nn.Conv2d(in_channels, c, 7, 2, 3, bias=False)]
        )
        stem += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        if not small_input:
            stem.append(nn.MaxPool2d(3, 2, 1))
        mods: list[nn.Module] = stem
        for i, ch in enumerate((64, 128, 256, 512)):
            cout = _ch(ch, width)
            mods += [_BasicBlock(c, cout, 1 if i == 0 else 2), _BasicBlock(cout, cout, 1)]
            c = cout
        self.features = nn.Sequential(*mods)
        self.head = nn.Linear(c, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))
