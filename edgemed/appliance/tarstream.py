"""A bounded, streaming reader of uncompressed tar archives (what bundles are).

Python's `tarfile` reads PAX and GNU long-name header bodies whole, whatever size they claim (a
1 GiB header is 1 GiB of RAM). This reader parses each 512-byte header with
`tarfile.TarInfo.frombuf`, reads extended-header bodies only up to a cap, and leaves member data
to the caller, who reads it in chunks only after deciding the member is wanted. Everything read
in file order is hashed, so the whole-archive SHA-256 needs no second pass.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import InputError

BLOCK = tarfile.BLOCKSIZE
CHUNK = 1 << 20
REFETCH = "do not use this bundle; get a fresh copy from the publisher"
EXTENDED = (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


@dataclass(frozen=True)
class Limits:
    """What a bundle may be: whole size, member count, size of one extended (PAX/GNU) header."""

    max_bundle_bytes: int = 1 << 30  # --max-bundle-mb 1024
    max_members: int = 1000  # --max-members
    max_header_bytes: int = 64 << 10


def padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class TarStream:
    """Sequential reader: `next()` gives the next member header, `data()` its bytes in chunks."""

    def __init__(self, raw, path: Path, limits: Limits) -> None:
        self.raw, self.path, self.limits = raw, path, limits
        self.whole = hashlib.sha256()
        self.count = 0
        self._pending = 0  # data bytes of the current member not yet consumed

    def _read(self, n: int, what: str) -> bytes:
        data = self.raw.read(n)
        if len(data) != n:
            raise InputError(
                f"bundle {self.path} is not a complete uncompressed tar archive ({what} is cut "
                f"short): it is truncated or damaged; {REFETCH}"
            )
        self.whole.update(data)
        return data

    def next(self) -> tarfile.TarInfo | None:
        """The next member's header with PAX/GNU long names applied, or None at the end marker."""
        self.skip()
        overrides: dict = {}
        while True:
            buf = self._read(BLOCK, "a header")
            if not buf.strip(b"\0"):
                self._check_end()
                return None
            info = self._parse(buf)
            if info.type not in EXTENDED:
                break
            if info.size > self.limits.max_header_bytes:
                raise InputError(
                    f"bundle {self.path}: an extended tar header claims {info.size} bytes (limit "
                    f"{self.limits.max_header_bytes}); {REFETCH}"
                )
            body = self._read(padded(info.size), "an extended header")[: info.size]
            overrides.update(self._extended(info.type, body))
        self.count += 1
        if self.count > self.limits.max_members:
            raise InputError(
                f"bundle {self.path} has more than {self.limits.max_members} members; if that "
                "is expected, pass --max-members N"
            )
        for key, value in overrides.items():
            setattr(info, key, value)
        self._pending = padded(info.size)
        info.offset_data = self.raw.tell()
        return info

    def _parse(self, buf: bytes) -> tarfile.TarInfo:
        try:
            return tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
        except tarfile.TarError as exc:
            raise InputError(
                f"bundle {self.path} is not a complete uncompressed tar archive ({exc}): it is "
                f"truncated or damaged; {REFETCH}"
            ) from None

    def _extended(self, kind: bytes, body: bytes) -> dict:
        if kind == tarfile.GNUTYPE_LONGNAME:
            return {"name": body.rstrip(b"\0").decode("utf-8", "surrogateescape")}
        if kind == tarfile.GNUTYPE_LONGLINK:
            return {"linkname": body.rstrip(b"\0").decode("utf-8", "surrogateescape")}
        out = {}
        for key, value in pax_records(body, self.path):
            if key.startswith("GNU.sparse"):
                raise InputError(f"bundle {self.path} holds a sparse member; {REFETCH}")
            if key == "path":
                out["name"] = value
            elif key == "size":
                out["size"] = _int(value, self.path)
        return out

    def data(self, info: tarfile.TarInfo) -> Iterator[bytes]:
        """The member's bytes in chunks of at most CHUNK (then its padding is skipped)."""
        left = info.size
        while left:
            block = self._read(min(CHUNK, left), f"member {info.name!r}")
            left -= len(block)
            self._pending -= len(block)
            yield block
        self.skip()

    def again(self, info: tarfile.TarInfo) -> Iterator[bytes]:
        """The member's bytes read a second time (after `data`), for copying what was verified."""
        resume = self.raw.tell()
        self.raw.seek(info.offset_data)
        left = info.size
        while left:
            block = self.raw.read(min(CHUNK, left))
            if not block:
                raise InputError(f"bundle {self.path} shrank while it was read; {REFETCH}")
            left -= len(block)
            yield block
        self.raw.seek(resume)

    def skip(self) -> None:
        """Consume what is left of the current member (data not read, then padding)."""
        while self._pending:
            n = min(CHUNK, self._pending)
            self._read(n, "a member")
            self._pending -= n

    def _check_end(self) -> None:
        """After the last member: a second zero block, then nothing but zero padding."""
        marker = self.raw.read(BLOCK)
        self.whole.update(marker)
        if len(marker) < BLOCK or marker.strip(b"\0"):
            raise InputError(
                f"bundle {self.path} is truncated (the tar end-of-archive marker is incomplete "
                f"at byte {self.raw.tell()}); {REFETCH}"
            )
        while block := self.raw.read(CHUNK):
            self.whole.update(block)
            if block.strip(b"\0"):
                raise InputError(
                    f"bundle {self.path} has data appended after the end of the archive; {REFETCH}"
                )


def pax_records(body: bytes, path: Path) -> Iterator[tuple[str, str]]:
    """`LEN key=value\\n` records of a PAX header body."""
    pos = 0
    while pos < len(body):
        space = body.find(b" ", pos)
        length = _int(body[pos:space].decode("ascii", "replace"), path) if space > pos else 0
        record = body[pos : pos + length]
        if length <= space - pos or not record.endswith(b"\n") or b"=" not in record:
            raise InputError(f"bundle {path} has a malformed PAX header; {REFETCH}")
        key, _, value = record[space - pos + 1 : -1].partition(b"=")
        yield key.decode("utf-8", "replace"), value.decode("utf-8", "surrogateescape")
        pos += length


def _int(text: str, path: Path) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"bundle {path} has a malformed tar header number; {REFETCH}") from None
    if value < 0:
        raise InputError(f"bundle {path} has a negative tar header number; {REFETCH}")
    return value
