"""What `edgemed serve` checks before it writes anything: clear text off loopback, the TLS files
(a key that does not match its certificate, an unusable certificate), the listen ports, the
audit key and the syslog collector's CA. Each failure is one InputError line."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from edgemed.errors import InputError
from edgemed.serve.config import ServeConfig
from edgemed.serve.tls import Contexts
from edgemed.signing import load_private_key


@dataclass(frozen=True)
class Preflight:
    tls: Contexts | None
    audit_key: object | None  # Ed25519PrivateKey
    syslog: ssl.SSLContext | None


def preflight(cfg: ServeConfig) -> Preflight:

    cfg.check_plaintext()
    files = cfg.tls_files()
    tls = Contexts(files, cfg.forward_tls) if files is not None else None
    check_port_free("DICOM", cfg.dicom_bind, cfg.dicom_port, "--dicom-port")
    check_port_free("HTTP", cfg.http_bind, cfg.http_port, "--http-port")
    audit_key = load_private_key(cfg.audit_key) if cfg.audit_key else None
    return Preflight(tls, audit_key, syslog_context(cfg))


def syslog_context(cfg: ServeConfig) -> ssl.SSLContext | None:
    if cfg.audit_syslog is None:
        return None
    from edgemed.serve.syslog import parse_address, syslog_context

    parse_address(cfg.audit_syslog)
    if cfg.audit_syslog_ca is None:
        raise InputError("audit-syslog needs audit-syslog-ca (RFC 5425: the collector's CA)")
    return syslog_context(cfg.audit_syslog_ca, cfg.tls_cert, cfg.tls_key)


def check_port_free(what: str, bind: str, port: int, flag: str) -> None:
    """Refuse, with one line, a listen address that is in use or not this machine's (checked
    before anything is written; the listener binds it again moments later)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(infos[0][4])
    except OSError as exc:
        raise InputError(
            f"cannot listen for {what} on {bind}:{port} ({exc.strerror or exc}); another "
            f"service holds it or the address is not this machine's: pick another {flag} or "
            "stop the other service"
        ) from None
