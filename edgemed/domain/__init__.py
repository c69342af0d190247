"""The domain guard: is an image inside the domain the model's evidence covers?

Two kinds of score, combined into one verdict (`guard.DomainGuard`):
- feature space: class-conditional Mahalanobis distance (shared Ledoit-Wolf shrinkage covariance)
  on the penultimate features the artifact itself emits as a second output (`features.py`);
- input space: Mahalanobis distance on cheap statistics of the preprocessed image (grey-level
  quantiles and coarse histogram, mean/spread, saturation, a 4x4 layout, edge energy; `stats.py`).
The reference (`reference.py`) is fitted on the training split with the converted artifact, its
thresholds set on the validation split for a stated false-flag rate, and stored as plain JSON and
an npz of float arrays (read with allow_pickle=False): nothing in it is executable. The appliance
side (`guard`, `reference`, `stats`, `monitor`) needs numpy only.
"""

from __future__ import annotations

REFERENCE_JSON = "domain.json"
REFERENCE_NPZ = "domain.npz"
FORMAT = "edgemed-domain/2"
POLICIES = ("flag", "refuse")
DEFAULT_FPR = 0.01
