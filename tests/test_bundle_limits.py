"""Verify, then unpack, within limits: nothing unsigned is written or buffered, bounded headers,
member count and size; the private temp dir goes on every exit (kill -9 on the next start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.bundle_support import cxr_bundle_for, keypair, read_members, regular, write_members
from tests.conftest import REPO, assert_user_error, run_cli

GIB = 1 << 30


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keypair(tmp_path_factory)


@pytest.fixture(scope="module")
def cxr_bundle(cxr_onnx, tmp_path_factory) -> Path:
    return cxr_bundle_for(cxr_onnx, tmp_path_factory)


def sparse_insert(bundle: Path, out: Path, header: bytes, hole: int) -> Path:
    """`bundle` with `header` + `hole` bytes (a sparse hole on disk) inserted after the signature."""
    with tarfile.open(bundle, "r:") as tar:
        third = tar.getmembers()[2].offset
    raw = bundle.read_bytes()
    with open(out, "wb") as f:
        f.write(raw[:third] + header)
        f.seek(hole, os.SEEK_CUR)
        f.write(raw[third:])
    return out


def big_member(bundle: Path, out: Path, size: int = 2 * GIB) -> Path:
    info = tarfile.TarInfo("model/extra.bin")
    info.size = size
    return sparse_insert(bundle, out, info.tobuf(tarfile.PAX_FORMAT), size)


def pax_bomb(bundle: Path, out: Path, size: int = GIB) -> Path:
    """An extended (PAX) header that claims `size` bytes, before a normal member."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, size
    return sparse_insert(bundle, out, info.tobuf(tarfile.USTAR_FORMAT), size)


PROBE = """
import json, os, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_FSIZE, (10 << 20, 10 << 20))  # any file > 10 MB: EFBIG
from edgemed.appliance import load, Limits
from edgemed.errors import EdgemedError
def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
before = hwm()
try:
    load(sys.argv[1], sys.argv[2], limits=Limits(max_bundle_bytes=int(sys.argv[3])))
    err = None
except EdgemedError as exc:
    err = str(exc)
print(json.dumps({"error": err, "rss_delta_mb": hwm() - before}))
"""


def probe(bundle: Path, pubkey: Path, tmpdir: Path, max_bytes: int) -> dict:
    tmpdir.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", PROBE, str(bundle), str(pubkey), str(max_bytes)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def disk_used(root: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("max_gib", [1, 8], ids=["default-size-limit", "raised-size-limit"])
def test_2gib_unlisted_member_refused_without_disk_or_memory(cxr_bundle, keys, tmp_path, max_gib):
    bad = big_member(cxr_bundle, tmp_path / "big.bundle")
    assert bad.stat().st_size > 2 * GIB and disk_used(tmp_path) < 10 << 20  # sparse
    got = probe(bad, keys[1], tmp_path / "tmp", max_gib * GIB)
    err = got["error"].lower()
    if max_gib == 1:
        assert "over the 1024 mb limit" in err and "--max-bundle-mb" in err, err
    else:
        assert "not in the signed manifest" in err and "model/extra.bin" in err, err
    assert got["rss_delta_mb"] < 10, got
    assert list((tmp_path / "tmp").iterdir()) == []  # private dir removed, nothing left
    assert disk_used(tmp_path) < 10 << 20


def test_1gib_pax_header_is_refused_without_reading_it(cxr_bundle, keys, tmp_path):
    bad = pax_bomb(cxr_bundle, tmp_path / "pax.bundle")
    got = probe(bad, keys[1], tmp_path / "tmp", 8 * GIB)
    assert "extended tar header claims" in got["error"], got
    assert got["rss_delta_mb"] < 10, got
    assert list((tmp_path / "tmp").iterdir()) == []


def test_cli_size_limit_and_flag(cxr_bundle, keys, tmp_path):
    bad = big_member(cxr_bundle, tmp_path / "big.bundle")
    assert_user_error(run_cli("verify", bad, "--pubkey", keys[1]), "--max-bundle-mb")
    res = run_cli("verify", bad, "--pubkey", keys[1], "--max-bundle-mb", "4096")
    assert_user_error(res, "not in the signed manifest", "model/extra.bin")


def test_member_count_limit(cxr_bundle, keys, tmp_path):
    members = read_members(cxr_bundle)
    res = run_cli("verify", cxr_bundle, "--pubkey", keys[1], "--max-members", str(len(members)))
    assert res.code == 0, res
    n = len(members) - 1
    res = run_cli("verify", cxr_bundle, "--pubkey", keys[1], "--max-members", str(n))
    assert_user_error(res, f"more than {n} members", "--max-members")


def test_manifest_must_come_first(cxr_bundle, keys, tmp_path):
    members = read_members(cxr_bundle)
    bad = write_members(tmp_path / "order.bundle", [*members[2:], *members[:2]])
    assert_user_error(run_cli("verify", bad, "--pubkey", keys[1]), "bundle-manifest.json")


def test_member_larger_than_signed_is_refused_before_it_is_read(cxr_bundle, keys, tmp_path):
    members = read_members(cxr_bundle)
    grown = [
        regular(m.name, d + b"\0" * 4096) if m.name == "contract.json" else (m, d)
        for m, d in members
    ]
    bad = write_members(tmp_path / "grown.bundle", grown)
    res = run_cli("verify", bad, "--pubkey", keys[1])
    assert_user_error(res, "contract.json", "size in the signed manifest")


def test_stale_private_dirs_of_killed_processes_are_removed(cxr_bundle, keys, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp / f"edgemed-appliance-{dead.pid}-abc123"
    (stale / "model").mkdir(parents=True)
    (stale / "model" / "model.onnx").write_bytes(b"x" * 1000)
    live = tmp / f"edgemed-appliance-{os.getppid()}-keepme"
    live.mkdir()
    code = (
        "import sys; from edgemed.appliance import load\n"
        "with load(sys.argv[1], sys.argv[2]) as p: pass\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-c", code, str(cxr_bundle), str(keys[1])],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp.glob("edgemed-*")) == [live.name]


def test_killed_during_load_leaves_only_what_the_next_start_removes(cxr_bundle, keys, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = (
        "import os, signal, sys; from edgemed.appliance import load\n"
        "p = load(sys.argv[1], sys.argv[2])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", code, str(cxr_bundle), str(keys[1])]
    assert subprocess.run(args, env=env, timeout=300).returncode == -9
    assert len(list(tmp.glob("edgemed-*"))) == 1  # kill -9 runs no cleanup ...
    args[2] = (
        "import sys; from edgemed.appliance import load\nload(sys.argv[1], sys.argv[2]).close()"
    )
    assert subprocess.run(args, env=env, timeout=300).returncode == 0
    assert list(tmp.glob("edgemed-*")) == []  # ... the next start removes it
