"""`edgemed sweep PLAN.toml`: train -> export -> bench over a grid; an answer per device."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli.options import executor_options, force_option, out_option


@click.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep in OUT.")
@click.option(
    "--allow-proxy",
    is_flag=True,
    help="Select for a device from rows measured on another machine (named in the selection) "
    "when none was measured on the device itself; without it such a device gets no selection "
    "and the sweep exits 6.",
)
@executor_options
@out_option
@force_option
def sweep(plan, resume, allow_proxy, executor, workers, out, force) -> None:
    """Expand PLAN.toml (data, grid, targets, precisions, [gate], [select]) into train, export
    and bench jobs; write OUT/study, OUT/artifacts, OUT/bench, OUT/sweep.log (third-party
    output) and OUT/selection.json + .html: per device, among the artifacts that pass the clinical
    gate, fit the profile's budgets and were measured on that device, those within the [select]
    margin of the best test AUC, and of them the fastest (or smallest: [select] objective)."""
    from edgemed.errors import NotMeasuredError  # lazy: --help
    from edgemed.executors import parse_executor  # lazy: --help
    from edgemed.sweep import load_plan  # lazy: --help
    from edgemed.sweep.run import run_sweep  # lazy: --help

    spec = parse_executor(executor, workers)
    selection = run_sweep(load_plan(Path(plan)), Path(out), spec, resume, force, allow_proxy)
    unmeasured = []
    for name, pick in selection["devices"].items():
        click.echo(device_line(name, pick))
        if pick["artifact"] is None and pick["reason"].startswith("not measured on"):
            unmeasured.append(name)
    click.echo(
        f"selection: {Path(out) / 'selection.json'} (report: selection.html, log: sweep.log)"
    )
    if unmeasured:
        raise NotMeasuredError(
            f"no row was measured on {', '.join(unmeasured)}: bench there (a Ray node offering its "
            "profiles, see docs/FLEET.md) or pass --allow-proxy to select from this machine's rows"
        )


def device_line(name: str, pick: dict) -> str:
    """One line per device: the choice and why, or why there is none."""
    n, ok = len(pick["candidates"]), sum(c["outcome"] not in OUT_EARLY for c in pick["candidates"])
    if pick["artifact"] is None:
        return f"{name}: no selection: {pick['reason']} ({n} candidates)"
    where = f"; measured on a PROXY: {'; '.join(pick['proxy'])}" if pick.get("proxy") else ""
    return (
        f"{name}: {pick['label']} {pick['median_ms']:.3f} ms, AUC {pick['auc']:.4f} (best "
        f"{pick['best_auc']:.4f}, margin {pick['rule']['margin']:g}; {ok} of {n} pass the gate and "
        f"budgets){where}"
    )


OUT_EARLY = ("failed", "drift", "budget", "elsewhere")
