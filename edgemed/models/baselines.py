"""Baselines the literature compares against, at scalable sizes: VGG-, Inception- and
ResNet-50-style (bottleneck) CNNs and a small Vision Transformer.

Every op exports to ONNX opset 17 and converts with OpenVINO and litert-torch: convolutions,
batch norm, ReLU, max/avg pooling, concat, LayerNorm, MatMul, Softmax, GELU (tanh form, which
every converter maps to one op). `width` scales channels; `depth` scales blocks per stage.
"""

from __future__ import annotations

import torch
from torch import nn

from edgemed.models.layers import shortcut


def _ch(c: int, width: float) -> int:
    return max(4, int(round(c * width / 4)) * 4)


def _n(blocks: int, depth: float) -> int:
    return max(1, int(round(blocks * depth)))


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


def _head(c: int, num_outputs: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, num_outputs)
    )


class VGGStyle(nn.Module):
    """VGG-16 layout (2, 2, 3, 3, 3 convs of 64..512 channels, max-pool after each stage), with
    batch norm and a global-pool head; `stages` drops the last stages for small inputs (4 stages
    halve 28 px four times)."""

    PLAN = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 1,
        width: float = 1.0,
        depth: float = 1.0,
        stages: int = 4,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        c = in_channels
        for ch, n in self.PLAN[: max(1, min(stages, len(self.PLAN)))]:
            for _ in range(_n(n, depth)):
                mods.append(_cbr(c, _ch(ch, width)))
                c = _ch(ch, width)
            mods.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*mods)
        self.head = _head(c, num_outputs, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Inception(nn.Module):
    """Four branches concatenated: 1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3 (a factorized 5x5);
    3x3 avg-pool -> 1x1 (Inception-v3's module A)."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.b1 = _cbr(cin, c, 1)
        self.b3 = nn.Sequential(_cbr(cin, c, 1), _cbr(c, c))
        self.b5 = nn.Sequential(_cbr(cin, c, 1), _cbr(c, c), _cbr(c, c))
        self.bp = nn.Sequential(nn.AvgPool2d(3, 1, 1), _cbr(cin, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


class _Reduction(nn.Module):
    """Stride-2 3x3 conv beside a stride-2 max-pool, concatenated (Inception-v3's reduction)."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.conv = _cbr(cin, c, 3, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], 1)


class InceptionStyle(nn.Module):
    """Inception-v3-style: a 3x3 stem, three stages of inception modules (2, 3, 2 x depth) with
    branch widths 16/32/48 x width x 4 branches, reductions between stages, global-pool head."""

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 1,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        c = _ch(32, width)
        mods: list[nn.Module] = [_cbr(in_channels, c)]
        for i, (branch, n) in enumerate(((16, 2), (32, 3), (48, 2))):
            b = _ch(branch, width)
            for _ in range(_n(n, depth)):
                mods.append(_Inception(c, b))
                c = 4 * b
            if i < 2:
                mods.append(_Reduction(c, c // 2))
                c += c // 2
        self.features = nn.Sequential(*mods)
        self.head = _head(c, num_outputs, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), projection shortcut when the shape changes."""

    def __init__(self, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = 4 * mid
        self.body = nn.Sequential(
            _cbr(cin, mid, 1),
            _cbr(mid, mid, 3, stride),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.short = shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class ResNet50Style(nn.Module):
    """ResNet-50: bottleneck blocks (3, 4, 6, 3 x depth) of 64..512 (x4 out) channels x width;
    23.5 M parameters at width 1; a 3x3 stem without max-pool for small inputs."""

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 1,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c = _ch(64, width)
        mods: list[nn.Module] = [_cbr(in_channels, c)]
        for i, (mid, n) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
            m = _ch(mid, width)
            for j in range(_n(n, depth)):
                mods.append(_Bottleneck(c, m, 2 if (j == 0 and i > 0) else 1))
                c = 4 * m
        self.features = nn.Sequential(*mods)
        self.head = _head(c, num_outputs, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Attention(nn.Module):
    """Multi-head self-attention written out (Linear, MatMul, Softmax) so every converter sees
    plain ops."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class _EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(mlp_ratio * dim, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SmallViT(nn.Module):
    """A Vision Transformer: conv patch embedding (`patch` px), learned 2-D position embedding
    (up to `max_grid` patches a side, the top-left part used for smaller inputs), pre-norm
    encoder blocks (4 x depth, dim 64 x width, 4 heads), mean-pooled tokens, linear head."""

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 1,
        width: float = 1.0,
        depth: float = 1.0,
        patch: int = 4,
        heads: int = 4,
        mlp_ratio: int = 2,
        max_grid: int = 32,
    ) -> None:
        super().__init__()
        dim = max(heads, int(round(64 * width / heads)) * heads)
        self.embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, dim, max_grid, max_grid))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(
            *[_EncoderBlock(dim, heads, mlp_ratio) for _ in range(_n(4, depth))]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = x + self.pos[:, :, : x.shape[2], : x.shape[3]]
        x = self.blocks(x.flatten(2).transpose(1, 2))
        return self.head(self.norm(x).mean(dim=1))
