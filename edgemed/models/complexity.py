"""Parameter and MAC counts (torch's FLOP counter; one MAC = two FLOPs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int
    input_shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"params": self.params, "macs": self.macs, "input_shape": list(self.input_shape)}


def count_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def measure_complexity(module, input_shape: tuple[int, ...]) -> Complexity:
    """Parameters and multiply-accumulates of one forward pass at `input_shape` (batch 1)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(input_shape))
    module.train(was_training)
    return Complexity(count_params(module), int(counter.get_total_flops() // 2), tuple(input_shape))
