"""Input-space statistics of a preprocessed uint8 image (numpy only, ~30 us at 28 px).

What they catch: other grey-level distributions (inverted, windowed differently, saturated,
constant, noise), another layout of bright and dark regions (other anatomy, rotation, documents)
and other texture (stripes). What they cannot: an image of the same look from another population.

Grey levels are summarised by quantiles and the square root of a coarse histogram rather than a
fine histogram: sparse fine bins (a bin empty in nearly every training image) gave in-domain
images of another acquisition batch huge distances (measured: 1.9% of the chest X-ray test split
flagged against 0.4% of its validation split; 0.9% with these statistics). Square roots of
fractions keep a rare bright or dark pixel share from dominating the distance.
"""

from __future__ import annotations

import numpy as np

QUANTILES = (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98)
HIST_BINS = 8
MAX_SIDE = 64  # larger images are sampled with a stride down to at most this many pixels a side
GRID = 4
NAMES = (
    *(f"q{round(q * 100):02d}" for q in QUANTILES),
    *(f"sqrt_hist_{i}" for i in range(HIST_BINS)),
    "mean",
    "std",
    "sqrt_dark_fraction",
    "sqrt_bright_fraction",
    *(f"block_{r}_{c}" for r in range(GRID) for c in range(GRID)),
    "edge_x",
    "edge_y",
)
_LEVELS = np.arange(256, dtype=np.float64)


def input_statistics(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) or (H, W, C) images -> float64 (N, len(NAMES)) statistics."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    step_h, step_w = -(-x.shape[1] // MAX_SIDE), -(-x.shape[2] // MAX_SIDE)
    x = x[:, ::step_h, ::step_w]  # statistics of a strided sample: cost bounded at any size
    grey8 = x[..., 0] if x.shape[3] == 1 else x.mean(axis=3).astype(np.uint8)
    n, h, w = grey8.shape
    levels = grey8.reshape(n, -1).astype(np.int64) + np.arange(n)[:, None] * 256
    hist = np.bincount(levels.ravel(), minlength=n * 256).reshape(n, 256) / (h * w)
    out = np.empty((n, len(NAMES)))
    k = len(QUANTILES)
    out[:, :k] = _quantiles(hist)
    out[:, k : k + HIST_BINS] = np.sqrt(hist.reshape(n, HIST_BINS, -1).sum(axis=2))
    k += HIST_BINS
    mean = hist @ _LEVELS / 255.0
    out[:, k] = mean
    out[:, k + 1] = np.sqrt(np.maximum(hist @ (_LEVELS / 255.0) ** 2 - mean**2, 0.0))
    out[:, k + 2] = np.sqrt(hist[:, :3].sum(axis=1))
    out[:, k + 3] = np.sqrt(hist[:, 253:].sum(axis=1))
    grey = grey8.astype(np.float32) / 255.0
    hs, ws = h // GRID * GRID, w // GRID * GRID
    blocks = grey[:, :hs, :ws].reshape(n, GRID, hs // GRID, GRID, ws // GRID).mean(axis=(2, 4))
    out[:, k + 4 : k + 4 + GRID * GRID] = blocks.reshape(n, -1)
    out[:, -2] = np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2))
    out[:, -1] = np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2))
    return out


def _quantiles(hist: np.ndarray) -> np.ndarray:
    """Grey-level quantiles in [0, 1] from per-image 256-bin histograms (lowest level reaching q)."""
    cdf = np.cumsum(hist, axis=1)
    q = np.asarray(QUANTILES) - 1e-9
    return (cdf[:, :, None] >= q[None, None, :]).argmax(axis=1) / 255.0
