"""Service settings: one TOML file (`--config appliance.toml`) with flags overriding its keys.

Every key is spelled exactly like its flag without the dashes in front (`ae-title` <-> `--ae-title`),
so a reader can move a setting between the file and the command line without translating it.
Unknown keys and wrong types are refused with one line; nothing is silently fixed.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from edgemed.errors import InputError
from edgemed.serve.tls import TlsFiles

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

AET_RE = re.compile(r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")
DEST_RE = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[A-Za-z0-9.\-:\[\]]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Destination:
    """A DICOM node results are C-STORE'd to: AE title, host, port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        m = DEST_RE.match(text.strip())
        if not m or not AET_RE.match(m["aet"]) or not 0 < int(m["port"]) < 65536:
            raise InputError(
                f"forward destination {text!r} is not AET@HOST:PORT (e.g. PACS@127.0.0.1:4242; "
                "AE title 1-16 printable characters, port 1-65535)"
            )
        return cls(m["aet"], m["host"].strip("[]"), int(m["port"]))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class ServeConfig:
    """Everything `edgemed serve` needs besides the bundle and the public key."""

    spool: Path
    ae_title: str = "EDGEMED"
    dicom_port: int = 11112
    dicom_bind: str = "127.0.0.1"
    allowed_aets: tuple[str, ...] = ()
    forward: tuple[Destination, ...] = ()
    http_bind: str = "127.0.0.1"
    http_port: int = 8480
    token_file: Path | None = None
    workers: int = 2
    threads: int | None = None
    modalities: tuple[str, ...] | None = None
    retries: int = 5
    retry_backoff: float = 0.5
    audit_log: Path | None = None
    max_upload_mb: int = 512
    http_timeout: float = 10.0
    http_max_connections: int = 64
    http_max_per_client: int = 16
    dicom_timeout: float = 30.0
    max_associations: int = 16
    audit_key: Path | None = None
    audit_sign_interval: float = 10.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_allowed_subjects: tuple[str, ...] = ()
    forward_tls: bool = False
    forward_ca: Path | None = None
    insecure_plaintext: bool = False
    audit_syslog: str | None = None
    audit_syslog_ca: Path | None = None

    def tls_files(self):
        """The TLS settings checked for completeness, or None without tls-cert."""

        if (self.tls_cert is None) != (self.tls_key is None):
            raise InputError("tls-cert and tls-key go together; pass both or neither")
        if self.tls_cert is None:
            if self.tls_ca or self.tls_allowed_subjects or self.forward_tls:
                raise InputError(
                    "tls-ca, tls-allowed-subjects and forward-tls need tls-cert and tls-key"
                )
            return None
        if self.tls_allowed_subjects and self.tls_ca is None:
            raise InputError("tls-allowed-subjects needs tls-ca (client certificates to check)")
        return TlsFiles(
            self.tls_cert, self.tls_key, self.tls_ca, self.forward_ca, self.tls_allowed_subjects
        )

    def check_plaintext(self) -> None:
        """No listener in clear text off loopback unless insecure-plaintext says so."""
        if self.tls_cert is not None or self.insecure_plaintext:
            return
        open_to = [b for b in (self.dicom_bind, self.http_bind) if not _is_loopback(b)]
        if open_to:
            raise InputError(
                f"listening on {', '.join(open_to)} without TLS: pass tls-cert and tls-key, "
                "or --insecure-plaintext on a closed network (the bearer token and the images "
                "would travel in clear text)"
            )

    @property
    def audit_path(self) -> Path:
        return self.audit_log or self.spool / "audit.jsonl"

    def token(self) -> str | None:
        """The bearer token (first line of token-file), or None when HTTP is open on loopback."""
        if self.token_file is None:
            return None
        try:
            text = self.token_file.read_text().strip()
        except OSError as exc:
            raise InputError(f"cannot read token-file {self.token_file} ({exc})") from None
        if len(text) < 16:
            raise InputError(
                f"token-file {self.token_file} holds a token shorter than 16 characters; "
                "write a long random token (e.g. `openssl rand -hex 32 > token`)"
            )
        return text


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bool(name: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise InputError(f"{name} = {v!r}: expected true or false")
    return v


# key -> (type, converter); the same names as the CLI flags.
def _ports(name: str, v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 65536:
        raise InputError(f"{name} = {v!r}: expected a port number 0-65535 (0: any free port)")
    return v


def _positive(name: str, v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise InputError(f"{name} = {v!r}: expected a whole number >= 1")
    return v


def _nonneg_int(name: str, v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise InputError(f"{name} = {v!r}: expected a whole number >= 0")
    return v


def _seconds(name: str, v: object) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 3600:
        raise InputError(f"{name} = {v!r}: expected seconds between 0 and 3600")
    return float(v)


def _timeout(name: str, v: object) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 3600:
        raise InputError(f"{name} = {v!r}: expected a timeout in seconds, above 0 and <= 3600")
    return float(v)


def _text(name: str, v: object) -> str:
    if not isinstance(v, str) or not v.strip():
        raise InputError(f"{name} = {v!r}: expected a non-empty string")
    return v.strip()


def _aet(name: str, v: object) -> str:
    v = _text(name, v)
    if not AET_RE.match(v):
        raise InputError(f"{name} = {v!r}: an AE title is 1-16 printable characters, no backslash")
    return v


def _aets(name: str, v: object) -> tuple[str, ...]:
    return tuple(_aet(name, x) for x in _list(name, v))


def _list(name: str, v: object) -> list:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, (list, tuple)):
        raise InputError(f"{name} = {v!r}: expected a list")
    return list(v)


def _path(name: str, v: object) -> Path:
    return Path(_text(name, v)).expanduser()


KEYS = {
    "spool": _path,
    "ae-title": _aet,
    "dicom-port": _ports,
    "dicom-bind": _text,
    "allowed-aets": _aets,
    "forward": lambda n, v: tuple(Destination.parse(_text(n, x)) for x in _list(n, v)),
    "http-bind": _text,
    "http-port": _ports,
    "token-file": _path,
    "workers": _positive,
    "threads": _positive,
    "modalities": lambda n, v: tuple(_text(n, x).upper() for x in _list(n, v)),
    "retries": _nonneg_int,
    "retry-backoff": _seconds,
    "audit-log": _path,
    "max-upload-mb": _positive,
    "http-timeout": _timeout,
    "http-max-connections": _positive,
    "http-max-per-client": _positive,
    "dicom-timeout": _timeout,
    "max-associations": _positive,
    "audit-key": _path,
    "tls-cert": _path,
    "tls-key": _path,
    "tls-ca": _path,
    "tls-allowed-subjects": lambda n, v: tuple(_text(n, x) for x in _list(n, v)),
    "forward-tls": _bool,
    "forward-ca": _path,
    "insecure-plaintext": _bool,
    "audit-syslog": _text,
    "audit-syslog-ca": _path,
    "audit-sign-interval": _timeout,
}


def read_toml(path: Path) -> dict:
    """The TOML file's keys (flat), refused with one line when it cannot be parsed."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise InputError(f"cannot read config {path} ({exc}); pass an appliance.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config {path} is not valid TOML ({exc})") from None
    return raw


def build_config(file_values: dict, overrides: dict, source: str = "config") -> ServeConfig:
    """File values, then flag overrides (None = not given), checked key by key."""
    merged: dict = {}
    for origin, values in ((source, file_values), ("flag", overrides)):
        for key, value in values.items():
            if value is None or (origin == "flag" and value == ()):
                continue
            if key not in KEYS:
                known = ", ".join(sorted(KEYS))
                raise InputError(f"{origin}: unknown setting {key!r}; known settings: {known}")
            merged[key] = KEYS[key](key, value)
    if "spool" not in merged:
        raise InputError('no spool directory: pass --spool DIR (or spool = "DIR" in the config)')
    kwargs = {
        f.name: merged[f.name.replace("_", "-")]
        for f in fields(ServeConfig)
        if f.name.replace("_", "-") in merged
    }
    return ServeConfig(**kwargs)


def modality_filter(configured: tuple[str, ...] | None, bundle: tuple[str, ...]) -> tuple[str, ...]:
    """The modalities the service takes: the bundle's list unless the config narrows it.

    A config may only narrow the bundle's list; widening it would feed the model images it was
    not released for."""
    if configured is None:
        return tuple(bundle)
    if bundle and not set(configured) <= set(bundle):
        extra = ", ".join(sorted(set(configured) - set(bundle)))
        raise InputError(
            f"modalities {extra} are not in this bundle's list ({', '.join(bundle)}); the service "
            "may only narrow the modalities the bundle was released for"
        )
    return tuple(configured)
