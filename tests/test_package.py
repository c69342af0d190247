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
    assert set(core) == {"click", "numpy", "onnx", "onnxruntime", "pillow", "tomli"}
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


# Imports that are guarded and come from outside PyPI's CPU wheels: TensorRT (JetPack / NVIDIA's
# image), tflite_runtime (the ARM fallback for ai-edge-litert), MONAI (an optional extra baseline).
NOT_PIP_HERE = {"tensorrt", "tflite_runtime", "monai"}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module name -> files that import it, over the package, tests and benchmarks."""
    import ast

    local = {"edgemed", "tests", "benchmarks"}
    found: dict[str, set[str]] = {}
    for base in ("edgemed", "tests", "benchmarks", "scripts"):
        for path in (REPO / base).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _declared_distributions() -> set[str]:
    from packaging.requirements import Requirement

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        reqs += [r for r in extra if not r.startswith("edgemed[")]
    return {Requirement(r).name.lower().replace("_", "-") for r in reqs}


def test_every_imported_package_is_declared_in_pyproject():
    """A module imported anywhere must come from a distribution that pyproject.toml names, so a
    fresh environment built from it (as .ci/run does) has it: nothing installed by hand counts."""
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    declared = _declared_distributions()
    missing = {}
    for module, files in sorted(_third_party_imports().items()):
        if module in NOT_PIP_HERE:
            continue
        owners = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        if not owners & declared:
            missing[module] = (sorted(owners) or ["not installed"], sorted(files)[:3])
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
