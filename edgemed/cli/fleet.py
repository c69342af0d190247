"""`edgemed fleet`: devices join a Ray cluster as `edgemed-target:PROFILE` resources, so bench
jobs for PROFILE run only there (`edgemed bench --executor ray:HEAD ...`)."""

from __future__ import annotations

import json
import shlex

import click

from edgemed.errors import EdgemedError, UnavailableError


@click.group()
def fleet() -> None:
    """Devices as Ray resources: print/run the join command, list what the cluster offers."""


def join_command(address: str, targets: tuple[str, ...], num_cpus: int | None) -> list[str]:
    """`ray start` joining HEAD and offering one unit of edgemed-target:P per target profile."""
    from edgemed.executors import target_resource  # lazy: --help
    from edgemed.profiles import resolve_target  # lazy: --help

    names = [resolve_target(t).name for t in targets]  # refuses an unknown profile by name
    resources = json.dumps({target_resource(n): 1 for n in names})
    cmd = ["ray", "start", f"--address={address}", f"--resources={resources}"]
    return cmd + ([f"--num-cpus={num_cpus}"] if num_cpus else [])


@fleet.command()
@click.option(
    "--target",
    "targets",
    multiple=True,
    required=True,
    help="Target profile this device measures (repeatable), e.g. jetson-orin-nano.",
)
@click.option("--address", required=True, help="The Ray head, HOST:PORT.")
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs this node lends to Ray.")
@click.option("--run", is_flag=True, help="Run the command instead of printing it.")
def join(targets, address, num_cpus, run) -> None:
    """Print (or --run) the `ray start` command that makes this machine a fleet device."""
    cmd = join_command(address, tuple(targets), num_cpus)
    if not run:
        click.echo(shlex.join(cmd))
        return
    import shutil
    import subprocess

    if shutil.which("ray") is None:
        raise UnavailableError("the `ray` command is not installed: pip install 'edgemed[cluster]'")
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise EdgemedError(f"`{shlex.join(cmd)}` failed (exit {rc}); see its output above")


@fleet.command()
@click.option("--address", required=True, help="The Ray head, HOST:PORT.")
def status(address) -> None:
    """Target profiles the cluster's live nodes offer, with how many nodes offer each."""
    from edgemed.executors import open_executor, parse_executor  # lazy: --help

    with open_executor(parse_executor(f"ray:{address}")) as ex:
        offered = ex.offered_targets()
    for name, count in sorted(offered.items()):
        click.echo(f"{name}: {count} node(s)")
    if not offered:
        click.echo("no node offers an edgemed target; join one with `edgemed fleet join`")
