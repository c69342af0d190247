"""Dockerfile.jetson agrees with the package: base image, extras, entry point, commands, options."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOCKERFILE = REPO / "Dockerfile.jetson"


def instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def shell_text() -> str:
    """Everything the image runs: RUN lines and the CMD (exec form unpacked)."""
    parts = []
    for word, rest in instructions():
        if word == "RUN":
            parts.append(rest)
        elif word == "CMD":
            parts.append(" ".join(json.loads(rest)))
    return "\n".join(parts)


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_base_image_is_a_named_jetpack_release():
    args = dict(
        rest.split("=", 1) for word, rest in instructions() if word == "ARG" and "=" in rest
    )
    frm = [rest for word, rest in instructions() if word == "FROM"]
    assert frm == ["nvcr.io/nvidia/l4t-jetpack:${L4T_JETPACK}"]
    assert re.fullmatch(r"r36\.\d+\.\d+", args["L4T_JETPACK"])  # JetPack 6 (L4T r36.x)
    assert "JetPack 6.1" in DOCKERFILE.read_text() and "TensorRT 10.3" in DOCKERFILE.read_text()
    assert args["L4T_JETPACK"] == "r36.4.0"  # JetPack 6.1 (TensorRT 11 does not support JetPack)
    from edgemed.profiles import resolve_target

    for name in ("jetson-orin-nano", "jetson-agx-orin"):  # the profiles the image builds for
        assert (
            resolve_target(name).tensorrt_major == (10,) and resolve_target(name).jetpack == "6.1"
        )


def test_tensorrt_comes_from_the_image_and_extras_exist():
    text = shell_text()
    assert "import tensorrt" in text and "python3-libnvinfer" in text
    installs = re.findall(r"pip install [^&]*?\"\.\[([a-z,]+)\]\"", text)
    assert installs, "edgemed is not installed from the source tree"
    extras = pyproject()["project"]["optional-dependencies"]
    for group in installs:
        for name in group.split(","):
            assert name in extras, f"extra {name} missing from pyproject"
            heavy = [d for d in extras[name] if re.match(r"(torch|tensorrt)\b", d)]
            assert not heavy, f"extra {name} pulls {heavy} (x86 torch pin / placeholder wheels)"
    assert not re.search(r"pip install[^\n]*\btensorrt\b", text)  # never the placeholder wheels


def test_copied_sources_exist_and_profiles_are_found():
    for word, rest in instructions():
        if word == "COPY":
            for src in shlex.split(rest)[:-1]:
                assert (REPO / src).exists(), src
    env = " ".join(rest for word, rest in instructions() if word == "ENV")
    assert "EDGEMED_TARGETS=/opt/edgemed/targets" in env


def test_commands_and_options_exist_in_the_cli():
    import click

    from edgemed.cli import COMMANDS, LazyGroup, cli

    scripts = pyproject()["project"]["scripts"]
    assert scripts["edgemed"] == "edgemed.cli:main"
    used = re.findall(r"\bedgemed ([a-z-]+)((?: [^&;]*)?)", shell_text())
    assert {"build-engine", "bench"} <= {cmd for cmd, _ in used}
    ctx = click.Context(cli)
    for cmd, rest in used:
        if cmd.startswith("-"):
            continue
        assert cmd in COMMANDS, f"edgemed {cmd} is not a command"
        command = LazyGroup.get_command(cli, ctx, cmd)
        known = {opt for p in command.params for opt in getattr(p, "opts", [])}
        for flag in re.findall(r"(--[a-z-]+)", rest):
            assert flag in known, f"edgemed {cmd} has no option {flag}"


@pytest.mark.parametrize("flag", ["--version"])
def test_build_step_commands_run_here(flag):
    from tests.conftest import run_cli

    assert f"edgemed {flag}" in shell_text()
    assert run_cli(flag).code == 0
