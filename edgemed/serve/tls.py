"""TLS for the DICOM listener, the HTTP listener and the SR forwarder (DICOM PS3.15 BCP 195
profile: TLS 1.2 or later, ECDHE key exchange, AEAD ciphers only).

`tls-cert` + `tls-key`: this appliance's certificate (PEM, chain allowed) and its key; with
`tls-ca`, clients must present a certificate issued by that CA (mutual TLS) and, with
`tls-allowed-subjects`, one whose subject is listed (RFC 4514 text, e.g. "CN=ct1,O=Hospital").
The forwarder verifies the PACS against `forward-ca` and presents the same certificate.
Files are read again on SIGHUP (`Contexts.reload`); a bad file keeps the old contexts.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import InputError

log = logging.getLogger("edgemed.serve")
# TLS 1.2 suites of BCP 195 (RFC 9325 4.2); TLS 1.3 suites are all AEAD and stay enabled.
BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None = None
    forward_ca: Path | None = None
    allowed_subjects: tuple[str, ...] = ()


def _base(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(
        ssl.PROTOCOL_TLS_SERVER if purpose == ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def _load_chain(ctx: ssl.SSLContext, files: TlsFiles) -> None:
    for what, path in (("tls-cert", files.cert), ("tls-key", files.key)):
        if not Path(path).is_file():
            raise InputError(f"{what} {path} is not a readable file; pass a PEM file")
    try:
        ctx.load_cert_chain(str(files.cert), str(files.key))
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise InputError(
                f"tls-key {files.key} does not match tls-cert {files.cert}; pass the key the "
                "certificate was issued for"
            ) from None
        raise InputError(
            f"tls-cert {files.cert} / tls-key {files.key} unusable ({exc.reason or exc}); pass "
            "a PEM certificate and its unencrypted PEM private key"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read tls-cert/tls-key ({exc})") from None


def _load_ca(ctx: ssl.SSLContext, what: str, path: Path) -> None:
    try:
        ctx.load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError) as exc:
        raise InputError(f"{what} {path} unusable ({exc}); pass a PEM CA certificate") from None


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The listeners' context; client certificates required when `files.ca` is set."""
    ctx = _base(ssl.Purpose.CLIENT_AUTH)
    _load_chain(ctx, files)
    if files.ca is not None:
        _load_ca(ctx, "tls-ca", files.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """The forwarder's context: the PACS verified against `forward-ca`, hostname checked."""
    ctx = _base(ssl.Purpose.SERVER_AUTH)
    if files.forward_ca is None:
        raise InputError("forward-tls needs forward-ca (the CA that issued the PACS certificate)")
    _load_ca(ctx, "forward-ca", files.forward_ca)
    _load_chain(ctx, files)
    return ctx


def subject_text(cert: dict | None) -> str:
    """RFC 4514-like text of a peer certificate's subject as `getpeercert()` gives it."""
    if not cert:
        return ""
    parts = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            short = {
                "commonName": "CN",
                "organizationName": "O",
                "countryName": "C",
                "organizationalUnitName": "OU",
                "localityName": "L",
                "stateOrProvinceName": "ST",
            }.get(key, key)
            parts.append(f"{short}={value}")
    return ",".join(reversed(parts))


class Contexts:
    """The current server and client contexts; `reload` swaps them only when all load."""

    def __init__(self, files: TlsFiles, forward_tls: bool) -> None:
        self.files, self.forward_tls = files, forward_tls
        self._lock = threading.Lock()
        self.server, self.client = self._build()

    def _build(self) -> tuple[ssl.SSLContext, ssl.SSLContext | None]:
        client = client_context(self.files) if self.forward_tls else None
        return server_context(self.files), client

    def reload(self) -> bool:
        try:
            server, client = self._build()
        except InputError as exc:
            log.error("TLS files not reloaded, the old certificates stay in use: %s", exc)
            return False
        with self._lock:
            self.server, self.client = server, client
        log.info("TLS certificate and keys reloaded")
        return True

    def allowed(self, cert: dict | None) -> bool:
        """Whether a verified peer certificate's subject is on the allow-list (if one is set)."""
        allowed = self.files.allowed_subjects
        return not allowed or subject_text(cert) in allowed


class LazyHandshake:
    """What pynetdicom's listener gets as `ssl_context`: it wraps an accepted socket in its
    accept loop, where a client that never finishes the handshake would block every other
    connection; here the handshake is left to `handshake`, run in the connection's own thread."""

    def __init__(self, contexts: Contexts) -> None:
        self.contexts = contexts

    def wrap_socket(self, sock, server_side: bool = True):
        return self.contexts.server.wrap_socket(
            sock, server_side=server_side, do_handshake_on_connect=False
        )


def handshake(contexts: Contexts, sock, timeout_s: float, peer: str) -> bool:
    """Finish the TLS handshake within `timeout_s` and check the allow-list; False (logged in
    one line, socket shut down) when either fails."""
    try:
        sock.settimeout(timeout_s)
        sock.do_handshake()
    except (ssl.SSLError, OSError) as exc:
        log.warning("TLS handshake with %s failed: %s", peer, getattr(exc, "reason", None) or exc)
        _shut(sock)
        return False
    if not contexts.allowed(sock.getpeercert()):
        log.warning(
            "TLS client %s refused: certificate subject %r is not in tls-allowed-subjects",
            peer,
            subject_text(sock.getpeercert()),
        )
        _shut(sock)
        return False
    return True


def _shut(sock) -> None:
    import socket

    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
