"""The FP32 torch reference as a Runner, so the harness times and runs it like any artifact."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgemed.backends import Runner
from edgemed.models.checkpoint import load_checkpoint


class TorchRunner(Runner):
    """Torch eager FP32 from an edgemed checkpoint, with an explicit intra-op thread count."""

    def __init__(self, checkpoint: Path, threads: int | None = None) -> None:
        self.checkpoint, self.threads = Path(checkpoint), threads
        self.module = None

    def activate(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
            torch.set_num_interop_threads(1)
        t0 = time.perf_counter()
        self.module, _, self.contract = load_checkpoint(self.checkpoint)
        self.module.eval()
        self.load_seconds = time.perf_counter() - t0
        self._torch = torch
        self._info = {
            "torch_version": torch.__version__,
            "intra_op_threads": torch.get_num_threads(),
            "mode": "eager, inference_mode, float32",
        }

    def infer(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.module(self._torch.from_numpy(x)).float().numpy()

    def deactivate(self) -> None:
        self.module = None
