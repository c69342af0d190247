"""`edgemed serve` (the appliance as a DICOM/HTTP service) and `edgemed audit verify`."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.errors import InputError


def _opt(name: str, **kw):
    """A flag whose name is also its TOML key (`--ae-title` <-> `ae-title = ...`)."""
    return click.option(f"--{name}", name.replace("-", "_"), default=None, **kw)


@click.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path())
@click.option("--pubkey", required=True, type=click.Path(), help="Publisher's public key (.pub).")
@click.option("--config", "config_path", type=click.Path(), help="appliance.toml (flags override).")
@_opt("ae-title", help="This service's DICOM AE title (default EDGEMED).")
@_opt("dicom-port", type=int, help="C-STORE SCP port (default 11112; 0 = any free port).")
@_opt("dicom-bind", help="DICOM listen address (default 127.0.0.1).")
@_opt("allowed-aets", multiple=True, metavar="AET", help="Calling AE title allowed (repeatable).")
@_opt("forward", multiple=True, metavar="AET@HOST:PORT", help="Send SRs there (repeatable).")
@_opt("http-port", type=int, help="HTTP port (default 8480; 0 = any free port).")
@_opt("http-bind", help="HTTP listen address (default 127.0.0.1).")
@_opt("token-file", type=click.Path(), help="File with the HTTP bearer token.")
@_opt("spool", type=click.Path(), help="Spool directory (durable queue, results, SRs).")
@_opt("workers", type=int, help="Worker threads (default 2).")
@_opt("threads", type=int, help="Intra-op threads of the runtime (default: the runtime's).")
@_opt("modalities", multiple=True, metavar="CODE", help="Narrow the bundle's modality list.")
@_opt("retries", type=int, help="C-STORE retries per destination before dead-letter (default 5).")
@_opt("retry-backoff", type=float, help="First retry delay in seconds, doubling (default 0.5).")
@_opt("max-upload-mb", type=int, help="Largest instance (C-STORE or HTTP) in MiB (default 512).")
@_opt("http-timeout", type=float, help="HTTP header deadline and body stall limit, s (default 10).")
@_opt("http-max-connections", type=int, help="Open HTTP connections at most (default 64).")
@_opt(
    "http-max-per-client", type=int, help="Open HTTP connections per client address (default 16)."
)
@_opt("dicom-timeout", type=float, help="DICOM ARTIM/ACSE/DIMSE/network timeout, s (default 30).")
@_opt("max-associations", type=int, help="Concurrent DICOM associations at most (default 16).")
@_opt("audit-key", type=click.Path(), help="Appliance's Ed25519 key: signs the audit chain's head.")
@_opt("audit-sign-interval", type=float, help="Seconds between signed audit heads (default 10).")
@_opt("tls-cert", type=click.Path(), help="PEM certificate (chain) of this appliance: TLS on.")
@_opt("tls-key", type=click.Path(), help="PEM private key of tls-cert.")
@_opt("tls-ca", type=click.Path(), help="CA of client certificates: mutual TLS required.")
@_opt(
    "tls-allowed-subjects", multiple=True, metavar="DN", help="Client subject allowed (repeatable)."
)
@_opt("forward-tls", is_flag=True, help="Send SRs over TLS (verified against forward-ca).")
@_opt("forward-ca", type=click.Path(), help="PEM CA that issued the PACS certificate.")
@_opt("insecure-plaintext", is_flag=True, help="Allow clear text on a non-loopback address.")
@_opt("audit-syslog", metavar="HOST:PORT", help="Syslog collector (RFC 5425 TLS) for audit.")
@_opt("audit-syslog-ca", type=click.Path(), help="PEM CA that issued the collector's certificate.")
@_opt("audit-log", type=click.Path(), help="Audit JSONL (default SPOOL/audit.jsonl).")
def serve(bundle_path, pubkey, config_path, **flags) -> None:
    """Run BUNDLE as a hospital service: DICOM C-STORE and STOW-RS in, DICOM SR out to PACS.

    Every instance is spooled durably before it is acknowledged; a restart resumes. SIGHUP
    verifies the bundle file again and swaps it in only if it is completely good."""
    import logging
    import signal
    import threading

    from edgemed.serve.config import build_config, read_toml
    from edgemed.serve.service import Service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    one_line_errors()
    file_values = read_toml(Path(config_path)) if config_path else {}
    overrides = {k.replace("_", "-"): v for k, v in flags.items()}
    cfg = build_config(file_values, overrides, str(config_path or "config"))
    if not cfg.allowed_aets:
        raise InputError(
            "no allowed-aets: list the calling AE titles of the modalities and PACS that may send "
            "(--allowed-aets AET, repeatable, or allowed-aets = [...] in the config)"
        )
    svc = Service(cfg, Path(bundle_path), Path(pubkey))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(
        signal.SIGHUP, lambda *_: threading.Thread(target=svc.on_sighup, daemon=True).start()
    )
    svc.start()
    dests = ", ".join(str(d) for d in cfg.forward) or "none (results kept as JSON only)"
    tls = "TLS" if svc.tls else "clear text"
    if svc.tls is None and cfg.insecure_plaintext:
        tls = "CLEAR TEXT (--insecure-plaintext: images and the token are readable on the wire)"
    scheme = "https" if svc.tls else "http"
    click.echo(
        f"ready: bundle {svc.model.algorithm.bundle_id}; DICOM {cfg.ae_title}@{cfg.dicom_bind}:"
        f"{svc.dicom_port}; HTTP {scheme}://{cfg.http_bind}:{svc.http_port}; {tls}; forward to "
        f"{dests}{' over TLS' if cfg.forward_tls else ''}"
    )
    while not stop.wait(0.5):
        pass
    svc.stop()
    click.echo("stopped; unfinished work stays in the spool and resumes on the next start")


def one_line_errors() -> None:
    """The service log gets one line per error: pynetdicom logs exceptions with tracebacks and a
    dying association thread would print one (a peer that vanishes, a disk that fills)."""
    import logging
    import threading

    class OneLine(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.exc_info:
                exc = record.exc_info[1]
                record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
                record.args, record.exc_info, record.exc_text = (), None, None
            return True

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # not a line per association
    for handler in logging.getLogger().handlers:  # a filter on a logger misses its children
        handler.addFilter(OneLine())
    log = logging.getLogger("edgemed.serve")

    def thread_died(args) -> None:
        log.error(
            "thread %s ended: %s: %s",
            getattr(args.thread, "name", "?"),
            args.exc_type.__name__,
            args.exc_value,
        )

    threading.excepthook = thread_died


@click.group()
def audit() -> None:
    """The service's hash-chained audit log."""


@audit.command("verify")
@click.argument("log_path", metavar="LOG", type=click.Path())
@click.option("--pubkey", type=click.Path(), help="The appliance's public key: check LOG.head.")
def audit_verify(log_path, pubkey) -> None:
    """Check that no entry of LOG was edited, removed, inserted or reordered; with --pubkey also
    against the head the appliance signed (LOG.head), which catches truncation and recomputed
    hashes. Without a copy kept off the box (syslog), entries after the last signed head and a
    log rolled back together with its head cannot be checked."""
    from edgemed.serve.audit import verify_log
    from edgemed.serve.audit_head import check_head

    report = verify_log(Path(log_path))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.events.items()))
    click.echo(f"audit log {log_path}: {report.entries} entries, chain intact ({counts})")
    if pubkey is None:
        click.echo(
            "not checked: truncation and recomputed hashes (pass --pubkey with the appliance's "
            "key to check the signed head)"
        )
        return
    head = check_head(Path(log_path), Path(pubkey), list(report.line_hashes))
    click.echo(
        f"signed head: entry {head.seq} at {head.time} matches; {head.unsigned_after} later "
        "entries are not yet covered by a signature (compare them with the syslog copy)"
    )
