"""Models that overflow FP16 (largest finite value 65504) on real chest X-ray images.

`activation_overflow_net`: every weight is small (|w| <= 100), but one linear layer sums 3136
positive features into activations of ~1e5 and more, which a later layer scales back down: FP32
is fine, an FP16 activation there becomes Inf. `initializer_overflow_net`: a constant of 1e5 (not
representable in FP16) multiplies the features and 1e-5 scales them back. Weights are fixed
(seeded), so the models are the same on every run.
"""

from __future__ import annotations

import torch
from torch import nn

CONTRACT = {"input_size": [28, 28], "channels": 1, "class_names": ["normal", "pneumonia"]}


class ActivationOverflowNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.big = nn.Linear(4 * 28 * 28, 4)
        self.head = nn.Linear(8, 1)
        with torch.no_grad():
            self.conv.weight.uniform_(0.0, 0.5)
            self.conv.bias.fill_(0.5)
            self.big.weight.fill_(200.0)
            self.big.bias.zero_()
            self.head.weight.fill_(0.25)
            self.head.bias.fill_(-10.37)  # the median on the validation split: logits straddle 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).flatten(1)
        z = self.big(h)
        return self.head(torch.cat([z, z], dim=1) * 1e-5)


class InitializerOverflowNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 1)
        with torch.no_grad():
            self.head.weight.fill_(5.0)
            self.head.bias.fill_(-1.07)  # the median on the validation split: logits straddle 0
        self.register_buffer("huge", torch.tensor(1e5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).mean(dim=(2, 3))
        return self.head((h * self.huge) * 1e-5)


def activation_overflow_net() -> nn.Module:
    return ActivationOverflowNet().eval()


def initializer_overflow_net() -> nn.Module:
    return InitializerOverflowNet().eval()
