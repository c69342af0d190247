"""What an incoming instance must be before the model sees it (beyond the bundle's own checks),
and STOW-RS request parsing."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from edgemed.errors import InputError

REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def read_header(path: Path):
    """The dataset without pixel data (what the SR references)."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        return dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise InputError(f"instance is not a readable DICOM file ({exc})") from None


def check_header(ds, uid: str, modalities: tuple[str, ...]) -> None:
    """Refuse what the SR could not reference or the service's modality filter excludes."""
    missing = [k for k in REQUIRED if not str(ds.get(k, "") or "").strip()]
    if missing:
        raise InputError(
            f"instance {uid} lacks {', '.join(missing)}; the SR could not reference it"
        )
    if str(ds.SOPInstanceUID) != uid:
        raise InputError(
            f"instance {uid}: the dataset's SOP Instance UID is {ds.SOPInstanceUID} (mismatch)"
        )
    modality = str(ds.get("Modality", "") or "").upper()
    if modalities and modality not in modalities:
        raise InputError(
            f"instance {uid} has Modality {modality or '(none)'}; this service takes "
            f"{' or '.join(modalities)} only"
        )


def stow_spans(content_type: str, body) -> list[tuple[int, int]]:
    """(start, end) of each application/dicom part of a multipart/related STOW-RS body
    (PS3.18 10.5); `body` is bytes or an mmap, so a large body is never copied whole.

    Split on the boundary by hand: the email package may rewrite line endings in binary parts."""
    from email.message import Message

    header = Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/related" or not isinstance(boundary, str):
        raise InputError(
            'STOW-RS takes Content-Type: multipart/related; type="application/dicom"; '
            f"boundary=...; got {content_type[:100]!r}"
        )
    delim = b"--" + boundary.encode()
    spans, pos = [], body.find(delim)
    while pos >= 0:
        start = pos + len(delim)
        if body[start : start + 2] == b"--":
            break
        pos = body.find(delim, start)
        end = pos if pos >= 0 else len(body)
        spans.append(_part_span(body, start, end))
    if not spans:
        raise InputError("STOW-RS body holds no application/dicom part (wrong boundary?)")
    return spans


def _part_span(body, start: int, end: int) -> tuple[int, int]:
    if body[start : start + 2] == b"\r\n":
        start += 2
    head_end = body.find(b"\r\n\r\n", start, end)
    kind = _part_type(body[start:head_end]) if head_end >= 0 else ""
    if head_end < 0 or kind != "application/dicom":
        raise InputError(f"STOW-RS part of type {kind or '(none)'}; send application/dicom parts")
    if body[end - 2 : end] == b"\r\n" and end - 2 >= head_end + 4:
        end -= 2
    return head_end + 4, end


def _part_type(head: bytes) -> str:
    for line in head.split(b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-type":
            return value.split(";")[0].strip().lower()
    return ""


def sop_instance_uid(data: bytes) -> str:
    """The SOP Instance UID of a Part 10 file held in memory."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise InputError(f"STOW-RS part is not a DICOM Part 10 file ({exc})") from None
    uid = str(ds.get("SOPInstanceUID", "") or "")
    if not uid:
        raise InputError("STOW-RS part has no SOP Instance UID")
    return uid
