"""Input-space statistics of a preprocessed uint8 image (numpy only, ~20 us at 28 px).

What they catch: other grey-level distributions (inverted, windowed differently, saturated,
constant, noise), another layout of bright and dark regions (other anatomy, rotation, documents)
and other texture (stripes). What they cannot: an image of the same look from another population.
"""

from __future__ import annotations

import numpy as np

HIST_BINS = 16
GRID = 4
NAMES = (
    *(f"hist_{i}" for i in range(HIST_BINS)),
    "mean",
    "std",
    "dark_fraction",
    "bright_fraction",
    *(f"block_{r}_{c}" for r in range(GRID) for c in range(GRID)),
    "edge_x",
    "edge_y",
)


def input_statistics(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) or (H, W, C) images -> float64 (N, len(NAMES)) statistics."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    grey = x.astype(np.float64).mean(axis=3) / 255.0  # luminance-free: colour models average
    n, h, w = grey.shape
    flat = grey.reshape(n, -1)
    bins = np.minimum((flat * HIST_BINS).astype(np.int64), HIST_BINS - 1)
    hist = np.stack([np.bincount(b, minlength=HIST_BINS) for b in bins]) / flat.shape[1]
    hs, ws = h // GRID * GRID, w // GRID * GRID
    blocks = grey[:, :hs, :ws].reshape(n, GRID, hs // GRID, GRID, ws // GRID).mean(axis=(2, 4))
    return np.column_stack(
        [
            hist,
            flat.mean(axis=1),
            flat.std(axis=1),
            (flat <= 2 / 255).mean(axis=1),
            (flat >= 253 / 255).mean(axis=1),
            blocks.reshape(n, -1),
            np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2)),
            np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2)),
        ]
    )
