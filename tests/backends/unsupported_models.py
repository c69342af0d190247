"""Model factories with an op some runtimes cannot convert (for the bad-input tests).

`torch.linalg.det` exports to ONNX (Det) and runs in ONNX Runtime, but OpenVINO's ONNX frontend
has no conversion rule for Det and litert-torch has no lowering for aten._linalg_det.
"""

from __future__ import annotations

import torch
from torch import nn


class DetNet(nn.Module):
    """A conv, then the determinant of a 4x4 patch of its first channel as the logit."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = self.conv(x)[:, 0, :4, :4] + 4 * torch.eye(4)
        # centred and scaled so that the logit is neither saturated nor constant (output sanity)
        return ((torch.linalg.det(patch) - 256.0) / 64.0).reshape(-1, 1)


def det_net() -> nn.Module:
    return DetNet().eval()
