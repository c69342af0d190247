"""Packaging: cheap import, CLI help without heavy runtimes, torch requirement accepts 2.13."""

from __future__ import annotations

import subprocess
import sys

import tomllib

from tests.conftest import REPO

HEAVY = ("torch", "tensorflow", "openvino", "tensorrt", "nncf", "ai_edge_litert", "onnxruntime")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return set(out.stdout.split())


def test_import_edgemed_imports_no_heavy_runtime():
    mods = _modules_after("import edgemed")
    assert not [m for m in HEAVY if m in mods]


def test_cli_help_imports_no_heavy_runtime():
    code = (
        "import sys\nfrom edgemed.cli import cli\n"
        "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "for name in cli.list_commands(None):\n    cli.get_command(None, name)"
    )
    mods = _modules_after(code)
    assert not [m for m in HEAVY if m in mods], [m for m in HEAVY if m in mods]


def test_console_script_help_runs():
    out = subprocess.run(["edgemed", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0
    for cmd in ("train", "export"):
        assert cmd in out.stdout


def test_torch_requirement_accepts_2_13():
    from packaging.requirements import Requirement

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = meta["project"]["optional-dependencies"]
    torch_req = next(Requirement(r) for r in extras["torch"] if r.startswith("torch"))
    assert torch_req.specifier.contains("2.13.0")
    assert not torch_req.specifier.contains("2.14.0"), (
        "a newer torch would pull a multi-GB CUDA build"
    )
    core = [Requirement(r).name for r in meta["project"]["dependencies"]]
    assert set(core) == {"click", "numpy", "onnx", "onnxruntime", "pillow"}
    assert meta["project"]["scripts"]["edgemed"] == "edgemed.cli:main"


def test_installed_wheel_ships_the_target_profiles(tmp_path):
    """A non-editable install (no repo next to it) still resolves every profile in targets/."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", tmp_path / "w"],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "w").glob("edgemed-*.whl"))
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, wheel],
        check=True,
        capture_output=True,
    )
    code = (
        "import edgemed.profiles as p; assert 'site' in p.__file__, p.__file__; "
        "print(p.targets_dir()); print(' '.join(p.known_profiles()))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    where, names = out.stdout.splitlines()
    assert where.startswith(str(site))
    shipped = {p.stem for p in (REPO / "targets").glob("*.toml")}
    assert set(names.split()) == shipped
