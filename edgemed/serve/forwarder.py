"""Results out: C-STORE each SR to every destination, with retries and exponential backoff.

Each attempt opens its own association (a PACS restart between attempts is then harmless). After
the retry budget the SR is copied to dead/<destination>/ and counted; an operator re-sends it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from pydicom.dataset import Dataset

from edgemed.serve.config import Destination

log = logging.getLogger("edgemed.serve")
SUCCESS_OR_WARNING = {0x0000, 0xB000, 0xB006, 0xB007}


@dataclass(frozen=True)
class SendOutcome:
    ok: bool
    attempts: int
    detail: str


def dest_key(dest: Destination) -> str:
    """A file-name-safe key for a destination (its spool subfolder)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(dest))
    return safe


class Forwarder:
    """Sends SRs as `calling_aet`; `stop` cuts the backoff short on shutdown."""

    def __init__(self, calling_aet: str, retries: int, backoff_s: float) -> None:
        self.calling_aet = calling_aet
        self.retries = retries
        self.backoff_s = backoff_s
        self.stopping = threading.Event()

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
        """'' on success, else what went wrong."""
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(sr.SOPClassUID, sr.file_meta.TransferSyntaxUID)
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        if not assoc.is_established:
            return "association rejected or not reachable"
        try:
            status = assoc.send_c_store(sr)
        except (OSError, ValueError, RuntimeError) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            assoc.release()
        code = int(getattr(status, "Status", -1)) if status else -1
        if code in SUCCESS_OR_WARNING:
            return ""
        return f"status 0x{code:04X}" if code >= 0 else "no response (connection lost)"
