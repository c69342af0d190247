"""DICOM in: a C-STORE SCP (pynetdicom). The instance is in the spool - fsync'd and renamed - before
the success status goes back; an unknown calling AE title is rejected at association."""

from __future__ import annotations

import logging
from collections.abc import Callable
from io import BytesIO

log = logging.getLogger("edgemed.serve")

OUT_OF_RESOURCES = 0xA700
INVALID_SOP_INSTANCE = 0x0117


def no_delay(event) -> None:
    """EVT_CONN_OPEN: TCP_NODELAY, so a small PDU (a C-STORE response) is not held back ~40 ms
    by Nagle's algorithm waiting for the peer's delayed ACK."""
    import socket

    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def part10_chunks(event) -> list[bytes]:
    """The received dataset as a Part 10 file: preamble, file meta, the dataset bytes as sent."""
    from pydicom.filewriter import write_file_meta_info

    meta = BytesIO()
    write_file_meta_info(meta, event.file_meta, enforce_standard=True)
    return [b"\x00" * 128, b"DICM", meta.getvalue(), event.request.DataSet.getvalue()]


def start_scp(
    ae_title: str,
    bind: str,
    port: int,
    allowed_aets: tuple[str, ...],
    admit: Callable[[str, list[bytes], str], bool],
    max_bytes: int,
):
    """Listen (non-blocking); `admit(uid, chunks, calling_aet)` spools one instance."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    from edgemed.errors import InputError

    ae = AE(ae_title=ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.maximum_associations = 16
    # An empty list accepts any caller; the CLI refuses to start without allowed-aets.
    ae.require_calling_aet = list(allowed_aets)

    def on_store(event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID or "")
        calling = str(event.assoc.requestor.ae_title).strip()
        size = len(event.request.DataSet.getbuffer())
        if size > max_bytes:
            log.warning(
                "C-STORE of %s from %s refused: %d bytes > max-upload-mb", uid, calling, size
            )
            return OUT_OF_RESOURCES
        try:
            admit(uid, part10_chunks(event), calling)
        except OSError as exc:
            log.error("spool write failed for %s: %s", uid, exc)
            return OUT_OF_RESOURCES
        except InputError as exc:  # an invalid UID from the network
            log.warning("C-STORE from %s refused: %s", calling, exc)
            return INVALID_SOP_INSTANCE
        return 0x0000

    server = ae.start_server(
        (bind, port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, no_delay)],
    )
    return ae, server
