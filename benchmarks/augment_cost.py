"""Augmentation cost per training epoch, batched torch ops (edgemed.pipeline.augment) vs MONAI's
array transforms applied per image (MONAI's RandAffine/RandAdjustContrast/RandShiftIntensity take
one channel-first image), side by side, 1 thread, CPU seconds. Default: the chest X-ray subset's
epoch (2428 images, 28 px, batch 64) and brain MRI's (160 images at 128 px, batch 64).

    python benchmarks/augment_cost.py
"""

from __future__ import annotations

import math
import os
import time

import torch

from edgemed.pipeline.augment import augment_batch, augment_settings


def torch_epoch(x, batch: int, level: str) -> float:
    s, gen = augment_settings(level), torch.Generator().manual_seed(0)
    mean, std = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    t = time.process_time()
    for i in range(0, len(x), batch):
        augment_batch(x[i : i + batch], s, mean, std, gen)
    return time.process_time() - t


def monai_epoch(x, level: str) -> float:
    from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandShiftIntensity

    s = augment_settings(level)
    tf = Compose(
        [
            RandAffine(
                prob=1.0,
                rotate_range=s.rotate * math.pi / 180,
                translate_range=(s.translate * x.shape[-2], s.translate * x.shape[-1]),
                scale_range=s.scale - 1,
                padding_mode="border",
            ),
            RandShiftIntensity(offsets=s.intensity, prob=1.0),
            RandAdjustContrast(gamma=(math.exp(-s.intensity), math.exp(s.intensity)), prob=1.0),
        ]
    )
    tf.set_random_state(0)
    t = time.process_time()
    for img in x:
        tf(img)
    return time.process_time() - t


def main() -> None:
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()}")
    print("| images | level | batched torch CPU s/epoch | MONAI per image CPU s/epoch | ratio |")
    print("|---|---|---|---|---|")
    for n, size in ((2428, 28), (160, 128)):
        x = torch.rand(n, 1, size, size)
        for level in ("light", "strong"):
            a, b = torch_epoch(x, 64, level), monai_epoch(x, level)
            print(f"| {n} x {size} px | {level} | {a:.3f} | {b:.3f} | {b / a:.1f}x |")


if __name__ == "__main__":
    main()
