"""Model compression: pruning, low-rank factorization, distillation and binarization, each writing
a normal edgemed training output dir (model.pt + card.json) that `edgemed export` takes as is.

Adding a method = one module declaring a `Method` (edgemed.compress.method) + one line here.
Importing this package does not import torch; `edgemed.compress.pipeline.run_compress` does.
"""

from __future__ import annotations

import importlib

from edgemed.errors import InputError

METHODS: dict[str, str] = {
    "prune": "edgemed.compress.prune:PRUNE",
    "channel-prune": "edgemed.compress.prune:CHANNEL_PRUNE",
    "svd": "edgemed.compress.lowrank:SVD",
    "tucker": "edgemed.compress.lowrank:TUCKER",
    "distill": "edgemed.compress.distill:DISTILL",
    "binarize": "edgemed.compress.binarize:BINARIZE",
}


def get_method(name: str):
    """The `Method` registered under `name` (its module is imported only now)."""

    if name not in METHODS:
        raise InputError(f"unknown compression method {name!r}; choose one of {', '.join(METHODS)}")
    module_name, _, attr = METHODS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)
