"""scripts/typecheck_tensorrt.py: edgemed's TensorRT code type-checks against TensorRT 10.13 and 11.

The TensorRT 11 check uses the stub committed under typings/tensorrt11/, so it always runs (mypy is
in the dev extra); the 10.13 check downloads NVIDIA's `tensorrt-stubs` and skips without PyPI.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "typecheck_tensorrt.py"
needs_mypy = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy is not installed (the dev extra)"
)


def _run(generation: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--generation", generation]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@needs_mypy
def test_tensorrt_code_type_checks_against_tensorrt_11():
    res = _run("11")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "TensorRT 11 stub" in res.stdout and "Success: no issues found" in res.stdout


@needs_mypy
def test_tensorrt_code_type_checks_against_tensorrt_10_13():
    res = _run("10")
    if res.returncode == 3:
        pytest.skip(f"tensorrt-stubs could not be downloaded here: {res.stdout.strip()}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "tensorrt-stubs==10.13" in res.stdout and "Success: no issues found" in res.stdout


def test_tensorrt_11_stub_lacks_what_tensorrt_11_removed():
    """The stub must not offer the weak-typing API (else the 11 check proves nothing)."""
    text = (REPO / "typings" / "tensorrt11" / "tensorrt" / "__init__.pyi").read_text()
    stub = "\n".join(line.split("#", 1)[0] for line in text.splitlines())  # code, not comments
    for removed in ("FP16:", "INT8: typing.ClassVar[BuilderFlag]", "OBEY_PRECISION_CONSTRAINTS",
                    "int8_calibrator", "platform_has_fast_fp16", "IInt8"):  # fmt: skip
        assert removed not in stub, removed
    for kept in ("STRONGLY_TYPED", "class EngineInspector", "LayerInformationFormat", "DETAILED"):
        assert kept in stub, kept
