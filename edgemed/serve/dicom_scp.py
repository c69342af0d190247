"""DICOM in: a C-STORE SCP (pynetdicom). The instance is in the spool - fsync'd and renamed - before
the success status goes back; an unknown calling AE title is rejected at association.

Memory is bounded: pynetdicom writes each received dataset to a temporary file as its PDUs arrive
(`STORE_RECV_CHUNKED_DATASET`; in $TMPDIR, not on the spool's disk, so a full spool is still
answered 0xA700; the systemd unit's PrivateTmp clears what a kill -9 mid-transfer leaves), PDUs are at most MAX_PDU bytes, and an association that sends more
than max-upload-mb (+ one PDU) for one C-STORE is aborted while it sends (`SizeGuard`). Timeouts:
`dicom-timeout` is the ARTIM timer (a connection that never asks for an association), the ACSE and
DIMSE timeouts and the network idle timeout.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from edgemed.errors import InputError
from edgemed.serve.spool import valid_uid
from edgemed.serve.tls import LazyHandshake, handshake

log = logging.getLogger("edgemed.serve")

OUT_OF_RESOURCES = 0xA700
INVALID_SOP_INSTANCE = 0x0117
MAX_PDU = 65536


def no_delay(event) -> None:
    """EVT_CONN_OPEN: TCP_NODELAY, so a small PDU (a C-STORE response) is not held back ~40 ms
    by Nagle's algorithm waiting for the peer's delayed ACK."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The received Part 10 file (pynetdicom wrote preamble, file meta and dataset) in pieces."""
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def check_dataset_uid(path: Path, uid: str) -> None:
    """The dataset's SOP Instance UID must be the request's and a valid UID (a sender may cut an
    overlong UID in the command but not in the dataset): refused as a failed C-STORE."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise InputError(f"C-STORE dataset is not readable DICOM ({exc})") from None
    found = str(ds.get("SOPInstanceUID", "") or "")
    if found != uid or not valid_uid(found):
        raise InputError(
            f"the dataset's SOP Instance UID {found[:80]!r} ({len(found)} characters) is not the "
            f"request's {uid[:80]!r} or not a valid UID (digits and dots, at most 64 characters)"
        )


class SizeGuard:
    """Aborts an association whose current C-STORE has sent more than `max_bytes`, while it
    sends (EVT_DATA_RECV counts the PDU bytes; each completed C-STORE starts a new count)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes + MAX_PDU  # the command set and PDU headers ride along
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def on_data(self, event) -> None:
        key = id(event.assoc)
        with self._lock:
            n = self._counts.get(key, 0) + len(event.data)
            self._counts[key] = n
        if n > self.max_bytes and n - len(event.data) <= self.max_bytes:
            log.warning(
                "association from %s aborted: a C-STORE of more than max-upload-mb",
                str(event.assoc.requestor.ae_title).strip(),
            )
            # Close the connection under the association: an A-ABORT would queue behind the PDUs
            # the sender is still pushing (it waits out its own timeout); a reset stops it now.
            sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RDWR)

    def stored(self, assoc) -> None:
        with self._lock:
            self._counts[id(assoc)] = 0

    def on_close(self, event) -> None:
        with self._lock:
            self._counts.pop(id(event.assoc), None)
        # An aborted transfer leaves pynetdicom's temporary file behind: remove it.
        message = getattr(getattr(event.assoc, "dimse", None), "message", None)
        part = getattr(message, "_data_set_file", None)
        if part is not None:
            part.close()
            Path(part.name).unlink(missing_ok=True)


def overlong_uids_reach_the_handler(validate_ui: Callable) -> Callable:
    """pynetdicom's UI validator, except that a UID over 64 characters passes: pynetdicom would
    raise while decoding the C-STORE request, abort the association and log a traceback; this way
    the request reaches `on_store`, which answers 0x0117 (invalid SOP instance) with one line."""
    if getattr(validate_ui, "edgemed_lenient", False):
        return validate_ui

    def validate(value: str) -> tuple[bool, str]:
        ok, reason = validate_ui(value)
        if not ok and len(value) > 64 and validate_ui(value[:64])[0]:
            return True, ""
        return ok, reason

    validate.edgemed_lenient = True
    return validate


def start_scp(
    ae_title: str,
    bind: str,
    port: int,
    allowed_aets: tuple[str, ...],
    admit: Callable[[str, object, str], bool],
    limits,
    tls=None,
):
    """Listen (non-blocking); `admit(uid, chunks, calling_aet)` spools one instance; `limits`
    is the ServeConfig (max_upload_mb, dicom_timeout, max_associations)."""
    from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
    from pynetdicom.sop_class import Verification

    _config.STORE_RECV_CHUNKED_DATASET = True  # never a whole dataset in memory
    _config.VALIDATORS["UI"] = overlong_uids_reach_the_handler(_config.VALIDATORS["UI"])
    max_bytes = limits.max_upload_mb * 1024 * 1024
    ae = AE(ae_title=ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.maximum_associations = limits.max_associations
    ae.maximum_pdu_size = MAX_PDU
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = limits.dicom_timeout
    # An empty list accepts any caller; the CLI refuses to start without allowed-aets.
    ae.require_calling_aet = list(allowed_aets)
    guard = SizeGuard(max_bytes)

    def on_store(event) -> int:
        guard.stored(event.assoc)
        uid = str(event.request.AffectedSOPInstanceUID or "")
        calling = str(event.assoc.requestor.ae_title).strip()
        size = event.dataset_path.stat().st_size
        if size > max_bytes:
            log.warning("C-STORE from %s refused: %d bytes > max-upload-mb", calling, size)
            return OUT_OF_RESOURCES
        try:
            check_dataset_uid(event.dataset_path, uid)
            admit(uid, file_chunks(event.dataset_path), calling)
        except OSError as exc:
            log.error("spool write failed for %s: %s", uid[:64], exc)
            return OUT_OF_RESOURCES
        except InputError as exc:  # an invalid UID from the network
            log.warning("C-STORE from %s refused: %s", calling, " ".join(str(exc).split()))
            return INVALID_SOP_INSTANCE
        return 0x0000

    def on_open(event) -> None:
        no_delay(event)
        sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        if tls is not None and sock is not None:
            handshake(tls, sock, limits.dicom_timeout, str(event.address[0]))

    handlers = [
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_CONN_OPEN, on_open),
        (evt.EVT_DATA_RECV, guard.on_data),
        (evt.EVT_CONN_CLOSE, guard.on_close),
    ]
    context = LazyHandshake(tls) if tls is not None else None
    server = ae.start_server((bind, port), block=False, evt_handlers=handlers, ssl_context=context)
    return ae, server
