"""Directories and files as bytes between nodes: a tar in memory plus its SHA-256, checked where
it arrives (a node unpacking an artifact, the driver unpacking a trained model)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import EdgemedError


@dataclass(frozen=True)
class Blob:
    """Bytes in transit and the SHA-256 they had when they were sent."""

    data: bytes
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> Blob:
        return cls(data, hashlib.sha256(data).hexdigest())

    def checked(self, what: str) -> bytes:
        """The bytes, once their SHA-256 matches the sender's; else an error naming them."""
        got = hashlib.sha256(self.data).hexdigest()
        if got != self.sha256:
            raise EdgemedError(
                f"{what} arrived damaged (SHA-256 {got[:12]} != sent {self.sha256[:12]}); re-run"
            )
        return self.data


def pack_dirs(root: Path, names: list[str]) -> Blob:
    """The directories `names` under `root` as one tar (paths kept relative to root)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            tar.add(root / name, arcname=name)
    return Blob.of(buf.getvalue())


def unpack(blob: Blob, dest: Path, what: str) -> None:
    """Check and extract a blob from pack_dirs under dest (plain files and folders only)."""
    data = blob.checked(what)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(dest, filter="data")
