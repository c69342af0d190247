"""Results out: C-STORE each SR to every destination, with retries and exponential backoff.

Each worker thread keeps one association per destination open and reuses it (setting one up and
releasing it costs more than storing a small SR); an association idle for IDLE_S, or found dead
(the PACS closed it), is replaced by a fresh one without counting as a failed attempt. After the
retry budget the SR is copied to dead/<destination>/ and counted; an operator re-sends it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from pydicom.dataset import Dataset

from edgemed.serve.config import Destination
from edgemed.serve.dicom_scp import no_delay

log = logging.getLogger("edgemed.serve")
SUCCESS_OR_WARNING = {0x0000, 0xB000, 0xB006, 0xB007}
IDLE_S = 20.0  # below the usual PACS idle timeout (Orthanc DicomScpTimeout: 30 s)


@dataclass(frozen=True)
class SendOutcome:
    ok: bool
    attempts: int
    detail: str


def dest_key(dest: Destination) -> str:
    """A file-name-safe key for a destination (its spool subfolder)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(dest))


class Forwarder:
    """Sends SRs as `calling_aet`; `stopping` cuts the backoff short on shutdown."""

    def __init__(self, calling_aet: str, retries: int, backoff_s: float, tls=None) -> None:
        self.calling_aet = calling_aet
        self.tls = tls  # serve.tls.Contexts with a client context when forward-tls is on
        self.retries = retries
        self.backoff_s = backoff_s
        self.stopping = threading.Event()
        self._local = threading.local()
        self._open: set = set()
        self._lock = threading.Lock()

    def send(self, sr: Dataset, dest: Destination) -> SendOutcome:
        detail = ""
        for attempt in range(1, self.retries + 2):
            detail = self._attempt(sr, dest)
            if not detail:
                return SendOutcome(True, attempt, "stored")
            log.warning("C-STORE to %s failed (attempt %d): %s", dest, attempt, detail)
            if attempt <= self.retries and self.stopping.wait(self.backoff_s * 2 ** (attempt - 1)):
                break
        return SendOutcome(False, attempt, detail)

    def _attempt(self, sr: Dataset, dest: Destination) -> str:
        """'' on success, else what went wrong. A reused association that turns out dead gets
        one immediate retry on a fresh one."""
        for _ in range(2):
            assoc, reused = self._association(sr, dest)
            if assoc is None:
                return "association rejected or not reachable"
            try:
                status = assoc.send_c_store(sr)
            except (OSError, ValueError, RuntimeError) as exc:
                status, detail = None, f"{type(exc).__name__}: {exc}"
            else:
                detail = "no response (connection lost)"
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in SUCCESS_OR_WARNING:
                self._cache()[dest] = (assoc, time.monotonic())
                return ""
            self._drop(dest, assoc)
            if code >= 0:
                return f"status 0x{code:04X}"
            if not reused:
                return detail
        return detail

    def _cache(self) -> dict:
        if not hasattr(self._local, "assocs"):
            self._local.assocs = {}
        return self._local.assocs

    def _association(self, sr: Dataset, dest: Destination):
        """(association, reused) for this thread and destination; (None, False) if refused."""
        from pynetdicom import AE, evt

        cached = self._cache().get(dest)
        if cached and cached[0].is_established and time.monotonic() - cached[1] < IDLE_S:
            return cached[0], True
        if cached:
            self._drop(dest, cached[0])
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(sr.SOPClassUID, sr.file_meta.TransferSyntaxUID)
        handlers = [(evt.EVT_CONN_OPEN, no_delay)]
        client = self.tls.client if self.tls is not None else None
        assoc = ae.associate(
            dest.host,
            dest.port,
            ae_title=dest.ae_title,
            evt_handlers=handlers,
            tls_args=(client, dest.host) if client is not None else None,
        )
        if not assoc.is_established:
            return None, False
        with self._lock:
            self._open.add(assoc)
        return assoc, False

    def _drop(self, dest: Destination, assoc) -> None:
        self._cache().pop(dest, None)
        with self._lock:
            self._open.discard(assoc)
        if assoc.is_established:
            assoc.abort()

    def close(self) -> None:
        """Release every open association (shutdown)."""
        with self._lock:
            assocs, self._open = list(self._open), set()
        for assoc in assocs:
            if assoc.is_established:
                assoc.release()
