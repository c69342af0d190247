"""The durable spool: an instance is on disk (fsync'd and renamed into `queue/`) before the sender
is told it was stored; what a worker finishes is recorded the same way, so a restart resumes.

    queue/<uid>.dcm        accepted, not finished (the source instance, as received)
    results/<uid>.json     the JSON result (the `edgemed predict` schema plus the SR's UIDs)
    sr/<uid>.dcm           the SR made for source <uid>
    sent/<dest>/<uid>      a destination acknowledged the SR
    dead/<dest>/<uid>.dcm  the SR a destination did not take within the retry budget
    refused/<uid>.json     why the instance got no result (contract, modality, unreadable)
A SOP Instance UID already in queue/, results/ or refused/ is a duplicate: acknowledged again and
never processed twice.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

from edgemed.errors import InputError

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
DIRS = ("tmp", "queue", "results", "sr", "sent", "dead", "refused")


def valid_uid(uid: str) -> bool:
    """A DICOM UID (digits and dots, at most 64 characters): safe as a file name."""
    return bool(uid) and len(uid) <= 64 and bool(UID_RE.match(uid))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, chunks: Iterable[bytes], tmp_dir: Path, durable: bool = True) -> None:
    """Write to a temp file, rename it into place; `durable`: fsync the file and the directory."""
    tmp = tmp_dir / f"{path.name}.{uuid.uuid4().hex}.part"
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)


class Spool:
    """Directory-backed work queue keyed by SOP Instance UID."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            for name in DIRS:
                (self.root / name).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InputError(
                f"cannot create spool {self.root} ({exc}); pass a writable --spool"
            ) from None
        for part in (self.root / "tmp").iterdir():  # half-written before a crash: never acked
            if part.is_file():
                part.unlink(missing_ok=True)
        self._lock = threading.Lock()

    def path(self, kind: str, uid: str, suffix: str = "") -> Path:
        return self.root / kind / f"{uid}{suffix}"

    def seen(self, uid: str) -> bool:
        return any(
            self.path(k, uid, s).exists()
            for k, s in (("queue", ".dcm"), ("results", ".json"), ("refused", ".json"))
        )

    def admit(self, uid: str, chunks: Iterable[bytes]) -> bool:
        """Store a received instance durably; False (nothing written) for a duplicate UID."""
        if not valid_uid(uid):
            raise InputError(f"SOP Instance UID {uid[:80]!r} is not a valid DICOM UID")
        if self.seen(uid):
            return False
        tmp = self.root / "tmp" / f"{uid}.{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            with self._lock:
                if self.seen(uid):
                    return False
                os.replace(tmp, self.path("queue", uid, ".dcm"))
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.root / "queue")
        return True

    def pending(self) -> list[str]:
        """UIDs accepted but not finished, oldest first (what a restart resumes)."""
        items = [(p.stat().st_mtime, p.stem) for p in (self.root / "queue").glob("*.dcm")]
        return [uid for _, uid in sorted(items)]

    def put(self, kind: str, uid: str, data: bytes, suffix: str = "", durable: bool = True) -> Path:
        """Write a record atomically. Records that can be made again (results, SRs, sent
        markers: deterministic, and the instance stays in queue/ until they exist) skip the fsyncs;
        a crash of the process never loses them (the page cache survives it), a power cut may,
        and then the instance is simply processed again, into the same SR."""
        target = self.path(kind, uid, suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, [data], self.root / "tmp", durable)
        return target

    def sent_marker(self, dest: str, uid: str) -> Path:
        return self.root / "sent" / dest / uid

    def finish(self, uid: str) -> None:
        """The instance is fully handled: drop it from the queue (if a power cut undoes the
        unlink, the instance is processed again into the same SR, which the PACS stores once)."""
        self.path("queue", uid, ".dcm").unlink(missing_ok=True)

    def depth(self) -> int:
        return sum(1 for _ in (self.root / "queue").glob("*.dcm"))
