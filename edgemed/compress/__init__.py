"""Model compression: pruning, low-rank factorization, distillation and binarization, each writing
a normal edgemed training output dir (model.pt + card.json) that `edgemed export` takes as is.

Importing this package does not import torch; `edgemed.compress.pipeline.run_compress` does.
"""

from __future__ import annotations

METHODS = ("prune", "channel-prune", "svd", "tucker", "distill", "binarize")
