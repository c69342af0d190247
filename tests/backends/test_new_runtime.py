"""A new runtime = its package + one registration + one test class: `plain_runtime.py` (ONNX
Runtime with graph optimizations off, a runtime edgemed does not ship) is registered in a
temporary registry and nothing else is edited; export, bench, sweep and profiles take it.

Bench runs each row in a fresh worker process, so the temporary registration is installed in
the processes this test starts too (a `sitecustomize` on their PYTHONPATH, test code only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgemed.runtimes import RUNTIMES
from tests.backends.plain_runtime import NAME, REGISTRATION
from tests.backends.template import BackendTemplate
from tests.conftest import CXR, assert_user_error, run_cli

REPO = Path(__file__).resolve().parents[2]
SITE = """from edgemed.runtimes import RUNTIMES
from tests.backends.plain_runtime import NAME, REGISTRATION

RUNTIMES[NAME] = REGISTRATION
"""


@pytest.fixture(autouse=True, scope="module")
def registered(tmp_path_factory):
    """The plain runtime in the registry (this process and the ones it starts), then removed."""
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(SITE)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(site), str(REPO), old)))
    RUNTIMES[NAME] = REGISTRATION
    yield
    del RUNTIMES[NAME]
    if old is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old


class TestPlainOrt(BackendTemplate):
    backend = NAME
    precisions = ("fp32",)


def test_profiles_take_the_new_runtime(tmp_path):
    from edgemed.profiles import load_profile, resolve_target

    assert resolve_target(NAME).runtime == NAME
    f = tmp_path / "edge-box.toml"
    f.write_text(f'runtime = "{NAME}"\nthreads = 2\n')
    assert load_profile(f).threads == 2
    f.write_text(f'runtime = "{NAME}"\ndevice = "gpu"\n')
    with pytest.raises(Exception, match=f"{NAME} needs device 'cpu'"):
        load_profile(f)
    f.write_text(f'runtime = "{NAME}"\ndla_core = 0\n')  # another runtime's key
    with pytest.raises(Exception, match="dla_core applies only to the tensorrt runtime"):
        load_profile(f)


def test_export_takes_an_onnx_source_and_refuses_other_precisions(cxr_onnx, tmp_path):
    src = cxr_onnx / "model.onnx"
    out = tmp_path / "from-onnx"
    res = run_cli("export", "--model", src, "--data", CXR, "--target", NAME, "--out", out)
    assert res.code == 0, res.err
    m = json.loads((out / "manifest.json").read_text())
    assert m["runtime"] == NAME and m["drift"]["flips"] == 0 and m["drift"]["n"] > 0
    assert "onnxruntime" in m["provenance"]["runtimes"]
    res = run_cli(
        "export", "--model", src, "--data", CXR, "--target", NAME, "--precision", "int8",
        "--calib", CXR, "--out", tmp_path / "int8",
    )  # fmt: skip
    assert_user_error(res, f"target {NAME} does not allow precision 'int8'", "it allows fp32")


def test_bench_runs_the_new_runtime_in_its_worker(cxr_onnx, tmp_path):
    art = tmp_path / "plain"
    assert run_cli("export", "--model", cxr_onnx / "model.onnx", "--data", CXR, "--target", NAME,
                   "--out", art).code == 0  # fmt: skip
    out = tmp_path / "bench"
    fast = ("--seconds", "0.2", "--min-runs", "20")
    res = run_cli("bench", art, "--data", CXR, *fast, "--out", out)
    assert res.code == 0, res.err
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert row["status"] == "ok" and row["runtime"] == NAME, row
    assert row["runtime_settings"]["graph_optimization"] == "disabled"
    assert row["drift"]["flips"] == 0


def test_sweep_exports_the_new_runtime_here(cxr_model, tmp_path):
    """Not built on a device (`builds_on_device` False): the export job runs on any worker."""
    from edgemed.executors import ExecutorSpec
    from edgemed.sweep import SweepPlan
    from edgemed.sweep.run import export_stage

    plan = SweepPlan(data=str(CXR), targets=(NAME, "onnx"), precisions=("fp32", "int8"))
    assert plan.pairs() == [(NAME, "fp32"), ("onnx", "fp32"), ("onnx", "int8")]
    plan = SweepPlan(data=str(CXR), targets=(NAME,), precisions=("fp32",))
    models = {cxr_model.name: cxr_model}  # a model travels as its directory, named by its key
    arts, failed = export_stage(plan, tmp_path, ExecutorSpec("local"), models)
    assert not failed and [a.name for a in arts] == [f"{cxr_model.name}-{NAME}-fp32"]
    assert json.loads((arts[0] / "manifest.json").read_text())["runtime"] == NAME
