"""Race-free outputs and interruptions that leave nothing: atomic --out claims, --force swaps,
SIGTERM like Ctrl-C, the bench worker dying with its parent, stale partials of dead processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgemed.errors import InputError
from edgemed.fileio import staged_dir
from tests.conftest import CXR, REPO

ENTRY = "import sys; from edgemed.cli import main; main(sys.argv[1:])"


def edgemed(*argv, env_extra: dict | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-c", ENTRY, *map(str, argv)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def partials(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".partial"))


def test_two_writers_to_one_out_exactly_one_wins(tmp_path):
    out = tmp_path / "o"
    a_ctx, b_ctx = staged_dir(out, force=False), staged_dir(out, force=False)
    a, b = a_ctx.__enter__(), b_ctx.__enter__()  # both pass the early existence check
    (a / "who").write_text("a")
    (b / "who").write_text("b")
    a_ctx.__exit__(None, None, None)  # a publishes first ...
    with pytest.raises(InputError, match="already exists"):
        b_ctx.__exit__(None, None, None)  # ... b is refused, not silently replacing a
    assert (out / "who").read_text() == "a"
    assert partials(tmp_path) == []


def test_force_replacement_swaps_atomically_and_cleans_up(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "old").write_text("old")
    with staged_dir(out, force=True) as tmp:
        (tmp / "new").write_text("new")
        assert (out / "old").exists()  # the old output stays until the new one is complete
    assert sorted(p.name for p in out.iterdir()) == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["o"]


def test_concurrent_exports_to_one_out(cxr_model, tmp_path):
    out = tmp_path / "o"
    procs = [
        edgemed("export", "--model", cxr_model, "--target", "onnx", "--out", out) for _ in "ab"
    ]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    lines = [ln for ln in loser.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("edgemed: error:") and "already exists" in lines[-1]
    assert "Traceback" not in loser
    assert (out / "manifest.json").is_file() and partials(tmp_path) == []


def test_stale_partials_of_dead_processes_are_removed_live_ones_kept(cxr_model, tmp_path):
    dead = tmp_path / f".o.{dead_pid()}-abcd.partial"
    live = tmp_path / f".o.{os.getppid()}-efgh.partial"
    for d in (dead, live):
        d.mkdir()
        (d / "model.onnx").write_bytes(b"x" * 100)
    p = edgemed("export", "--model", cxr_model, "--target", "onnx", "--out", tmp_path / "o")
    assert p.wait(timeout=600) == 0, p.stderr.read()
    assert partials(tmp_path) == [live.name]


def _wait_for(cond, timeout: float = 120.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_sigterm_is_handled_like_ctrl_c(cxr_model, tmp_path):
    p = edgemed("export", "--model", cxr_model, "--target", "onnx", "--out", tmp_path / "o")
    assert _wait_for(lambda: partials(tmp_path) or p.poll() is not None)
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=120)
    err = p.stderr.read()
    if rc == 0:
        pytest.skip("the export finished before SIGTERM arrived")
    assert rc == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert partials(tmp_path) == [] and not (tmp_path / "o").exists()


def _workers(marker: str) -> list[tuple[int, str]]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "edgemed.harness.worker" in cmd and marker in cmd:
                pids.append((int(d.name), cmd))
    return pids


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_bench_worker_dies_with_its_parent(cxr_onnx, tmp_path, monkeypatch, how):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = edgemed(
        "bench", cxr_onnx, "--data", CXR, "--out", tmp_path / "b", "--seconds", "0.05",
        "--min-runs", "3",
        env_extra={"TMPDIR": str(tmp), "EDGEMED_BENCH_FAULT": f"hang:{cxr_onnx.name}"},
    )  # fmt: skip

    def row_workers() -> list[int]:  # the artifact's worker (the reference one runs first)
        return [w for w, cmd in _workers(str(tmp)) if "/ref-" not in cmd]

    assert _wait_for(lambda: row_workers() or p.poll() is not None)
    assert row_workers(), p.stderr.read()
    p.send_signal(getattr(signal, how))
    p.wait(timeout=60)
    assert _wait_for(lambda: not _workers(str(tmp)), 30), "the worker outlived its parent"
    left = sorted(x.name for x in tmp.glob("edgemed-bench-*"))
    if how == "SIGTERM":
        assert p.returncode == 130 and left == []
        assert "--resume to continue" in p.stderr.read()
        return
    assert len(left) == 1  # kill -9 runs no cleanup; the next start removes the dead run's dir
    import tempfile

    from edgemed.fileio import private_tempdir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    mine = private_tempdir("edgemed-bench-")
    assert sorted(x.name for x in tmp.glob("edgemed-bench-*")) == [mine.name]
