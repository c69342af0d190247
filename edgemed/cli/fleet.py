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
    from edgemed.profiles import expand_devices, resolve_target  # lazy: --help

    # a device name (x86-edge) offers all of its profiles; an unknown name is refused by name
    names = [resolve_target(t).name for t in expand_devices(targets)]
    resources = json.dumps({target_resource(n): 1 for n in names})
    cmd = ["ray", "start", f"--address={address}", f"--resources={resources}"]
    return cmd + ([f"--num-cpus={num_cpus}"] if num_cpus else [])


@fleet.command()
@click.option(
    "--target",
    "targets",
    multiple=True,
    required=True,
    help="Target profile this device measures (repeatable), e.g. jetson-orin-nano, or a device "
    "name (a profile's `machine`, e.g. x86-edge) for all of its profiles.",
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


CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str, timeout_s: float) -> None:
    """Refuse, within `timeout_s`, a head address where nothing accepts a TCP connection (Ray's
    own client keeps retrying a dead address for a minute or more)."""
    import socket

    from edgemed.errors import InputError, UnavailableError

    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UnavailableError(
            f"no Ray head answers at {address} within {timeout_s:g} s ({exc.strerror or exc}); "
            "start it with `ray start --head --port PORT` there, or check the address"
        ) from None


@fleet.command()
@click.option("--address", required=True, help="The Ray head, HOST:PORT.")
def status(address) -> None:
    """Target profiles the cluster's live nodes offer, with how many nodes offer each."""
    from edgemed.executors import open_executor, parse_executor  # lazy: --help

    check_reachable(address, CONNECT_TIMEOUT_S)
    with open_executor(parse_executor(f"ray:{address}")) as ex:
        offered = ex.offered_targets()
    for name, count in sorted(offered.items()):
        click.echo(f"{name}: {count} node(s)")
    if not offered:
        click.echo("no node offers an edgemed target; join one with `edgemed fleet join`")
