"""The audit chain's head, signed with the appliance's key (`audit-key`), kept beside the log as
LOG.head and replaced atomically every `audit-sign-interval` seconds and at shutdown.

What `edgemed audit verify LOG --pubkey KEY.pub` can then detect, with the box's copy alone:
- an entry edited, removed, inserted or reordered (the hash chain), also with every later hash
  recomputed (the signed head no longer matches the chain at its sequence number);
- entries removed from the end (the log is shorter than the signed head says);
- a head not signed by this key.
What it cannot detect without a copy kept off the box (the syslog collector's): the entries
written after the last signed head (at most one interval) being removed or edited, and a log and
head file both rolled back together to an earlier signed state.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import InputError
from edgemed.fileio import write_bytes_atomic
from edgemed.signing import fingerprint, load_public_key, signature_is_valid

FORMAT = "edgemed-audit-head/1"


def head_path(log_path: Path) -> Path:
    return Path(f"{log_path}.head")


def _signed_bytes(doc: dict) -> bytes:
    body = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(body, sort_keys=True).encode()


class HeadSigner:
    """Signs (seq, line hash) of the chain's last entry at intervals, in a background thread."""

    def __init__(self, log, key, interval_s: float) -> None:

        self._log, self._key = log, key
        self._key_id = fingerprint(self._key.public_key())
        self._interval = interval_s
        self._signed_seq = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgemed-audit-head", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sign_now()

    def sign_now(self) -> None:
        """Write LOG.head for the chain as it is now (nothing when unchanged); a write error is
        logged by the caller's spool-health path, not raised into the thread."""

        seq, line_hash = self._log.head()
        if seq == self._signed_seq or seq == 0:
            return
        doc = {
            "format": FORMAT,
            "log": self._log.path.name,
            "seq": seq,
            "sha256": line_hash,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "key_id": self._key_id,
        }
        doc["signature"] = self._key.sign(_signed_bytes(doc)).hex()
        try:
            write_bytes_atomic(head_path(self._log.path), json.dumps(doc, indent=1).encode())
        except OSError as exc:
            import logging

            logging.getLogger("edgemed.serve").error("audit head not written: %s", exc)
            return
        self._signed_seq = seq

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sign_now()


@dataclass(frozen=True)
class HeadCheck:
    seq: int
    time: str
    unsigned_after: int


def check_head(log_path: Path, pubkey: Path, line_hashes: list[str]) -> HeadCheck:
    """Check LOG.head against the chain (`line_hashes[i]` = hash of entry i+1); InputError names
    what was found (forged head, truncation, rewritten entries)."""

    key = load_public_key(pubkey)
    path = head_path(log_path)
    try:
        doc = json.loads(path.read_bytes()[:65536])
        seq, sig = int(doc["seq"]), bytes.fromhex(doc["signature"])
    except FileNotFoundError:
        raise InputError(
            f"no signed head {path}: the service ran without audit-key, or the file was removed"
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(
            f"signed head {path} is damaged (not the JSON the service writes)"
        ) from None
    if doc.get("key_id") != fingerprint(key) or not signature_is_valid(
        key, sig, _signed_bytes(doc)
    ):
        raise InputError(f"signed head {path} is not signed by {pubkey} (forged or another key)")
    if seq > len(line_hashes):
        raise InputError(
            f"audit log {log_path} has {len(line_hashes)} entries but its head was signed at "
            f"entry {seq} ({doc.get('time')}): entries were removed from the end"
        )
    if line_hashes[seq - 1] != doc.get("sha256"):
        raise InputError(
            f"audit log {log_path} entry {seq} is not the one signed at {doc.get('time')}: "
            "entries were edited and the chain's hashes recomputed"
        )
    return HeadCheck(seq, str(doc.get("time")), len(line_hashes) - seq)
