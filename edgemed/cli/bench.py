"""`edgemed bench`: artifacts side by side on this device (drift vs FP32, latency, memory)."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli.options import (
    COUNT,
    POSITIVE,
    executor_options,
    force_option,
    limit_options,
    max_pixels_option,
    out_option,
)
from edgemed.evaluation.limits import BENCH_DEFAULTS


@click.command()
@click.argument("artifacts", nargs=-1, required=True, metavar="ARTIFACT_DIR...")
@click.option(
    "--data", required=True, help="Labelled data (.npz, class-folder tree, or 'embedded')."
)
@click.option("--split", default="test", show_default=True, help="Split to evaluate on.")
@click.option("--threads", type=COUNT, default=1, show_default=True, help="Intra-op threads.")
@click.option(
    "--batch", type=COUNT, default=1, show_default=True, help="Batch size of timed calls."
)
@click.option(
    "--timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds per configuration before it is killed and recorded as a timeout.",
)
@click.option(
    "--seconds", type=POSITIVE, default=3.0, show_default=True, help="Minimum timed seconds."
)
@click.option("--min-runs", type=COUNT, default=100, show_default=True, help="Minimum timed runs.")
@limit_options(BENCH_DEFAULTS)
@click.option(
    "--include-reference",
    is_flag=True,
    help="Also time the FP32 torch reference (eager) as a row.",
)
@click.option(
    "--groups",
    metavar="FILE.csv|dicom:ATTR,...",
    help="Subgroups: a CSV whose first column names each image (its path relative to the data "
    "folder, SPLIT/INDEX for an npz, or its content SHA-256) and whose other columns are groups "
    "(site, scanner, sex, age band); or, for a folder of DICOM files, dicom:Manufacturer,"
    "PatientSex,AgeBand (attributes read from each image's header). Every metric is reported "
    "per group.",
)
@click.option(
    "--gate-per-group", is_flag=True, help="Apply the gates to each group of --groups as well."
)
@click.option(
    "--ood",
    multiple=True,
    metavar="DATA",
    help="Out-of-domain data (any dataset path, repeatable): measure each artifact's domain guard "
    "(AUROC, share flagged, FPR@95TPR; in-domain false flags on --split with CI).",
)
@click.option("--resume", is_flag=True, help="Continue DIR: skip configurations already done.")
@click.option("--retry-failed", is_flag=True, help="With --resume, re-run failed/timed-out rows.")
@executor_options
@max_pixels_option
@out_option
@force_option
def bench(
    artifacts,
    data,
    split,
    threads,
    batch,
    timeout,
    seconds,
    min_runs,
    limits_given,
    include_reference,
    groups,
    gate_per_group,
    ood,
    resume,
    retry_failed,
    executor,
    workers,
    out,
    force,
) -> None:
    """Run every ARTIFACT_DIR (from `edgemed export`) on this device, each in a fresh process, and
    compare them side by side with the FP32 reference: AUC (bootstrap CI, DeLong), sensitivity,
    specificity, decision flips, calibration, latency and memory. Writes DIR/results.json,
    DIR/results.jsonl and DIR/report.html; exits non-zero when a gate is exceeded."""
    from edgemed.harness.bench import BenchRequest, enforce, run_bench  # lazy: --help
    from edgemed.harness.group_report import group_tables  # lazy: --help
    from edgemed.harness.report import terminal_table  # lazy: --help

    req = BenchRequest(
        artifacts=tuple(artifacts),
        data=data,
        out=Path(out),
        split=split,
        threads=threads,
        batch=batch,
        timeout=timeout,
        limits_given=tuple(limits_given.items()),
        resume=resume,
        force=force,
        retry_failed=retry_failed,
        include_reference=include_reference,
        seconds=seconds,
        min_runs=min_runs,
        groups=groups,
        gate_per_group=gate_per_group,
        executor=executor,
        workers=workers,
    )
    results = run_bench(req)
    if ood:
        results = _domain_evidence(results, artifacts, data, split, tuple(ood), Path(out))
    click.echo(terminal_table(results))
    if results.get("subgroups"):
        click.echo(group_tables(results))
    click.echo(f"results: {Path(out) / 'results.json'}; report: {Path(out) / 'report.html'}")
    enforce(results, Path(out))


def _domain_evidence(results: dict, artifacts, data, split, ood, out: Path) -> dict:
    """Add the domain guard's evidence (`bench --ood`) to results.json; print its table."""
    from edgemed.domain.evidence import KEY, artifact_evidence, domain_table
    from edgemed.fileio import write_json_atomic
    from edgemed.harness.bench import RESULTS

    rows = [artifact_evidence(a, data, split, ood) for a in artifacts]
    results = {**results, KEY: rows}
    write_json_atomic(out / RESULTS, results)
    click.echo(domain_table(rows))
    return results
