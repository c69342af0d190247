"""`edgemed monitor`: the surveillance report of a serve spool (domain, positive rate, alarms)."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli.options import force_option


@click.command()
@click.argument("spool", type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(), help="Report directory to write.")
@click.option("--audit-log", type=click.Path(), help="Audit JSONL (default SPOOL/audit.jsonl).")
@force_option
def monitor(spool, out, audit_log, force) -> None:
    """Write the surveillance report (HTML + JSON) from the results SPOOL kept."""
    from edgemed.fileio import staged_dir
    from edgemed.serve.monitor_report import write_report

    spool = Path(spool)
    audit = Path(audit_log) if audit_log else spool / "audit.jsonl"
    with staged_dir(Path(out), force) as tmp:
        doc = write_report(spool, audit, tmp)
    d = doc["domain"]
    click.echo(
        f"surveillance report -> {out}: {doc['images']} images, {d['out']} outside the domain, "
        f"{doc['refused']} refused, {len(doc['alarms'])} drift alarms"
    )
