"""Append-only audit trail: one JSON object per line, each holding the SHA-256 of the line before.

An entry records what happened to which instance (UIDs and file hashes, never patient names):
`received`, `duplicate`, `processed`, `refused`, `sent`, `failed`, `bundle_swapped`,
`bundle_refused`, `started`. `verify_log` recomputes the chain, so an edited, removed, inserted or
reordered line is found (its `prev` no longer matches the line above, or its own hash its body).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import InputError

GENESIS = "0" * 64
FORMAT = "edgemed-audit/1"


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def body_hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class AuditLog:
    """Thread-safe appender; continues the chain of an existing log after a restart."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._prev, self._seq = self._tail()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.sink = None  # called with (entry, line hash) after each write, in order

    def _tail(self) -> tuple[str, int]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return GENESIS, 0
        with open(self.path, "rb") as f:
            f.seek(max(0, self.path.stat().st_size - 65536))
            last = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            seq = int(json.loads(last)["seq"])
        except (ValueError, KeyError, TypeError):
            raise InputError(
                f"audit log {self.path} ends with a damaged entry; run `edgemed audit verify "
                f"{self.path}` and move the log aside before serving"
            ) from None
        return line_hash(last), seq

    def append(self, event: str, **fields: object) -> None:
        """Write one entry (one write + fsync, so a crash leaves whole lines only)."""
        with self._lock:
            entry = {"seq": self._seq + 1, "time": _now(), "event": event, **fields}
            entry["prev"] = self._prev
            entry["sha256"] = body_hash(entry)
            line = json.dumps(entry, sort_keys=True).encode()
            self._write_whole(line + b"\n")
            self._prev, self._seq = line_hash(line), entry["seq"]
            if self.sink is not None:
                self.sink(entry, self._prev)

    def head(self) -> tuple[int, str]:
        """(sequence number, line hash) of the last entry written."""
        with self._lock:
            return self._seq, self._prev

    def _write_whole(self, data: bytes) -> None:
        """Append `data` and fsync, or leave the file as it was (a full disk must not leave half
        a line, which would end the chain) and raise the OSError."""
        size = os.fstat(self._fd).st_size
        try:
            if os.write(self._fd, data) != len(data):
                raise OSError(28, "short write to the audit log (disk full?)")
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)
            raise

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


@dataclass(frozen=True)
class AuditReport:
    entries: int
    events: dict[str, int]
    line_hashes: tuple[str, ...] = ()


def verify_log(path: Path) -> AuditReport:
    """Walk the chain; the first broken link raises an InputError naming the line."""
    path = Path(path)
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise InputError(f"cannot read audit log {path} ({exc})") from None
    if lines and lines[-1] == b"":
        lines.pop()
    prev, events, hashes = GENESIS, {}, []
    for n, line in enumerate(lines, 1):
        entry = _parse(line, path, n)
        if entry.get("seq") != n:
            raise InputError(
                f"audit log {path} line {n}: sequence number {entry.get('seq')!r}, expected {n} "
                "(an entry was removed, inserted or reordered)"
            )
        if entry.get("prev") != prev:
            raise InputError(
                f"audit log {path} line {n}: does not chain to line {n - 1} (the line above was "
                "edited, or entries were removed or reordered)"
            )
        if entry.get("sha256") != body_hash(entry):
            raise InputError(
                f"audit log {path} line {n}: its content does not match its hash (edited)"
            )
        prev = line_hash(line)
        hashes.append(prev)
        events[entry["event"]] = events.get(entry["event"], 0) + 1
    if not lines:
        raise InputError(f"audit log {path} is empty; nothing to verify")
    return AuditReport(len(lines), events, tuple(hashes))


def _parse(line: bytes, path: Path, n: int) -> dict:
    try:
        entry = json.loads(line)
    except ValueError:
        raise InputError(f"audit log {path} line {n} is not JSON (damaged or edited)") from None
    if not isinstance(entry, dict) or "event" not in entry:
        raise InputError(f"audit log {path} line {n} is not an audit entry")
    return entry


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
