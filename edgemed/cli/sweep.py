"""`edgemed sweep PLAN.toml`: train -> export -> bench over a grid; a winner per device profile."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli.options import executor_options, force_option, out_option


@click.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep in OUT.")
@executor_options
@out_option
@force_option
def sweep(plan, resume, executor, workers, out, force) -> None:
    """Expand PLAN.toml (data, grid, targets, precisions, [gate]) into train, export and bench
    jobs; write OUT/study, OUT/artifacts, OUT/bench and OUT/selection.json: for each target
    profile, the fastest artifact that passes the clinical gate."""
    from edgemed.executors import parse_executor  # lazy: --help
    from edgemed.sweep import load_plan  # lazy: --help
    from edgemed.sweep.run import run_sweep  # lazy: --help

    spec = parse_executor(executor, workers)
    selection = run_sweep(load_plan(Path(plan)), Path(out), spec, resume, force)
    for target, pick in selection["targets"].items():
        if pick["artifact"] is None:
            click.echo(f"{target}: none of {pick['candidates']} passes the clinical gate")
        else:
            click.echo(
                f"{target}: {pick['label']} {pick['median_ms']:.3f} ms, AUC {pick['auc']:.4f} "
                f"({pick['passing']} of {pick['candidates']} pass the gate)"
            )
    click.echo(f"selection: {Path(out) / 'selection.json'}")
