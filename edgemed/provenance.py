"""Provenance: edgemed and runtime versions (read from package metadata; no runtime is imported)."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from importlib import metadata

from edgemed import __version__
from edgemed.runtimes import all_packages

# What every artifact's numbers depend on besides the backends' own runtimes (from the registry).
BASE_PACKAGES = ("numpy", "onnx", "torch", "onnxconverter-common", "pydicom", "cryptography")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def runtime_versions() -> dict[str, str]:
    """Installed versions of the packages an artifact's numbers depend on."""
    names = BASE_PACKAGES + all_packages()
    return {n: v for n in dict.fromkeys(names) if (v := package_version(n))}


def provenance(inputs: dict[str, str] | None = None, config: dict | None = None) -> dict:
    """The provenance block every artifact records: versions, input hashes, resolved config."""

    return {
        "edgemed": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runtimes": runtime_versions(),
        "inputs": dict(inputs or {}),
        "config": dict(config or {}),
    }
