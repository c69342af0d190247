"""Errors this machine causes (full disk, permission, out of memory) become one line naming the
path or the limit, exit code 5 (edgemed.errors.EnvironmentProblem)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from edgemed.errors import EnvironmentProblem, environment_problem
from edgemed.fileio import writing
from tests.conftest import REPO


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_full_disk_names_the_path():
    target = Path("/dev/full")  # every write fails with a real ENOSPC
    match = "/dev/full: no space left on the device"
    with (
        pytest.raises(EnvironmentProblem, match=match),
        writing(target),
        open(target, "wb", buffering=0) as f,
    ):
        f.write(b"x" * 4096)


def test_memory_error_names_the_limit():
    problem = environment_problem(MemoryError(), "train.npz")
    assert problem.exit_code == 5
    assert "out of memory while working on train.npz" in str(problem)
    assert "RAM" in str(problem) or "ulimit" in str(problem)


def test_bugs_are_not_disguised_as_environment_errors():
    assert environment_problem(FileNotFoundError(2, "No such file", "x")) is None
    assert environment_problem(ValueError("bug")) is None


def test_out_of_memory_under_ulimit_is_one_line(cxr_onnx, tmp_path):
    """The real CLI under `ulimit -v`: a genuine 20000x20000 image allowed by --max-pixels needs
    400 MB to decode; the MemoryError is one line naming the limit, exit 5, no traceback."""
    import numpy as np

    from tests.bundle_support import write_png
    from tests.test_bad_input import png_claiming

    data = tmp_path / "data"
    for cls in "ab":
        (data / cls).mkdir(parents=True)
        for i in range(3):
            write_png(
                data / cls / f"{i}.png",
                np.random.default_rng(i).integers(0, 255, (28, 28), np.uint8),
            )
    png_claiming(data / "b" / "huge.png", 20000, 20000)
    code = (
        "import resource, sys\n"
        "from edgemed.cli import main\n"
        "resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))\n"
        "main(sys.argv[1:])\n"
    )
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft < 400 << 20:
        pytest.skip("already under a smaller address-space limit")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "o"
    args = [
        "bench",
        str(cxr_onnx),
        "--data",
        str(data),
        "--max-pixels",
        "500000000",
        "--out",
        str(out),
    ]
    res = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 5, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("edgemed: error: out of memory") and "ulimit -v" in lines[-1]
    assert "Traceback" not in res.stderr
    assert not out.exists()
