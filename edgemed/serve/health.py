"""Whether the spool can take work: a write error (ENOSPC, EIO, EROFS, ...) anywhere in the
service marks it failing, with the reason; while it fails, intake is refused (C-STORE 0xA700,
STOW-RS 503), /readyz answers 503 with the reason, and a probe writes a small durable file every
PROBE_S seconds until one succeeds. Workers retry the instance in hand with capped backoff."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from edgemed.serve.spool import write_atomic

log = logging.getLogger("edgemed.serve")
PROBE_S = 1.0
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 10.0


def retry_delay(attempt: int) -> float:
    """Seconds before retry `attempt` (0-based) of a failed spool write: doubling, capped."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt)


class SpoolHealth:
    """The spool's write state; `failed` and `recovered` are called by whoever wrote."""

    def __init__(self, tmp_dir: Path, on_change=None) -> None:
        self.tmp_dir = Path(tmp_dir)
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._stop = threading.Event()
        self._probe: threading.Thread | None = None
        self._on_change = on_change or (lambda failing, reason: None)

    @property
    def reason(self) -> str | None:
        """None while the spool accepts writes; else what the last write failed with."""
        return self._reason

    def failed(self, what: str, exc: OSError) -> None:
        reason = f"spool write failed ({what}): {exc.strerror or exc}"
        with self._lock:
            first = self._reason is None
            self._reason = reason
            if first and not self._stop.is_set():
                self._probe = threading.Thread(
                    target=self._run_probe, name="edgemed-spool-probe", daemon=True
                )
                self._probe.start()
        if first:
            log.error("%s; refusing new instances until the spool accepts writes again", reason)
            self._on_change(True, reason)

    def recovered(self) -> None:
        with self._lock:
            was, self._reason = self._reason, None
        if was is not None:
            log.warning("spool accepts writes again (after: %s)", was)
            self._on_change(False, was)

    def _run_probe(self) -> None:
        probe = self.tmp_dir / "probe"
        while self._reason is not None and not self._stop.wait(PROBE_S):
            try:
                write_atomic(probe, [b"\0" * 4096], self.tmp_dir, durable=True)
                probe.unlink(missing_ok=True)
            except OSError:
                continue
            self.recovered()

    def close(self) -> None:
        self._stop.set()
        if self._probe is not None:
            self._probe.join(timeout=5)


class SpoolFailing(OSError):
    """Intake refused without trying: the spool is known not to accept writes right now."""
