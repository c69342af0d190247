"""`edgemed serve` on a failing machine and a hostile network, without a PACS: a real full or
read-only disk under the spool (a small tmpfs mounted by the test), truncated and stalled HTTP
uploads, idle connections, oversized and malformed DICOM, ports in use."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
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
STORESCU = "/usr/bin/storescu"  # DCMTK's (pynetdicom installs a Python `storescu` too)
needs_dcmtk = pytest.mark.skipif(
    not Path(STORESCU).exists(), reason="DCMTK is not installed (scripts/system-packages.txt)"
)
needs_curl = pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed (scripts/system-packages.txt)"
)


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
        with open(disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:  # unbuffered: the ENOSPC comes from a write, never from close()
                f.write(b"\0" * 65536)
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


# ---- HTTP: truncated, stalled and idle connections ---------------------------------------------


def _raw_post(port: int, path: str, body: bytes, ctype: str, declared: int | None = None):
    """A socket that sent a POST's headers (with `declared` as Content-Length) and `body`."""
    s = socket.create_connection((LOOPBACK, port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body) if declared is None else declared}\r\n\r\n"
    )
    s.sendall(head.encode() + body)
    return s


def _read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_a_short_stow_body_is_a_400_and_the_complete_retry_is_stored(tmp_path, cxr_bundle, pubkey):
    svc = in_process(tmp_path, cxr_bundle, pubkey, 0)
    try:
        path = cxr_dicoms(tmp_path / "in", 1)[0]
        body, ctype = stow_body([path.read_bytes()])
        s = _raw_post(svc.http_port, "/studies", body[:-200], ctype, declared=len(body))
        s.shutdown(socket.SHUT_WR)  # the upload is cut off
        reply = _read_all(s)
        s.close()
        assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
        assert b"nothing stored" in reply
        assert not svc.spool.seen(sop_uid(path)) and not list((svc.spool.root / "tmp").iterdir())
        code, resp = http_post(f"http://{LOOPBACK}:{svc.http_port}/studies", body, ctype)
        assert code == 200, resp
        wait_for(lambda: svc.result(sop_uid(path)), 30, "the result of the complete retry")
        assert svc.metrics.snapshot()["duplicates"] == 0
    finally:
        svc.stop()


def test_stalled_uploads_and_idle_connections_are_closed_and_capped(tmp_path, cxr_bundle, pubkey):
    svc = in_process(tmp_path, cxr_bundle, pubkey, 0, **{"http-timeout": 2.0})
    try:
        time.sleep(0.5)
        idle_threads = threading.active_count()
        t0 = time.monotonic()
        stalled = _raw_post(svc.http_port, "/studies", b"x" * 1024, "x/y", declared=500 << 20)
        idle = []
        for _ in range(100):
            c = socket.create_connection((LOOPBACK, svc.http_port), timeout=30)
            c.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            idle.append(c)
        # Another client address is still served while 127.0.0.1 is at its cap.
        other = socket.create_connection((LOOPBACK, svc.http_port), 10, ("127.0.0.2", 0))
        other.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_all(other).startswith(b"HTTP/1.1 200")
        assert svc.http.active_connections(LOOPBACK) <= 16
        replies = [_read_all(c) for c in [stalled, *idle]]
        elapsed = time.monotonic() - t0
        busy = sum(r.startswith(b"HTTP/1.1 503") for r in replies)
        closed = sum(r == b"" for r in replies)  # closed by the header or body timeout
        # Past the per-client cap a connection is refused at once (how many is timing: a slow
        # accept loop lets an early one time out before a later one arrives).
        assert busy + closed == 101 and busy >= 50 and closed >= 16, (busy, closed)
        assert elapsed < 2.0 + 10, elapsed
        wait_for(lambda: threading.active_count() <= idle_threads, 5, "the idle thread count")
        assert readyz(svc.http_port)[0] == 200
        assert svc.metrics.snapshot()["http_refused"] == busy
        assert not list((svc.spool.root / "tmp").iterdir())  # the stalled upload's part is gone
    finally:
        for c in [stalled, *idle]:
            c.close()
        svc.stop()


# ---- DICOM: oversized, overlong and stalled -----------------------------------------------------


@needs_dcmtk
def test_an_oversized_c_store_is_aborted_while_it_arrives(tmp_path, cxr_bundle, pubkey):
    from tests.serve_support import large_dicom

    svc = in_process(tmp_path, cxr_bundle, pubkey, 0, **{"max-upload-mb": 1})
    try:
        big = large_dicom(tmp_path / "big.dcm")  # 8 MiB of pixel data
        small = cxr_dicoms(tmp_path / "in", 1)[0]
        t0 = time.monotonic()
        res = _storescu(svc.dicom_port, big)
        assert res.returncode != 0 and "Store Failed" in res.stderr, res  # cut off mid-transfer
        assert time.monotonic() - t0 < 10  # not left to the sender's timeout
        assert send([small], svc.dicom_port) == {sop_uid(small): 0}
        assert not svc.spool.seen(sop_uid(big)) and svc.metrics.snapshot()["received"] == 1
    finally:
        svc.stop()


def _storescu(port: int, *paths: Path) -> subprocess.CompletedProcess:
    cmd = [STORESCU, "-v", "-aet", "MODALITY", "-aec", "EDGEMED", LOOPBACK, str(port)]
    return subprocess.run([*cmd, *map(str, paths)], capture_output=True, text=True, timeout=60)


def _overlong_uid_file(tmp_path: Path) -> Path:
    import pydicom

    ds = pydicom.dcmread(cxr_dicoms(tmp_path / "in", 1)[0])
    ds.SOPInstanceUID = "1.2." + "7" * 196
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = tmp_path / "long-uid.dcm"
    with pytest.warns(UserWarning):
        ds.save_as(out)
    return out


def _send_overlong(path: Path, port: int) -> int | None:
    """pynetdicom, told to let the 200-character UID through, puts it in the C-STORE command."""
    from pynetdicom import _config

    from edgemed.serve.dicom_scp import overlong_uids_reach_the_handler

    saved = _config.VALIDATORS["UI"]
    _config.VALIDATORS["UI"] = overlong_uids_reach_the_handler(saved)
    try:
        with pytest.warns(UserWarning):
            return next(iter(send([path], port).values()))
    finally:
        _config.VALIDATORS["UI"] = saved


@needs_dcmtk
def test_a_200_character_uid_is_a_failed_c_store_and_no_traceback(tmp_path, cxr_bundle, pubkey):
    from tests.serve_support import ServeProcess, free_port

    path = _overlong_uid_file(tmp_path)
    dicom_port = free_port()
    args = [str(cxr_bundle), "--pubkey", str(pubkey), "--spool", str(tmp_path / "spool")]
    args += ["--allowed-aets", "MODALITY", "--dicom-port", str(dicom_port)]
    proc = ServeProcess(args, tmp_path / "serve.log", free_port()).start()
    try:
        assert _send_overlong(path, dicom_port) == 0x0117
        # DCMTK's storescu cuts the UID to 64 characters in the command, not in the dataset.
        res = subprocess.run(
            [
                STORESCU,
                "-v",
                "-aet",
                "MODALITY",
                "-aec",
                "EDGEMED",
                LOOPBACK,
                str(dicom_port),
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Received Store Response (Unknown Status: 0x117)" in res.stdout + res.stderr, res
        assert proc.metrics()["edgemed_serve_received_total"] == 0
    finally:
        proc.stop()
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log and log.count("refused") >= 2, log[-3000:]


def test_stalled_associations_are_closed_by_the_timeouts(tmp_path, cxr_bundle, pubkey):
    svc = in_process(tmp_path, cxr_bundle, pubkey, 0, **{"dicom-timeout": 2.0})
    try:
        time.sleep(0.5)
        idle_threads = threading.active_count()
        small = cxr_dicoms(tmp_path / "in", 1)[0]
        stalled = [socket.create_connection((LOOPBACK, svc.dicom_port), 10) for _ in range(100)]
        t0 = time.monotonic()
        # Served meanwhile: while the stalled sockets hold every association slot the service
        # rejects (transient, as a PACS sender expects) until ARTIM frees them; the sender retries.
        got = send([small], svc.dicom_port)
        while got == {"rejected": True} and time.monotonic() - t0 < 10:
            time.sleep(0.2)
            got = send([small], svc.dicom_port)
        assert got == {sop_uid(small): 0}
        served_s = time.monotonic() - t0
        for s in stalled:  # ARTIM: no A-ASSOCIATE-RQ within dicom-timeout -> closed
            s.settimeout(30)
            assert s.recv(1) == b""
        closed_s = time.monotonic() - t0
        wait_for(lambda: threading.active_count() <= idle_threads, 10, "the idle thread count")
        assert served_s < 10 and closed_s < 2.0 + 15, (served_s, closed_s)
    finally:
        for s in stalled:
            s.close()
        svc.stop()


# ---- one line, nothing written ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["--dicom-port", "--http-port"])
def test_a_port_in_use_is_one_line_and_nothing_is_written(tmp_path, cxr_bundle, pubkey, which):
    from tests.conftest import assert_user_error, run_cli
    from tests.serve_support import free_port

    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        busy = holder.getsockname()[1]
        ports = {"--dicom-port": free_port(), "--http-port": free_port(), which: busy}
        spool = tmp_path / "spool"
        args = [cxr_bundle, "--pubkey", pubkey, "--spool", spool, "--allowed-aets", "CT1"]
        res = run_cli("serve", *args, *[x for kv in ports.items() for x in kv])
    assert_user_error(res, "in use", which)
    assert not spool.exists()


# ---- the audit chain anchored by a signed head ------------------------------------------------


def _signed_log(tmp_path: Path, key: Path) -> Path:
    from edgemed.serve.audit import AuditLog
    from edgemed.serve.audit_head import HeadSigner
    from edgemed.signing import load_private_key

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    signer = HeadSigner(log, load_private_key(key), 3600)
    for i in range(6):
        log.append("received", sop_instance_uid=f"1.2.{i}", sha256="ab" * 32)
    signer.close()  # signs the head now, as the service does at shutdown
    log.close()
    return path


def _recompute_from(lines: list[str], start: int) -> list[str]:
    """What an attacker with the box does: fix every hash after an edit."""
    from edgemed.serve.audit import body_hash, line_hash

    out = lines[:start]
    prev = line_hash(out[-1].encode()) if out else "0" * 64
    for line in lines[start:]:
        entry = json.loads(line)
        entry["prev"] = prev
        entry["sha256"] = body_hash(entry)
        text = json.dumps(entry, sort_keys=True)
        out.append(text)
        prev = line_hash(text.encode())
    return out


@pytest.mark.parametrize("tamper", ["none", "truncate", "edit-and-recompute", "other-key"])
def test_audit_verify_with_the_signed_head(tmp_path, tmp_path_factory, tamper):
    from tests.conftest import assert_user_error, run_cli

    key, pub = keypair(tmp_path_factory)
    path = _signed_log(tmp_path, key)
    lines = path.read_text().splitlines()
    if tamper == "truncate":
        lines = lines[:-2]
    elif tamper == "edit-and-recompute":
        lines[1] = lines[1].replace("1.2.1", "1.2.9")
        lines = _recompute_from(lines, 1)
    elif tamper == "other-key":
        pub = keypair(tmp_path_factory, "other")[1]
    path.write_text("\n".join(lines) + "\n")
    plain = run_cli("audit", "verify", path)
    assert plain.code == 0 and "chain intact" in plain.out  # the chain alone cannot tell
    assert "not checked: truncation and recomputed hashes" in plain.out
    res = run_cli("audit", "verify", path, "--pubkey", pub)
    needle = {
        "truncate": "removed from the end",
        "edit-and-recompute": "hashes recomputed",
        "other-key": "not signed by",
    }.get(tamper)
    if needle is None:
        assert res.code == 0 and "signed head: entry 6" in res.out, res
    else:
        assert_user_error(res, needle)


# ---- the README's appliance config, run ------------------------------------------------------------


def test_the_readme_appliance_config_runs_with_a_signed_audit_head(
    tmp_path, cxr_bundle, pubkey, tmp_path_factory
):
    """The README's toml block (the limits and audit-key included) drives a real service; only
    the machine-specific keys (ports, spool, key path, forward) are replaced."""
    import re

    from edgemed.serve.config import build_config, tomllib
    from edgemed.serve.service import Service
    from tests.conftest import REPO, run_cli

    section = (REPO / "README.md").read_text().split("## Appliance service", 1)[1]
    values = tomllib.loads(re.findall(r"```toml\n(.*?)```", section, re.S)[0])
    assert {"http-timeout", "max-associations", "audit-sign-interval"} <= set(values)
    key, pub = keypair(tmp_path_factory, "appliance")
    values.update(
        {
            "spool": str(tmp_path / "spool"),
            "dicom-port": 0,
            "http-port": 0,
            "forward": [],
            "allowed-aets": ["MODALITY"],
            "audit-key": str(key),
        }
    )
    svc = Service(build_config(values, {}), cxr_bundle, pubkey)
    svc.start()
    try:
        path = cxr_dicoms(tmp_path / "in", 1)[0]
        assert send([path], svc.dicom_port) == {sop_uid(path): 0}
        wait_for(lambda: svc.result(sop_uid(path)), 30, "the result")
    finally:
        svc.stop()
    res = run_cli("audit", "verify", tmp_path / "spool" / "audit.jsonl", "--pubkey", pub)
    assert res.code == 0 and "signed head: entry" in res.out and "0 later entries" in res.out, res


# ---- TLS: DCMTK storescu +tls, curl --cacert, one-line errors for bad files ---------------------


def _tls_settings(m) -> dict:
    return {
        "tls-cert": str(m.server_cert),
        "tls-key": str(m.server_key),
        "tls-ca": str(m.ca),
        "tls-allowed-subjects": [m.client_subject],
    }


def _storescu_tls(port: int, cert: Path, key: Path, ca: Path, path: Path):
    cmd = [STORESCU, "-v", "+tls", str(key), str(cert), "+cf", str(ca)]
    cmd += ["-aet", "MODALITY", "-aec", "EDGEMED", LOOPBACK, str(port), str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _curl(url: str, *args: object) -> subprocess.CompletedProcess:
    cmd = ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", *map(str, args)]
    return subprocess.run([*cmd, url], capture_output=True, text=True, timeout=30)


@needs_dcmtk
@needs_curl
def test_tls_with_mutual_authentication_on_dicom_and_http(tmp_path, cxr_bundle, pubkey):
    import ssl

    from tests.serve_support import tls_material

    m = tls_material(tmp_path / "tls")
    svc = in_process(tmp_path, cxr_bundle, pubkey, 0, **_tls_settings(m))
    try:
        path, other = cxr_dicoms(tmp_path / "in", 2)
        res = _storescu_tls(svc.dicom_port, m.client_cert, m.client_key, m.ca, path)
        assert res.returncode == 0 and "Received Store Response (Success)" in res.stderr, res
        wait_for(lambda: svc.result(sop_uid(path)), 30, "the result of the TLS C-STORE")
        res = _storescu_tls(svc.dicom_port, m.other_cert, m.other_key, m.ca, other)
        assert res.returncode != 0, res  # a client subject not on the allow-list
        assert _storescu(svc.dicom_port, other).returncode != 0  # clear text to a TLS port
        url = f"https://{LOOPBACK}:{svc.http_port}/readyz"
        ok = _curl(url, "--cacert", m.ca, "--cert", m.client_cert, "--key", m.client_key)
        assert ok.stdout.endswith("\n200"), ok
        assert _curl(url, "--cacert", m.ca).returncode != 0  # no client certificate
        assert _curl(url.replace("https", "http")).returncode != 0  # clear text
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(m.ca)
        old.load_cert_chain(m.client_cert, m.client_key)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with (
            pytest.raises(ssl.SSLError),
            socket.create_connection((LOOPBACK, svc.http_port), 10) as raw,
            old.wrap_socket(raw, server_hostname=LOOPBACK),
        ):
            pass
        assert readyz_tls(svc.http_port, m)[0] == 200  # still serving after all of that
        assert svc.metrics.snapshot()["received"] == 1
    finally:
        svc.stop()


def readyz_tls(port: int, m) -> tuple[int, str]:
    res = _curl(
        f"https://{LOOPBACK}:{port}/readyz",
        "--cacert",
        m.ca,
        "--cert",
        m.client_cert,
        "--key",
        m.client_key,
    )
    body, _, code = res.stdout.rpartition("\n")
    return int(code or 0), body


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("key-mismatch", "does not match"),
        ("garbage-cert", "unusable"),
        ("cert-without-key", "go together"),
        ("open-plaintext", "--insecure-plaintext"),
    ],
)
def test_bad_tls_settings_are_one_line_and_nothing_is_written(
    tmp_path, cxr_bundle, pubkey, case, needle
):
    from tests.conftest import assert_user_error, run_cli
    from tests.serve_support import free_port, tls_material

    m = tls_material(tmp_path / "tls")
    spool = tmp_path / "spool"
    args = [cxr_bundle, "--pubkey", pubkey, "--spool", spool, "--allowed-aets", "CT1"]
    args += ["--dicom-port", free_port(), "--http-port", free_port()]
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    extra = {
        "key-mismatch": ["--tls-cert", m.server_cert, "--tls-key", m.client_key],
        "garbage-cert": ["--tls-cert", garbage, "--tls-key", m.server_key],
        "cert-without-key": ["--tls-cert", m.server_cert],
        "open-plaintext": ["--dicom-bind", "0.0.0.0"],
    }[case]
    assert_user_error(run_cli("serve", *args, *extra), needle)
    assert not spool.exists()


def _served_cert(port: int, m) -> bytes:
    import ssl

    ctx = ssl.create_default_context(cafile=str(m.ca))
    ctx.load_cert_chain(m.client_cert, m.client_key)
    with (
        socket.create_connection((LOOPBACK, port), 10) as raw,
        ctx.wrap_socket(raw, server_hostname=LOOPBACK) as s,
    ):
        return s.getpeercert(binary_form=True)


@needs_dcmtk
def test_sighup_reloads_the_certificate_and_hostile_tls_leaves_no_traceback(
    tmp_path, cxr_bundle, pubkey
):
    import shutil
    import signal

    from tests.serve_support import ServeProcess, free_port, tls_material

    m = tls_material(tmp_path / "tls")
    renewed = tls_material(tmp_path / "tls-new")  # only its server key is used: a new key pair
    dicom_port = free_port()
    args = [str(cxr_bundle), "--pubkey", str(pubkey), "--spool", str(tmp_path / "spool")]
    args += ["--allowed-aets", "MODALITY", "--dicom-port", str(dicom_port)]
    for key, value in _tls_settings(m).items():
        for v in value if isinstance(value, list) else [value]:
            args += [f"--{key}", v]
    proc = ServeProcess(args, tmp_path / "serve.log", free_port(), tls=m).start()
    try:
        path = cxr_dicoms(tmp_path / "in", 1)[0]
        assert _storescu(dicom_port, path).returncode != 0  # clear text
        assert _storescu_tls(dicom_port, m.other_cert, m.other_key, m.ca, path).returncode != 0
        before = _served_cert(proc.http_port, m)
        # Renew: a new key and certificate from the same CA, written over the old files.
        shutil.copy(renewed.server_key, m.server_key)
        _reissue(m, renewed)
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _served_cert(proc.http_port, m) != before, 20, "the renewed certificate")
        res = _storescu_tls(dicom_port, m.client_cert, m.client_key, m.ca, path)
        assert res.returncode == 0, res
        wait_for(lambda: proc.metrics()["edgemed_serve_done_total"] == 1, 30, "the result")
    finally:
        proc.stop()
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log and "TLS certificate and keys reloaded" in log, log[-3000:]


def _reissue(m, renewed) -> None:
    """A server certificate for `renewed.server_key`'s key, signed by `m`'s CA, over m.server_cert."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from tests.serve_support import _cert, _pem

    ca_cert = x509.load_pem_x509_certificate(m.ca.read_bytes())
    ca_key = serialization.load_pem_private_key((m.ca.parent / "ca.key").read_bytes(), None)
    key = serialization.load_pem_private_key(renewed.server_key.read_bytes(), None)
    _pem(m.server_cert, _cert("127.0.0.1", key, ca_key, ca_cert, server=True))


# ---- audit entries to a real syslog collector (rsyslog, RFC 5425) -------------------------------


def test_audit_entries_reach_rsyslog_over_tls_as_dicom_audit_messages(tmp_path, cxr_bundle, pubkey):
    from edgemed.serve.audit import verify_log
    from tests.serve_support import RSYSLOGD, Rsyslog, tls_material

    if RSYSLOGD is None:
        pytest.skip("rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls)")
    m = tls_material(tmp_path / "tls")
    collector = Rsyslog(tmp_path / "rsyslog", m).start()
    try:
        settings = {"audit-syslog": collector.address, "audit-syslog-ca": str(m.ca)}
        svc = in_process(tmp_path, cxr_bundle, pubkey, 0, **settings)
        try:
            path = cxr_dicoms(tmp_path / "in", 1)[0]
            assert send([path], svc.dicom_port) == {sop_uid(path): 0}
            wait_for(lambda: svc.result(sop_uid(path)), 30, "the result")
        finally:
            svc.stop()
        report = verify_log(tmp_path / "spool" / "audit.jsonl")
        wait_for(lambda: len(collector.messages()) >= report.entries, 20, "every audit entry")
    finally:
        collector.stop()
    lines = collector.messages()
    assert len(lines) == report.entries
    for seq, (line, digest) in enumerate(zip(lines, report.line_hashes, strict=True), 1):
        assert f'seq="{seq}" sha256="{digest}"' in line  # the chain, checkable off the box
    received = next(x for x in lines if 'csd-code="110104"' in x)
    assert "DICOM+RFC3881" in received and f'ParticipantObjectID="{sop_uid(path)}"' in received
    assert 'EventActionCode="C"' in received and "<AuditMessage>" in received
    assert any('csd-code="110120"' in x for x in lines)  # Application Start
    assert any('csd-code="110121"' in x for x in lines)  # Application Stop
    assert any("edgemed-audit" in x and '"event": "processed"' in x for x in lines)


def _readyz_reason(proc) -> str:
    try:
        code, body = proc.get("/readyz", timeout=2)
    except OSError:
        return ""
    return json.loads(body).get("reason", "") if code == 503 else ""


def test_a_disk_filling_up_and_freed_with_a_sigkill_loses_nothing(
    tmp_path, small_disk, cxr_bundle, pubkey
):
    """60 images re-sent until acknowledged; the spool's disk fills after 15 acknowledgements,
    the service is SIGKILLed while it is full and restarted, then the disk is freed: every
    acknowledged image ends with a result (none refused or failed)."""
    from tests.serve_support import ServeProcess, free_port
    from tests.test_serve_orthanc import _keep_sending

    paths = cxr_dicoms(tmp_path / "in", 60)
    dicom_port = free_port()
    args = [str(cxr_bundle), "--pubkey", str(pubkey), "--spool", str(small_disk / "spool")]
    args += ["--allowed-aets", "MODALITY", "--dicom-port", str(dicom_port)]
    log = tmp_path / "serve.log"
    proc = ServeProcess(args, log, free_port()).start()
    acked: dict[str, bool] = {}
    stop = threading.Event()
    sender = threading.Thread(target=_keep_sending, args=(paths, dicom_port, acked, stop))
    sender.start()
    try:
        wait_for(lambda: len(acked) >= 15, 120, "15 acknowledgements")
        _break(small_disk, "full")
        wait_for(lambda: proc.readyz().get("ready") is False, 30, "/readyz to report the disk")
        held = len(acked)
        proc.kill()
        proc = ServeProcess(args, log, proc.http_port)
        starting = threading.Thread(target=proc.start)  # returns once /readyz says ready
        starting.start()
        wait_for(lambda: getattr(proc, "proc", None) is not None, 30, "the restart")
        # On the full disk it runs, refuses intake and says why; ready once the disk has room.
        wait_for(lambda: _readyz_reason(proc), 60, "/readyz 503 with the reason after restart")
        _repair(small_disk, "full")
        starting.join(timeout=60)
        assert not starting.is_alive()
        sender.join(timeout=300)
        wait_for(lambda: proc.metrics()["edgemed_serve_queue_depth"] == 0, 120, "empty queue")
        results = {p.stem for p in (small_disk / "spool" / "results").glob("*.json")}
        refused = list((small_disk / "spool" / "refused").glob("*.json"))
    finally:
        stop.set()
        sender.join(timeout=60)
        proc.stop()
    assert len(acked) == 60 and held < 60
    assert set(acked) <= results and not refused
    assert "Traceback" not in log.read_text()
