"""Each audit entry also leaves the box: RFC 5424 messages over TLS (RFC 5425, octet-counting
framing) to a syslog collector (`audit-syslog = "HOST:PORT"`, verified against `audit-syslog-ca`;
the appliance's `tls-cert` is presented when set).

For the events PS3.15 Annex A.5 defines, the message body is a DICOM audit message (XML):
`received` / `sent` -> DICOM Instances Transferred (110104), `started` / `stopped` -> Application
Activity (110100, Application Start 110120 / Stop 110121), `bundle_refused`, `spool_failing`,
`failed` -> Security Alert (110113). Other entries are sent as their JSON. Every message carries
the local chain's `seq` and entry hash as structured data, so the collector's copy can check the
box's log. Delivery: a bounded queue and one sender thread that reconnects with backoff; a
message is retried until the collector takes it; when the queue is full (collector gone for
long) new entries are dropped and counted (`audit_syslog_dropped`): the local chain has them.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import ssl
import threading
import time
from xml.sax.saxutils import quoteattr

from edgemed.errors import InputError
from edgemed.serve.tls import BCP195_CIPHERS

log = logging.getLogger("edgemed.serve")
QUEUE_MAX = 10000
SD_ID = "edgemed@32473"  # 32473: the IANA example enterprise number (RFC 5612)
TRANSFER = ("110104", "DICOM Instances Transferred")
ACTIVITY = ("110100", "Application Activity")
ALERT = ("110113", "Security Alert")
DICOM_EVENTS = {
    "received": (TRANSFER, "C", None),
    "sent": (TRANSFER, "R", None),
    "started": (ACTIVITY, "E", ("110120", "Application Start")),
    "stopped": (ACTIVITY, "E", ("110121", "Application Stop")),
    "bundle_refused": (ALERT, "E", ("110126", "Node Authentication")),
    "spool_failing": (ALERT, "E", ("110126", "Node Authentication")),
    "failed": (ALERT, "E", ("110128", "Network Configuration")),
}


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"audit-syslog {text!r} is not HOST:PORT (e.g. 10.0.0.9:6514)")
    return host.strip("[]"), int(port)


def audit_xml(entry: dict, ae_title: str) -> str | None:
    """The PS3.15 A.5 audit message for `entry`, or None for events A.5 does not define."""
    spec = DICOM_EVENTS.get(entry.get("event", ""))
    if spec is None:
        return None
    (code, name), action, type_code = spec
    outcome = "0" if entry["event"] in ("received", "sent", "started", "stopped") else "4"
    parts = [
        f'<AuditMessage><EventIdentification EventActionCode="{action}" '
        f'EventDateTime={quoteattr(entry.get("time", ""))} EventOutcomeIndicator="{outcome}">'
        f'<EventID csd-code="{code}" codeSystemName="DCM" originalText="{name}"/>'
    ]
    if type_code:
        parts.append(
            f'<EventTypeCode csd-code="{type_code[0]}" codeSystemName="DCM" '
            f'originalText="{type_code[1]}"/>'
        )
    parts.append("</EventIdentification>")
    source = str(entry.get("source") or entry.get("destination") or "")
    if source:
        parts.append(
            f"<ActiveParticipant UserID={quoteattr(source)} "
            f'UserIsRequestor="{"true" if entry["event"] == "received" else "false"}"/>'
        )
    parts.append(f'<ActiveParticipant UserID={quoteattr(ae_title)} UserIsRequestor="false"/>')
    parts.append(f"<AuditSourceIdentification AuditSourceID={quoteattr(ae_title)}/>")
    uid = entry.get("sop_instance_uid")
    if uid:
        parts.append(
            f'<ParticipantObjectIdentification ParticipantObjectTypeCode="2" '
            f'ParticipantObjectTypeCodeRole="4" ParticipantObjectID={quoteattr(str(uid))}>'
            '<ParticipantObjectIDTypeCode csd-code="110181" codeSystemName="DCM" '
            'originalText="SOP Instance UID"/></ParticipantObjectIdentification>'
        )
    reason = entry.get("reason") or entry.get("detail")
    if reason and not uid:
        parts.append(
            '<ParticipantObjectIdentification ParticipantObjectTypeCode="2" '
            f"ParticipantObjectID={quoteattr(ae_title)}><ParticipantObjectIDTypeCode "
            'csd-code="110182" codeSystemName="DCM" originalText="Node ID"/>'
            f'<ParticipantObjectDetail type="Alert Description" value={quoteattr(str(reason))}/>'
            "</ParticipantObjectIdentification>"
        )
    parts.append("</AuditMessage>")
    return "".join(parts)


def rfc5424(entry: dict, line_hash: str, ae_title: str, host: str) -> bytes:
    """One RFC 5424 message: facility 10 (security/authorization), severity notice or warning."""
    xml = audit_xml(entry, ae_title)
    severity = 5 if xml is None or 'EventOutcomeIndicator="0"' in xml else 4
    msgid = "DICOM+RFC3881" if xml is not None else "edgemed-audit"
    body = xml if xml is not None else json.dumps(entry, sort_keys=True)
    sd = f'[{SD_ID} seq="{entry.get("seq")}" sha256="{line_hash}"]'
    stamp = str(entry.get("time") or "-")
    head = f"<{10 * 8 + severity}>1 {stamp} {host} edgemed - {msgid} {sd} "
    return head.encode() + b"\xef\xbb\xbf" + body.encode()


class SyslogForwarder:
    """Queue + sender thread; `put` never blocks the audit writer."""

    def __init__(self, address: str, context: ssl.SSLContext, ae_title: str, metrics) -> None:
        self.host, self.port = parse_address(address)
        self.context, self.ae_title, self.metrics = context, ae_title, metrics
        self.hostname = socket.gethostname() or "-"
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_MAX)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgemed-syslog", daemon=True)
        self._thread.start()

    def put(self, entry: dict, line_hash: str) -> None:
        try:
            self._queue.put_nowait(rfc5424(entry, line_hash, self.ae_title, self.hostname))
        except queue.Full:
            self.metrics.inc("audit_syslog_dropped")

    def _run(self) -> None:
        sock, pending, delay = None, None, 0.5
        while not (self._stop.is_set() and pending is None and self._queue.empty()):
            if pending is None:
                try:
                    pending = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                if pending is None:
                    continue
            try:
                sock = sock or self._connect()
                sock.sendall(f"{len(pending)} ".encode() + pending)
                pending, delay = None, 0.5
                self.metrics.inc("audit_syslog_sent")
            except OSError as exc:
                log.warning("audit syslog %s:%d: %s; retrying", self.host, self.port, exc)
                if sock is not None:
                    sock.close()
                sock = None
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, 30.0)
        if sock is not None:
            sock.close()

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self.host, self.port), timeout=10)
        try:
            return self.context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (up to `timeout_s`), then stop."""
        deadline = time.monotonic() + timeout_s
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()) + 1)


def syslog_context(ca, cert=None, key=None) -> ssl.SSLContext:
    """TLS 1.2+ client context verifying the collector against `ca` (RFC 5425 requires TLS)."""

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_CIPHERS)
    try:
        ctx.load_verify_locations(cafile=str(ca))
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise InputError(f"audit-syslog-ca {ca} unusable ({exc}); pass a PEM CA") from None
    return ctx
