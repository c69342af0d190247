"""`edgemed serve` on a failing machine and a hostile network, without a PACS: a real full or
read-only disk under the spool (a small tmpfs mounted by the test), truncated and stalled HTTP
uploads, idle connections, oversized and malformed DICOM, ports in use."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.bundle_support import cxr_bundle_for, keypair
from tests.serve_support import (
    LOOPBACK,
    cxr_dicoms,
    http_post,
    in_process,
    readyz,
    send,
    sop_uid,
    stow_body,
    wait_for,
)

OUT_OF_RESOURCES = 0xA700


@pytest.fixture(scope="module")
def cxr_bundle(cxr_onnx, tmp_path_factory) -> Path:
    return cxr_bundle_for(cxr_onnx, tmp_path_factory)


@pytest.fixture(scope="module")
def pubkey(tmp_path_factory) -> Path:
    return keypair(tmp_path_factory)[1]


# ---- a real failing disk ----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a real filesystem that really fills up (ENOSPC) or turns read-only."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {res.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-R", "-l", str(mnt)], check=False)


def _break(disk: Path, how: str) -> None:
    if how == "full":
        with open(disk / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
    else:  # every spool write goes through spool/tmp: make that a read-only bind mount
        tmp = disk / "spool" / "tmp"
        subprocess.run(["mount", "--bind", str(tmp), str(tmp)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(tmp)], check=True)


def _repair(disk: Path, how: str) -> None:
    if how == "full":
        (disk / "filler").unlink()
    else:
        subprocess.run(["umount", str(disk / "spool" / "tmp")], check=True)


@pytest.mark.parametrize("how", ["full", "readonly"])
def test_a_failing_spool_disk_refuses_intake_keeps_workers_and_loses_nothing(
    tmp_path, small_disk, cxr_bundle, pubkey, how
):
    from edgemed.serve.audit import verify_log

    svc = in_process(tmp_path, cxr_bundle, pubkey, 0, spool=str(small_disk / "spool"))
    try:
        first, second = cxr_dicoms(tmp_path / "in", 2)
        # Hold inference so the first instance is acknowledged before the disk fails under it
        # (the worker's SR and result writes are what fail).
        svc._infer_lock.acquire()
        assert send([first], svc.dicom_port) == {sop_uid(first): 0}
        _break(small_disk, how)
        svc._infer_lock.release()
        wait_for(lambda: readyz(svc.http_port)[0] == 503, 20, "/readyz to report the spool")
        reason = readyz(svc.http_port)[1]["reason"]
        assert "spool write failed" in reason, reason
        assert send([second], svc.dicom_port) == {sop_uid(second): OUT_OF_RESOURCES}
        body, ctype = stow_body([second.read_bytes()])
        code, resp = http_post(f"http://{LOOPBACK}:{svc.http_port}/studies", body, ctype)
        assert code == 503, resp
        assert all(t.is_alive() for t in svc._workers)
        assert svc.result(sop_uid(first)) is None and svc.spool.seen(sop_uid(first))
        _repair(small_disk, how)
        wait_for(lambda: readyz(svc.http_port)[0] == 200, 20, "/readyz to recover")
        wait_for(lambda: svc.result(sop_uid(first)), 30, "the held instance's result")
        assert send([second], svc.dicom_port) == {sop_uid(second): 0}
        wait_for(lambda: svc.result(sop_uid(second)), 30, "the result after recovery")
        counts = svc.metrics.snapshot()
        assert counts["spool_write_errors"] >= 1 and counts["failed"] == 0
        assert counts["received"] == 2 and counts["done"] == 2
    finally:
        svc.stop()
    report = verify_log(small_disk / "spool" / "audit.jsonl")  # no half line from the full disk
    assert report.events["processed"] == 2
