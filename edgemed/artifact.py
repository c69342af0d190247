"""Artifacts: a directory of model file(s) + `manifest.json` (contract, runtime, precision, hashes,
versions, drift). Everything downstream (bench, bundle) reads the manifest, never re-derives it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgemed.contract import Contract
from edgemed.errors import InputError
from edgemed.fileio import read_json, sha256_file, write_json_atomic

MANIFEST = "manifest.json"
FORMAT = "edgemed-artifact/1"


def file_entries(root: Path, names: list[str] | tuple[str, ...]) -> dict[str, dict]:
    """{name: {sha256, bytes}} for files relative to `root`."""
    return {
        n: {"sha256": sha256_file(root / n), "bytes": (root / n).stat().st_size}
        for n in sorted(names)
    }


def write_manifest(root: Path, manifest: dict) -> dict:
    """Add the file table for every file under `root` (except the manifest) and write it."""
    names = [
        str(p.relative_to(root))
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    ]
    full = {"format": FORMAT, **manifest, "files": file_entries(root, names)}
    write_json_atomic(root / MANIFEST, full)
    return full


@dataclass(frozen=True)
class Artifact:
    """A loaded artifact directory."""

    path: Path
    manifest: dict
    contract: Contract

    @property
    def runtime(self) -> str:
        return self.manifest["runtime"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def model_file(self) -> Path:
        return self.path / self.manifest["model_file"]

    @property
    def label(self) -> str:
        return f"{self.manifest.get('target', self.runtime)}-{self.precision}"


def load_artifact(path: str | Path, verify: bool = True) -> Artifact:
    """Read an artifact dir; with `verify`, every listed file must exist with its recorded SHA-256."""
    root = Path(path)
    if not root.is_dir() or not (root / MANIFEST).is_file():
        raise InputError(
            f"{root} is not an edgemed artifact (no {MANIFEST}); create one with `edgemed export`"
        )
    manifest = read_json(root / MANIFEST, "artifact manifest")
    if manifest.get("format") != FORMAT or "model_file" not in manifest:
        raise InputError(f"{root / MANIFEST} is not an edgemed artifact manifest ({FORMAT})")
    if verify:
        for name, entry in manifest.get("files", {}).items():
            f = root / name
            if not f.is_file():
                raise InputError(f"artifact {root} is missing {name}; re-export it")
            if sha256_file(f) != entry["sha256"]:
                raise InputError(
                    f"artifact {root}: {name} does not match its manifest hash (modified?); re-export it"
                )
    return Artifact(root, manifest, Contract.from_dict(manifest["contract"]))
