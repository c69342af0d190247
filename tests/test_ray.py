"""`--executor ray` on a real Ray cluster started here, on 127.0.0.1 only: a head node offering
target profile `onnx` and a worker node offering `x86-cpu` (ray.cluster_utils.Cluster: real
GCS, raylets and worker processes, one per node). Bench rows run only on the node offering their
artifact's target, with the same drift numbers as a local run; a study grid gives the same AUCs
as a local one; a worker node killed mid-run leaves a resumable directory, and the resumed run
(once a node offers the target again) gives the rows a local run gives."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import CXR, REPO, assert_user_error, run_cli

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAVE_RAY, reason="Ray is not installed (pip install 'edgemed[cluster]')"
)
# Loopback only: without this Ray replaces 127.0.0.1 by the host's routable address and its
# servers listen on every interface. One token for the cluster, nothing written under ~/.ray.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(16),
}
BENCH = ["--data", CXR, "--seconds", "0.2", "--min-runs", "10"]
QUICK = ["--quick", "--epochs", "1", "--latency-seconds", "0.2", "--threads", "1"]
FAULT_ENV = "EDGEMED_BENCH_FAULT"


@pytest.fixture(scope="module")
def cluster():
    """Head (CPU 1, edgemed-target:onnx) + worker node (CPU 1, edgemed-target:x86-cpu)."""
    saved = {k: os.environ.get(k) for k in (*RAY_ENV, "PYTHONPATH", "RAY_TMPDIR")}
    os.environ.update(RAY_ENV)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved["PYTHONPATH"]) if p)
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="emray-", dir="/tmp")  # short: Ray's socket paths
    # Cluster writes its address to <RAY_TMPDIR>/ray/ray_current_cluster and fails where that
    # folder does not exist (a fresh CI machine has no /tmp/ray); keep it inside our temp dir.
    os.environ["RAY_TMPDIR"] = temp
    os.makedirs(os.path.join(temp, "ray"))
    c = Cluster(
        initialize_head=True,
        head_node_args=_node_args({"edgemed-target:onnx": 1}, temp_dir=temp),
    )
    c.add_node(**_node_args({"edgemed-target:x86-cpu": 1}))
    try:
        yield c
    finally:
        c.shutdown()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        subprocess.run(["rm", "-rf", temp], check=False)


def _node_args(resources: dict, **extra) -> dict:
    return {
        "num_cpus": 1,
        "resources": resources,
        "object_store_memory": 80 * 2**20,
        "include_dashboard": False,
        **extra,
    }


def _add_worker(c, fault: str | None = None):
    """A new x86-cpu worker node; `fault` reaches its bench worker processes."""
    if fault:
        os.environ[FAULT_ENV] = fault
    try:
        return c.add_node(**_node_args({"edgemed-target:x86-cpu": 1}))
    finally:
        os.environ.pop(FAULT_ENV, None)


def _x86_node(c):
    return next(iter(c.worker_nodes))


@pytest.fixture(scope="module")
def artifacts(cxr_model, tmp_path_factory) -> dict[str, Path]:
    """Two ONNX Runtime artifacts for profile `onnx` (FP32, INT8) and one for `x86-cpu`."""
    from edgemed.pipeline.export import ExportRequest, run_export

    root = tmp_path_factory.mktemp("ray-art")
    specs = {
        "onnx-fp32": ("onnx", "fp32"),
        "onnx-int8": ("onnx", "int8"),
        "x86": ("x86-cpu", "fp32"),
    }
    out = {}
    for name, (target, precision) in specs.items():
        calib = str(CXR) if precision == "int8" else None
        req = ExportRequest(
            model=str(cxr_model), target=target, out=root / name, precision=precision, calib=calib
        )
        run_export(req)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def local_rows(artifacts, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("ray-local") / "bench"
    res = run_cli("bench", *artifacts.values(), *BENCH, "--out", out)
    assert res.code == 0, res.err
    return _rows(out)


def _rows(out: Path) -> dict[str, dict]:
    return {
        Path(r["artifact"]).name: r for r in json.loads((out / "results.json").read_text())["rows"]
    }


def _same_measurements(a: dict, b: dict) -> None:
    """Accuracy and drift are deterministic (same artifact, same data); latency is not."""
    for key in (
        "auc_candidate",
        "auc_reference",
        "auc_drop",
        "flips",
        "sensitivity",
        "specificity",
    ):
        assert a["drift"][key] == b["drift"][key], key


@needs_ray
def test_bench_rows_run_only_on_the_node_offering_their_target(
    cluster, artifacts, local_rows, tmp_path
):
    out = tmp_path / "bench"
    res = run_cli(
        "bench", *artifacts.values(), *BENCH, "--executor", f"ray:{cluster.address}", "--out", out
    )
    assert res.code == 0, res.err
    rows = _rows(out)
    head, x86 = cluster.head_node.node_id, _x86_node(cluster).node_id
    assert head != x86
    where = {name: (r["node"]["node_id"], r["node"]["target"]) for name, r in rows.items()}
    assert where == {
        "onnx-fp32": (head, "onnx"),
        "onnx-int8": (head, "onnx"),
        "x86": (x86, "x86-cpu"),
    }
    for name, row in rows.items():
        assert row["status"] == "ok" and row["latency"]["median_ms"] > 0
        assert row["artifact"] == str(artifacts[name].resolve())
        _same_measurements(row, local_rows[name])
    assert "device" in res.out and "x86-cpu@" in res.out
    assert "<th>device</th>" in (out / "report.html").read_text()


@needs_ray
def test_study_grid_on_the_cluster_gives_the_local_aucs(cluster, tmp_path):
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    res = run_cli(
        "study", "--data", CXR, *QUICK, "--executor", f"ray:{cluster.address}", "--out", ray_out
    )
    assert res.code == 0, res.err
    assert run_cli("study", "--data", CXR, *QUICK, "--out", local_out).code == 0
    on_ray = json.loads((ray_out / "study.json").read_text())["rows"]
    local = json.loads((local_out / "study.json").read_text())["rows"]
    assert [r["name"] for r in on_ray] == [r["name"] for r in local]
    nodes = {cluster.head_node.node_id, _x86_node(cluster).node_id}
    for a, b in zip(on_ray, local, strict=True):
        assert (a["test_auc"], a["artifact_test_auc"]) == (b["test_auc"], b["artifact_test_auc"])
        assert a["node"]["node_id"] in nodes
        for folder in (f"models/{a['name']}", f"artifacts/{a['name']}-onnx-int8"):
            assert (ray_out / folder).is_dir()


PLAN = """
data = "{data}"
grid = "quick"
epochs = 1
threads = 1
targets = ["onnx", "x86-cpu"]
precisions = ["fp32", "int8"]
bench_seconds = 0.2
bench_min_runs = 10
"""


@needs_ray
def test_sweep_picks_per_device_the_most_accurate_then_fastest_measured_there(cluster, tmp_path):
    from edgemed.evaluation.drift import Drift
    from edgemed.evaluation.limits import BUNDLE_DEFAULTS, limits_from, verdict

    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(data=CXR))
    out = tmp_path / "sweep"
    res = run_cli("sweep", plan, "--executor", f"ray:{cluster.address}", "--out", out)
    assert res.code == 0, res.err
    assert len(list((out / "artifacts").iterdir())) == 3 * 2 * 2
    selection = json.loads((out / "selection.json").read_text())
    rows = json.loads((out / "bench" / "results.json").read_text())["rows"]
    limits = limits_from({}, BUNDLE_DEFAULTS)
    nodes = {"onnx": cluster.head_node.node_id, "x86-cpu": _x86_node(cluster).node_id}
    # x86-cpu names machine "x86-edge"; the generic onnx profile is a device of its own
    for (target, node_id), device in zip(nodes.items(), ("onnx", "x86-edge"), strict=True):
        mine = [r for r in rows if r["node"]["target"] == target]
        assert len(mine) == 6 and {r["node"]["node_id"] for r in mine} == {node_id}
        assert all(r["node"]["machine"] and "flags" in r["node"]["cpu"] for r in mine)
        passing = [r for r in mine if verdict(limits, Drift.from_dict(r["drift"])).passed]
        pick = selection["devices"][device]
        assert len(pick["candidates"]) == 6
        if not passing:
            assert pick["artifact"] is None
            continue
        best = max(r["drift"]["auc_candidate"] for r in passing)
        kept = [r for r in passing if r["drift"]["auc_candidate"] >= best - 0.005 - 1e-12]
        fastest = min(kept, key=lambda r: r["latency"]["median_ms"])
        assert pick["artifact"] == fastest["artifact"] and pick["measured"] == "device"
        assert f"{device}: {fastest['label']}" in res.out


def _wait_rows(path: Path, n: int, proc: subprocess.Popen, limit: float = 180.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        lines = path.read_text().splitlines() if path.is_file() else []
        if len(lines) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    pytest.fail(f"{path} did not get {n} rows in {limit} s")


X86 = "edgemed-target:x86-cpu"


def _x86_free(c) -> float:
    return c.global_state.available_resources().get(X86, 0)


def _wait_until(check, proc: subprocess.Popen | None = None, limit: float = 120.0) -> None:
    t0 = time.monotonic()
    while not check():
        assert proc is None or proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < limit, "timed out"
        time.sleep(0.5)


def _communicate(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """proc.communicate, but a process that does not end is killed and its stderr shown."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        pytest.fail(
            f"bench did not end within {timeout} s (this process: SIGINT handler "
            f"{signal.getsignal(signal.SIGINT)}, blocked {sorted(mask)}); its stderr:\n{err[-3000:]}"
        )


def _bench_proc(argv: list[str], out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from edgemed.cli import main; main()", "bench", *argv]
    return subprocess.Popen(
        [*cmd, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    """A child sees Ctrl-C as a terminal user's process would. Ignored and blocked signals are
    inherited across exec; twice in whole-suite runs (never alone) this test's SIGINT went
    unanswered for 120 s, so the child starts with SIGINT unblocked and at its default."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@needs_ray
def test_ctrl_c_and_a_dead_worker_node_leave_a_resumable_dir(
    cluster, artifacts, local_rows, tmp_path
):
    cluster.remove_node(_x86_node(cluster))
    hung = _add_worker(cluster, fault=f"hang:{artifacts['x86'].name}")  # the x86 row never ends
    out, jsonl = tmp_path / "bench", tmp_path / "bench" / "results.jsonl"
    argv = [*map(str, artifacts.values()), *BENCH, "--executor", f"ray:{cluster.address}"]
    proc = _bench_proc(argv, out)
    _wait_rows(jsonl, 2, proc)  # the two onnx rows, on the head
    _wait_until(lambda: _x86_free(cluster) == 0, proc)  # the x86 row holds its device
    proc.send_signal(signal.SIGINT)
    _, err = _communicate(proc, 120)
    assert proc.returncode == 130 and not (out / "results.json").exists(), err
    assert "--resume to continue" in err
    _wait_until(lambda: _x86_free(cluster) == 1)  # its task was cancelled: the device is free

    proc = _bench_proc([*argv, "--resume"], out)
    _wait_until(lambda: _x86_free(cluster) == 0, proc)
    cluster.remove_node(hung, allow_graceful=False)  # the device dies mid-row
    _, err = _communicate(proc, 180)
    assert proc.returncode != 0
    assert "1 bench rows did not finish" in err and "--resume" in err and "Traceback" not in err
    assert not (out / "results.json").exists()
    kept = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted(Path(r["artifact"]).name for r in kept) == ["onnx-fp32", "onnx-int8"]

    res = run_cli("bench", *argv, "--resume", "--out", out)  # no node offers x86-cpu now
    assert_user_error(res, "no node of the Ray cluster offers target x86-cpu", "offered: onnx")

    back = _add_worker(cluster)
    res = run_cli("bench", *argv, "--resume", "--out", out)
    assert res.code == 0, res.err
    rows = _rows(out)
    assert rows["x86"]["node"]["node_id"] == back.node_id
    for name, row in rows.items():
        _same_measurements(row, local_rows[name])
    before = {Path(r["artifact"]).name: r["latency"] for r in kept}
    assert {n: rows[n]["latency"] for n in before} == before  # finished rows were not re-run


def test_without_ray_the_error_names_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "from edgemed.cli import main; main(sys.argv[1:])"
    )
    out = tmp_path / "s"
    argv = ["study", "--data", str(CXR), "--quick", "--executor", "ray", "--out", str(out)]
    res = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 3, res.stderr
    assert res.stderr.strip().splitlines() == [
        "edgemed: error: --executor ray needs Ray, which is not installed here: "
        "pip install 'edgemed[cluster]'"
    ]
    assert not out.exists() and not Path(str(out) + ".partial").exists()


def test_fleet_join_prints_the_ray_start_command():
    res = run_cli("fleet", "join", "--target", "jetson-orin-nano", "--address", "10.0.0.5:6379")
    assert res.code == 0, res.err
    assert res.out.strip() == (
        "ray start --address=10.0.0.5:6379 '--resources={\"edgemed-target:jetson-orin-nano\": 1}'"
    )
    assert_user_error(
        run_cli("fleet", "join", "--target", "nope", "--address", "h:1"), "unknown target 'nope'"
    )
    res = run_cli("study", "--data", CXR, "--quick", "--executor", "slurm", "--out", "x")
    assert_user_error(res, "unknown executor 'slurm'")


def test_a_bad_sweep_plan_is_refused_before_anything_is_written(tmp_path):
    plan, out = tmp_path / "plan.toml", tmp_path / "sweep"
    base = PLAN.format(data=CXR)
    for text, needle in [
        (base + 'import = "os"\n', "unknown keys ['import']"),
        (base.replace('"x86-cpu"', '"nope"'), "unknown target 'nope'"),
        (base + "[gate]\nmax_auc_dorp = 0.1\n", "unknown gate ['max_auc_dorp']"),
        (base.replace('grid = "quick"', 'grid = "huge"'), "grid must be one of"),
    ]:
        plan.write_text(text)
        assert_user_error(run_cli("sweep", plan, "--out", out), needle)
        assert not out.exists()
