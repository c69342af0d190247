"""Dockerfile.appliance, the systemd unit and the example config agree with `edgemed serve`:
the commands and flags they use exist, the extras they install exist and pull no torch, the
files they copy exist, the config they point at parses, and reload means SIGHUP."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import sys

import click
import pytest

from tests.conftest import REPO
from tests.test_dockerfile import instructions as dockerfile_instructions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOCKERFILE = REPO / "Dockerfile.appliance"
UNIT = REPO / "packaging" / "edgemed-serve.service"
EXAMPLE = REPO / "packaging" / "appliance.toml"


def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE)


def one(word: str) -> str:
    found = [rest for w, rest in instructions() if w == word]
    assert len(found) == 1, (word, found)
    return found[0]


def serve_flags() -> set[str]:
    from edgemed.cli.serve import serve

    return {o for p in serve.params if isinstance(p, click.Option) for o in p.opts}


def check_serve_argv(argv: list[str]) -> None:
    """argv after `edgemed serve`: one BUNDLE argument, every --flag known, values present."""
    known = serve_flags()
    positional = []
    i = 0
    while i < len(argv):
        if argv[i].startswith("--"):
            assert argv[i] in known, f"edgemed serve has no option {argv[i]}"
            assert i + 1 < len(argv) and not argv[i + 1].startswith("--"), argv[i]
            i += 2
        else:
            positional.append(argv[i])
            i += 1
    assert len(positional) == 1 and positional[0].endswith(".bundle"), positional
    assert "--pubkey" in argv


def test_dockerfile_entrypoint_is_edgemed_serve_with_known_flags():
    from edgemed.cli import COMMANDS

    assert json.loads(one("ENTRYPOINT")) == ["edgemed", "serve"]
    assert "serve" in COMMANDS
    cmd = json.loads(one("CMD"))
    check_serve_argv(cmd)
    config = cmd[cmd.index("--config") + 1]
    copies = [shlex.split(rest) for w, rest in instructions() if w == "COPY"]
    assert ["packaging/appliance.toml", config] in copies  # the config it names is in the image


def test_dockerfile_is_cpu_without_torch_and_its_extras_exist():
    assert re.fullmatch(r"python:3\.1[0-3]-slim", one("FROM"))
    runs = " ".join(rest for w, rest in instructions() if w == "RUN")
    extras = pyproject()["project"]["optional-dependencies"]
    groups = re.findall(r"pip install \"\.\[([a-z,]+)\]\"", runs)
    assert groups == ["serve"], groups
    for name in groups[0].split(","):
        assert not [d for d in extras[name] if re.match(r"(torch|tensorrt|nvidia)", d)], name
    assert "'torch' not in sys.modules" in runs and '! python -c "import torch"' in runs
    assert "serve" in re.findall(r"edgemed\[([a-z,]+)\]", " ".join(extras["all"]))[0].split(",")


def test_dockerfile_copies_exist_and_ports_match_the_example_config():
    for word, rest in instructions():
        if word == "COPY":
            for src in shlex.split(rest)[:-1]:
                assert (REPO / src).exists(), src
    cfg = example_config()
    assert set(one("EXPOSE").split()) == {str(cfg.dicom_port), str(cfg.http_port)}


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_unit_runs_edgemed_serve_and_reload_is_sighup():
    svc = unit()["Service"]
    argv = shlex.split(svc["ExecStart"])
    assert argv[0].endswith("/bin/edgemed") and argv[1] == "serve"
    check_serve_argv(argv[2:])
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["KillSignal"] == "SIGTERM" and svc["Restart"] == "always"
    spool = argv[argv.index("--spool") + 1]
    assert spool.startswith("/var/lib/" + svc["StateDirectory"]) and spool.startswith(
        svc["ReadWritePaths"]
    )
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_serve_handles_the_signals_the_unit_and_image_send():
    src = (REPO / "edgemed" / "cli" / "serve.py").read_text()
    for sig in ("SIGHUP", "SIGTERM"):
        assert f"signal.{sig}" in src


def example_config():
    from edgemed.serve.config import build_config

    return build_config(tomllib.loads(EXAMPLE.read_text()), {})


def test_example_config_parses_and_stays_on_loopback():
    cfg = example_config()
    assert cfg.http_bind == cfg.dicom_bind == "127.0.0.1"
    assert cfg.forward and cfg.allowed_aets


@pytest.mark.parametrize("path", [EXAMPLE])
def test_readme_appliance_service_config_is_the_example(path):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Appliance service", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert blocks, "README Appliance service section has no toml block"
    assert tomllib.loads(blocks[0]) == tomllib.loads(path.read_text())


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())
