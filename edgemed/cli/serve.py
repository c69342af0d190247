"""`edgemed serve` (the appliance as a DICOM/HTTP service) and `edgemed audit verify`."""

from __future__ import annotations

from pathlib import Path

import click


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
@_opt("audit-log", type=click.Path(), help="Audit JSONL (default SPOOL/audit.jsonl).")
def serve(bundle_path, pubkey, config_path, **flags) -> None:
    """Run BUNDLE as a hospital service: DICOM C-STORE and STOW-RS in, DICOM SR out to PACS.

    Every instance is spooled durably before it is acknowledged; a restart resumes. SIGHUP
    verifies the bundle file again and swaps it in only if it is completely good."""
    import logging
    import signal
    import threading

    from edgemed.errors import InputError
    from edgemed.serve.config import build_config, read_toml
    from edgemed.serve.service import Service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # not a line per association
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
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=svc.swap, daemon=True).start())
    svc.start()
    dests = ", ".join(str(d) for d in cfg.forward) or "none (results kept as JSON only)"
    click.echo(
        f"ready: bundle {svc.model.algorithm.bundle_id}; DICOM {cfg.ae_title}@{cfg.dicom_bind}:"
        f"{svc.dicom_port}; HTTP http://{cfg.http_bind}:{svc.http_port}; forward to {dests}"
    )
    while not stop.wait(0.5):
        pass
    svc.stop()
    click.echo("stopped; unfinished work stays in the spool and resumes on the next start")


@click.group()
def audit() -> None:
    """The service's hash-chained audit log."""


@audit.command("verify")
@click.argument("log_path", metavar="LOG", type=click.Path())
def audit_verify(log_path) -> None:
    """Check that no entry of LOG was edited, removed, inserted or reordered."""
    from edgemed.serve.audit import verify_log

    report = verify_log(Path(log_path))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.events.items()))
    click.echo(f"audit log {log_path}: {report.entries} entries, chain intact ({counts})")
