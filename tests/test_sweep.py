"""`edgemed sweep` answers per device, accuracy first, from rows measured on that device.

One real sweep (local executor, the quick grid, 1 epoch, ONNX Runtime + OpenVINO for one x86 box
and LiteRT for an ARM board, FP32 + INT8) run as a user would, in a fresh process; the checks
read its selection.json, its results and its terminal output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgemed.evaluation.drift import Drift
from edgemed.evaluation.limits import BUNDLE_DEFAULTS, limits_from, verdict
from edgemed.profiles import resolve_target
from tests.conftest import CXR, REPO, assert_user_error, run_cli

ENTRY = "import sys; from edgemed.cli import main; main(sys.argv[1:])"
PLAN = """
data = "{data}"
grid = "quick"
epochs = 1
threads = 1
targets = ["x86-edge", "arm64-cpu-tflite"]
precisions = ["fp32", "int8"]
bench_seconds = 0.2
bench_min_runs = 10
"""
ON_X86 = os.uname().machine == "x86_64"


def _sweep(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", ENTRY, "sweep", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    plan = d / "plan.toml"
    plan.write_text(PLAN.format(data=CXR))
    out = d / "out"
    proc = _sweep(str(plan), "--out", str(out))
    return plan, out, proc


@pytest.mark.slow
@pytest.mark.skipif(not ON_X86, reason="the x86 box's rows must be measured on an x86 machine")
def test_one_answer_per_device_accuracy_first(swept):
    _, out, proc = swept
    sel = json.loads((out / "selection.json").read_text())
    rows = json.loads((out / "bench" / "results.json").read_text())["rows"]
    x86 = sel["devices"]["x86-edge"]
    assert x86["profiles"] == ["x86-cpu", "x86-cpu-openvino"]
    assert x86["runtimes"] == ["onnx", "openvino"]
    assert len(x86["candidates"]) == 3 * 2 * 2  # 3 models x 2 runtimes x 2 precisions
    limits = limits_from({}, BUNDLE_DEFAULTS)
    fits = []
    for r in rows:
        p = resolve_target(
            json.loads((Path(r["artifact"]) / "manifest.json").read_text())["target"]
        )
        if p.machine != "x86-edge" or r["status"] != "ok":
            continue
        lat, mem = r["latency"]["median_ms"], r["memory"]["peak_rss_mb"]
        if verdict(limits, Drift.from_dict(r["drift"])).passed and lat <= p.latency_budget_ms:
            fits.append((r["drift"]["auc_candidate"], lat, mem, r["artifact"]))
    best = max(a for a, *_ in fits)
    kept = [f for f in fits if f[0] >= best - 0.005 - 1e-12]
    fastest = min(kept, key=lambda f: f[1])
    assert x86["artifact"] == fastest[3], (x86, kept)
    assert x86["auc"] >= best - x86["rule"]["margin"] - 1e-12
    assert x86["measured"] == "device" and x86["proxy"] is None
    lost = {c["outcome"] for c in x86["candidates"]} - {"chosen"}
    assert lost <= {"drift", "budget", "accuracy", "slower", "failed"}
    assert all(c["reason"] for c in x86["candidates"] if c["outcome"] != "chosen")
    assert sum(c["outcome"] == "chosen" for c in x86["candidates"]) == 1
    assert "Pareto" in (out / "selection.html").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not ON_X86, reason="an ARM profile measured here is a proxy only on non-ARM")
def test_an_arm_answer_is_not_made_from_x86_rows_without_allow_proxy(swept):
    plan, out, proc = swept
    assert proc.returncode == 6, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edgemed: error: no row was measured on arm64-edge"), proc.stderr
    arm = json.loads((out / "selection.json").read_text())["devices"]["arm64-edge"]
    assert arm["artifact"] is None and arm["reason"] == "not measured on arm64-edge"
    assert "arm64-edge: no selection: not measured on arm64-edge" in proc.stdout
    # --allow-proxy: the same rows (resumed, nothing re-run), the proxy named
    again = _sweep(str(plan), "--out", str(out), "--resume", "--allow-proxy")
    assert again.returncode == 0, again.stderr
    arm = json.loads((out / "selection.json").read_text())["devices"]["arm64-edge"]
    assert arm["artifact"] and arm["measured"] == "proxy"
    assert arm["proxy"] and "x86_64" in arm["proxy"][0]
    assert "measured on a PROXY" in again.stdout
    assert "measured on a proxy" in (out / "selection.html").read_text()


@pytest.mark.slow
def test_the_terminal_gets_one_line_per_stage_and_the_log_the_rest(swept):
    _, out, proc = swept
    text = proc.stdout + proc.stderr
    assert "os.fork()" not in text  # no JAX state forked: exports run in fresh processes
    for noise in ("flatbuffer_export", "Statistics collection", "FutureWarning", "I0000"):
        assert noise not in text, noise
    stages = [ln for ln in proc.stderr.splitlines() if ln.startswith("sweep [")]
    assert [s.split(":")[0] for s in stages] == [
        "sweep [1/3] train",
        "sweep [2/3] export",
        "sweep [3/3] bench",
    ], proc.stderr
    log = (out / "sweep.log").read_text()
    assert "study" in log  # our own per-model lines
    # the converters' and quantizers' own output (which lines a converter prints varies)
    assert any(n in log for n in ("flatbuffer_export", "I0000", "Statistics collection")), log
    assert "os.fork()" not in log


@pytest.mark.slow
@pytest.mark.skipif(not ON_X86, reason="needs the x86 box's selection")
def test_bundle_from_a_selection_carries_the_rule_and_candidates(swept, tmp_path):
    _, out, _ = swept
    keys = tmp_path / "keys"
    assert run_cli("keygen", "--out", keys).code == 0
    b = tmp_path / "x86.bundle"
    args = ("bundle", "--selection", out, "--key", keys / "edgemed.key", "--out", b)
    res = run_cli(*args, "--device", "x86-edge")
    assert res.code == 0, res.err
    import tarfile

    with tarfile.open(b) as tar:
        manifest = json.loads(tar.extractfile("bundle-manifest.json").read())
    sel = json.loads((out / "selection.json").read_text())["devices"]["x86-edge"]
    assert manifest["selection"]["device"] == "x86-edge"
    assert manifest["selection"]["chosen"] == sel["label"]
    assert sel["label"].startswith(manifest["model"]["label"] + "@")  # bench label: config@folder
    assert manifest["selection"]["rule"] == {"margin": 0.005, "objective": "latency"}
    assert len(manifest["selection"]["candidates"]) == len(sel["candidates"])
    assert_user_error(run_cli(*args, "--device", "nope", "--force"), "--device 'nope'")
    assert_user_error(
        run_cli(*args, "--device", "x86-edge", "--model", out, "--force"), "drop --model"
    )


def test_select_table_and_device_names_are_checked_before_anything_is_written(tmp_path):
    plan, out = tmp_path / "plan.toml", tmp_path / "sweep"
    base = PLAN.format(data=CXR)
    for text, needle in [
        (base + "[select]\nmargin = -0.1\n", "[select] margin"),
        (base + "[select]\nmargin = true\n", "[select] margin must be a number"),
        (base + '[select]\nobjective = "cheapest"\n', "[select] objective must be one of"),
        (base + "[select]\nmargn = 0.01\n", "unknown [select] keys ['margn']"),
        (base.replace('"x86-edge"', '"no-such-box"'), "unknown target 'no-such-box'"),
    ]:
        plan.write_text(text)
        assert_user_error(run_cli("sweep", plan, "--out", out), needle)
        assert not out.exists()


def test_a_device_name_expands_to_its_profiles_and_profiles_check_device_keys(tmp_path):
    from edgemed.profiles import load_profile
    from edgemed.sweep import load_plan

    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(data=CXR))
    assert load_plan(plan).targets == ("x86-cpu", "x86-cpu-openvino", "arm64-cpu-tflite")
    prof = tmp_path / "p.toml"
    for text, needle in [
        ('runtime = "onnx"\narch = "sparc"\n', "arch must be one of"),
        ('runtime = "onnx"\nmachine = "a b"\n', "machine must be a name"),
        ('runtime = "onnx"\ncpu_flags = ["avx2", "x;y"]\n', "cpu_flags must be a list"),
    ]:
        prof.write_text(text)
        with pytest.raises(Exception, match=needle.replace("[", r"\[")):
            load_profile(prof)
