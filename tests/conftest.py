"""Shared fixtures: real data paths, one small model trained once per session, a CLI runner."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgemed.data.locate import datasets_root, embedded_dataset_path, find_dataset, missing_reason

REPO = Path(__file__).resolve().parents[1]
# The chest X-ray subset ships inside the package, so tests that need only it always run.
CXR = embedded_dataset_path()

os.environ.setdefault("OMP_NUM_THREADS", "2")


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*argv: str) -> CliResult:
    """Run `edgemed ARGV...` in-process through the real entry point (error boundary included)."""
    from edgemed.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


def assert_user_error(res: CliResult, *needles: str) -> None:
    """One clear error line, non-zero exit, no traceback."""
    assert res.code != 0, res
    lines = [ln for ln in res.err.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("edgemed: error:"), res.err
    assert "Traceback" not in res.err
    for needle in needles:
        assert needle.lower() in lines[-1].lower(), (needle, lines[-1])


def tree_snapshot(path: Path) -> dict[str, bytes]:
    """Every file under `path` with its bytes (to prove nothing was written or changed)."""
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def pytest_sessionstart(session) -> None:
    """Say which datasets this run found (also under -q, where pytest hides its own header)."""
    root = datasets_root()
    found = {name: find_dataset(name) for name in ("pneumoniamnist", "brain_mri")}
    listed = ", ".join(f"{n}={'found' if p else 'absent'}" for n, p in found.items())
    line = f"edgemed datasets: root={root or 'none'} ({listed}); chest X-ray tests use {CXR}"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def brain_dir() -> Path:
    """The brain MRI folder set, or a skip naming EDGEMED_DATA when it is absent."""
    path = find_dataset("brain_mri")
    if path is None:
        pytest.skip(missing_reason("brain_mri"))
    return path


def pytest_generate_tests(metafunc):
    # Backend test classes list their precisions as a class attribute; parametrize `precision` by it.
    if "precision" in metafunc.fixturenames and metafunc.cls is not None:
        metafunc.parametrize("precision", list(getattr(metafunc.cls, "precisions", ("fp32",))))


@pytest.fixture(scope="session")
def cxr_model(tmp_path_factory) -> Path:
    """A small CNN trained on the real chest X-ray subset (a few epochs, ~10 s), as a training dir."""
    from edgemed.models import ModelSpec
    from edgemed.pipeline.training import TrainConfig, train, write_training_dir

    out = tmp_path_factory.mktemp("cxr") / "model"
    cfg = TrainConfig(data=str(CXR), model=ModelSpec("cnn", {"width": 0.5}), epochs=4, patience=4)
    write_training_dir(train(cfg), cfg.model, out, force=False)
    return out


@pytest.fixture(scope="session")
def brain_model(brain_dir, tmp_path_factory) -> Path:
    """A small CNN trained on the real brain MRI folder at 64 px (duplicate-aware split)."""
    from edgemed.models import ModelSpec
    from edgemed.pipeline.training import TrainConfig, train, write_training_dir

    out = tmp_path_factory.mktemp("brain") / "model"
    cfg = TrainConfig(
        data=str(brain_dir),
        model=ModelSpec("cnn", {"width": 0.5}),
        epochs=6,
        patience=6,
        image_size=(64, 64),
        batch_size=32,
    )
    write_training_dir(train(cfg), cfg.model, out, force=False)
    return out


@pytest.fixture(scope="session")
def cxr_onnx(cxr_model, tmp_path_factory) -> Path:
    """The chest X-ray model exported to an ONNX FP32 artifact."""
    from edgemed.pipeline.export import ExportRequest, run_export

    out = tmp_path_factory.mktemp("cxr-onnx") / "onnx-fp32"
    run_export(ExportRequest(model=str(cxr_model), target="onnx", out=out))
    return out
