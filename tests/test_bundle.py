"""Signed bundle: keygen, release gate, layout, verify, and every tampering/attack refused."""

from __future__ import annotations

import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from tests.bundle_support import (
    bench_report,
    cxr_bundle_for,
    cxr_report_for,
    degraded_artifact,
    keypair,
    make_bundle,
    measured_bench_report,
    member_bytes,
    read_members,
    real_bench_available,
    regular,
    replace_member,
    resign,
    write_members,
)
from tests.conftest import assert_user_error, run_cli, tree_snapshot

MEMBERS = (
    "bundle-manifest.json",
    "bundle-manifest.sig",
    "contract.json",
    "model/card.json",
    "model/domain.json",
    "model/domain.npz",
    "model/manifest.json",
    "model/model.onnx",
    "report/report.html",
    "report/results.json",
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keypair(tmp_path_factory)


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory):
    return keypair(tmp_path_factory, "other-keys")


@pytest.fixture(scope="module")
def cxr_report(cxr_onnx, tmp_path_factory) -> Path:
    return cxr_report_for(cxr_onnx, tmp_path_factory)


@pytest.fixture(scope="module")
def cxr_bundle(cxr_onnx, tmp_path_factory) -> Path:
    return cxr_bundle_for(cxr_onnx, tmp_path_factory)


@pytest.fixture(scope="module")
def drifted(cxr_onnx, tmp_path_factory) -> tuple[Path, Path, dict]:
    """A genuinely drifted artifact (conv weights perturbed) and its real bench report."""
    root = tmp_path_factory.mktemp("drifted")
    art = degraded_artifact(cxr_onnx, root / "artifact", noise=0.3)
    report = bench_report(art, root / "bench")
    row = json.loads((report / "results.json").read_text())["rows"][0]
    return art, report, row["drift"]


def manifest_of(bundle: Path) -> dict:
    return json.loads(member_bytes(read_members(bundle), "bundle-manifest.json"))


# ---- keygen -------------------------------------------------------------------------------------


def test_keygen_private_key_is_0600_even_with_umask_0(tmp_path):
    old = os.umask(0)
    try:
        res = run_cli("keygen", "--out", tmp_path / "k")
    finally:
        os.umask(old)
    assert res.code == 0, res
    assert stat.S_IMODE((tmp_path / "k" / "edgemed.key").stat().st_mode) == 0o600
    assert (tmp_path / "k" / "edgemed.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert not [p for p in (tmp_path / "k").iterdir() if p.name.startswith(".")]


def test_keygen_refuses_existing_keys_and_force_replaces(tmp_path):
    assert run_cli("keygen", "--out", tmp_path).code == 0
    before = tree_snapshot(tmp_path)
    assert_user_error(run_cli("keygen", "--out", tmp_path), "already exist", "--force")
    assert tree_snapshot(tmp_path) == before
    assert run_cli("keygen", "--out", tmp_path, "--force").code == 0
    after = tree_snapshot(tmp_path)
    assert after["edgemed.key"] != before["edgemed.key"]
    assert stat.S_IMODE((tmp_path / "edgemed.key").stat().st_mode) == 0o600


# ---- building -----------------------------------------------------------------------------------


def test_bundle_layout_and_signed_manifest(cxr_bundle, cxr_onnx, keys):
    from edgemed.fileio import sha256_bytes, sha256_file
    from edgemed.signing import fingerprint, load_public_key

    members = read_members(cxr_bundle)
    names = [m.name for m, _ in members]
    assert names[:2] == ["bundle-manifest.json", "bundle-manifest.sig"]
    assert names[2:] == sorted(names[2:]) and tuple(sorted(names)) == tuple(sorted(MEMBERS))
    assert all(m.isreg() and not m.name.startswith("/") and ".." not in m.name for m, _ in members)
    m = manifest_of(cxr_bundle)
    for info, data in members[2:]:
        assert m["files"][info.name] == {"sha256": sha256_bytes(data), "bytes": len(data)}
    assert m["model"]["artifact_manifest_sha256"] == sha256_file(cxr_onnx / "manifest.json")
    assert m["runtime"]["package"] == "onnxruntime" and m["runtime"]["version"]
    assert m["versions"]["edgemed"] and "onnxruntime" in m["versions"]["runtimes"]
    contract = json.loads(member_bytes(members, "contract.json"))
    assert m["class_names"] == contract["class_names"] == ["normal", "pneumonia"]
    assert m["threshold"] == contract["threshold"]
    assert m["gate"]["decision"] == "passed" and m["gate"]["override_reason"] is None
    assert m["input"]["modalities"] == ["CR", "DX"]
    assert m["documents"]["model_card"] == "model/card.json"
    assert m["signer"]["public_key_sha256"] == fingerprint(load_public_key(keys[1]))


def test_bundle_refuses_existing_out_and_force_replaces(cxr_onnx, cxr_report, keys, tmp_path):
    out = tmp_path / "x.bundle"
    out.write_bytes(b"precious")
    args = ("bundle", "--model", cxr_onnx, "--report", cxr_report, "--key", keys[0], "--out", out)
    assert_user_error(run_cli(*args), "already exists", "--force")
    assert out.read_bytes() == b"precious" and tree_snapshot(tmp_path) == {"x.bundle": b"precious"}
    assert run_cli(*args, "--force").code == 0
    assert tarfile.is_tarfile(out) and list(tmp_path.iterdir()) == [out]


def test_gate_refuses_missing_report(cxr_onnx, keys, tmp_path):
    res = run_cli(
        "bundle",
        "--model",
        cxr_onnx,
        "--report",
        tmp_path / "nobench",
        "--key",
        keys[0],
        "--out",
        tmp_path / "x.bundle",
    )
    assert_user_error(res, "no bench report", "edgemed bench")
    assert tree_snapshot(tmp_path) == {}


def test_gate_refuses_report_without_a_row_for_this_artifact(drifted, cxr_report, keys, tmp_path):
    art, _, _ = drifted
    res = run_cli(
        "bundle", "--model", art, "--report", cxr_report, "--key", keys[0], "--out", tmp_path / "x"
    )
    assert_user_error(res, "release gate refused", "no row for this artifact", "--override-gate")
    assert tree_snapshot(tmp_path) == {}


def test_gate_refuses_drift_beyond_limits_naming_which(drifted, keys, tmp_path):
    art, report, drift = drifted
    # metric -> (flag, default limit, the drift field its gate reads)
    limits = {
        "auc_drop": ("--max-auc-drop", 0.005, "auc_drop_decisive"),
        "flip_rate": ("--max-flip-rate", 0.01, "decisive_flip_rate"),
        "sens_drop": ("--max-sens-drop", 0.02, "sens_drop"),
        "spec_drop": ("--max-spec-drop", 0.02, "spec_drop"),
    }
    value = {k: drift[f] for k, (_, _, f) in limits.items()}
    over = [k for k, (_, lim, _) in limits.items() if value[k] > lim]
    assert over, f"the perturbed model should drift beyond a default limit: {drift}"
    res = run_cli(
        "bundle", "--model", art, "--report", report, "--key", keys[0], "--out", tmp_path / "x"
    )
    named = [f"{value[k]:.4f} > {limits[k][0]} {limits[k][1]:g}" for k in over]
    assert_user_error(res, "release gate refused", *named)
    for k in set(limits) - set(over):
        assert f"> {limits[k][0]}" not in res.err
    assert res.code == 4 and tree_snapshot(tmp_path) == {}
    # The limits are the user's: loose enough limits let the same evidence pass.
    loose = [f"{flag}={max(value[k], 0) + 0.01:.4f}" for k, (flag, _, _) in limits.items()]
    assert (
        run_cli(
            "bundle",
            "--model",
            art,
            "--report",
            report,
            "--key",
            keys[0],
            "--out",
            tmp_path / "y",
            *loose,
        ).code
        == 0
    )


def test_fallback_report_agrees_with_edgemed_bench(drifted, tmp_path):
    """The tests' own drift measurement (used where `edgemed bench` is absent) and the real bench
    measure the same thing: same flips, AUC drop and sensitivity drop on the same images."""
    if not real_bench_available():
        pytest.skip("edgemed bench is not in this checkout; nothing to compare against")
    art, _, bench = drifted
    mine = json.loads((measured_bench_report(art, tmp_path / "m") / "results.json").read_text())
    d = mine["rows"][0]["drift"]
    assert d["flips"] == bench["flips"] and d["n"] == bench["n"]
    for key in ("flip_rate", "auc_drop", "sens_drop"):
        assert d[key] == pytest.approx(bench[key], abs=1e-9), key


def test_gate_rejects_negative_limit(cxr_onnx, cxr_report, keys, tmp_path):
    res = run_cli(
        "bundle",
        "--model",
        cxr_onnx,
        "--report",
        cxr_report,
        "--key",
        keys[0],
        "--out",
        tmp_path / "x",
        "--max-flip-rate",
        "-0.1",
    )
    assert_user_error(res, "--max-flip-rate must be a number in [0, 1]")
    assert tree_snapshot(tmp_path) == {}


def test_override_records_reason_and_failed_checks(drifted, keys, tmp_path):
    art, report, drift = drifted
    reason = "approved by QA-123 for a shadow-mode pilot"
    out = make_bundle(art, report, keys[0], tmp_path / "o.bundle", "--override-gate", reason)
    m = manifest_of(out)
    assert m["gate"]["decision"] == "overridden" and m["gate"]["override_reason"] == reason
    assert m["gate"]["failed"] and all(" > --max-" in f for f in m["gate"]["failed"])
    res = run_cli("verify", out, "--pubkey", keys[1])
    assert res.code == 0, res
    assert "OVERRIDDEN" in res.out and reason in res.out


def test_override_needs_a_reason(drifted, keys, tmp_path):
    art, report, _ = drifted
    res = run_cli(
        "bundle",
        "--model",
        art,
        "--report",
        report,
        "--key",
        keys[0],
        "--out",
        tmp_path / "x",
        "--override-gate",
        "  ",
    )
    assert_user_error(res, "--override-gate needs a reason")
    assert tree_snapshot(tmp_path) == {}


def test_bundle_refuses_public_key_as_signing_key(cxr_onnx, cxr_report, keys, tmp_path):
    res = run_cli(
        "bundle",
        "--model",
        cxr_onnx,
        "--report",
        cxr_report,
        "--key",
        keys[1],
        "--out",
        tmp_path / "x",
    )
    assert_user_error(res, "not a PEM private key")
    assert tree_snapshot(tmp_path) == {}


# ---- verify -------------------------------------------------------------------------------------


def test_verify_prints_every_check(cxr_bundle, keys):
    res = run_cli("verify", cxr_bundle, "--pubkey", keys[1])
    assert res.code == 0, res
    lines = res.out.strip().splitlines()
    checks = ["archive", "signature", "manifest", "files", "hashes", "runtime", "gate"]
    assert [ln.split()[0] for ln in lines[:-1]] == checks
    assert all(ln.split()[1] == "ok" for ln in lines[:-1])
    assert "onnxruntime" in lines[5] and "installed" in lines[5] and "1.x" in lines[5]


def _verify_refuses(bundle: Path, pubkey: Path, *needles: str) -> None:
    before = tree_snapshot(bundle.parent)
    res = run_cli("verify", bundle, "--pubkey", pubkey)
    assert_user_error(res, *needles)
    assert "verified" not in res.out
    assert tree_snapshot(bundle.parent) == before


@pytest.mark.parametrize("name", MEMBERS)
def test_flipped_byte_in_any_file_is_refused(cxr_bundle, keys, tmp_path, name):
    members = read_members(cxr_bundle)
    data = bytearray(member_bytes(members, name))
    data[len(data) // 2] ^= 0x01
    bad = write_members(tmp_path / "b.bundle", replace_member(members, name, bytes(data)))
    needle = (
        "signature does not match"
        if name.startswith("bundle-manifest")
        else "does not match its sha-256"
    )
    _verify_refuses(bad, keys[1], needle)


def test_flipped_byte_in_the_raw_archive_is_refused(cxr_bundle, keys, tmp_path):
    with tarfile.open(cxr_bundle, "r:") as tar:
        model = tar.getmember("model/model.onnx")
    raw = bytearray(cxr_bundle.read_bytes())
    raw[model.offset_data + model.size // 2] ^= 0x80  # a bit inside the model's weights
    (tmp_path / "b.bundle").write_bytes(bytes(raw))
    _verify_refuses(tmp_path / "b.bundle", keys[1], "does not match its sha-256")


def test_replaced_model_with_recomputed_hash_but_old_signature(cxr_bundle, keys, tmp_path):
    from edgemed.bundle.build import manifest_bytes
    from edgemed.fileio import sha256_bytes

    members = read_members(cxr_bundle)
    model = bytearray(member_bytes(members, "model/model.onnx"))
    model[-100] ^= 0xFF
    manifest = json.loads(member_bytes(members, "bundle-manifest.json"))
    manifest["files"]["model/model.onnx"]["sha256"] = sha256_bytes(bytes(model))
    members = replace_member(members, "model/model.onnx", bytes(model))
    members = replace_member(members, "bundle-manifest.json", manifest_bytes(manifest))
    bad = write_members(tmp_path / "b.bundle", members)
    _verify_refuses(bad, keys[1], "signature does not match")


def test_missing_file_is_refused(cxr_bundle, keys, tmp_path):
    members = [(m, d) for m, d in read_members(cxr_bundle) if m.name != "report/results.json"]
    _verify_refuses(
        write_members(tmp_path / "b.bundle", members), keys[1], "missing report/results.json"
    )


def test_extra_file_is_refused(cxr_bundle, keys, tmp_path):
    members = [*read_members(cxr_bundle), regular("model/backdoor.onnx", b"\x08\x07")]
    _verify_refuses(
        write_members(tmp_path / "b.bundle", members),
        keys[1],
        "not in the signed manifest",
        "backdoor",
    )


def test_manifest_signed_by_another_key_is_refused(cxr_bundle, keys, other_keys, tmp_path):
    members = resign(read_members(cxr_bundle), other_keys[0], lambda m: None)
    _verify_refuses(write_members(tmp_path / "b.bundle", members), keys[1], "signed by another key")


def test_signature_only_from_another_key_is_refused(cxr_bundle, keys, other_keys, tmp_path):
    from edgemed.signing import load_private_key

    members = read_members(cxr_bundle)
    sig = load_private_key(other_keys[0]).sign(member_bytes(members, "bundle-manifest.json"))
    bad = write_members(tmp_path / "b.bundle", replace_member(members, "bundle-manifest.sig", sig))
    _verify_refuses(bad, keys[1], "signature does not match")


def test_wrong_pubkey_is_refused(cxr_bundle, other_keys):
    _verify_refuses(cxr_bundle, other_keys[1], "signed by another key")


@pytest.mark.parametrize("cut", ["middle", "end-marker"])
def test_truncated_archive_is_refused(cxr_bundle, keys, tmp_path, cut):
    raw = cxr_bundle.read_bytes()
    end = len(raw.rstrip(b"\0"))  # last byte of real content
    keep = len(raw) // 2 if cut == "middle" else -(-end // 512) * 512 + 100
    (tmp_path / "b.bundle").write_bytes(raw[:keep])
    _verify_refuses(tmp_path / "b.bundle", keys[1], "truncated")


def test_appended_data_is_refused(cxr_bundle, keys, tmp_path):
    (tmp_path / "b.bundle").write_bytes(cxr_bundle.read_bytes() + b"\0" * 512 + b"MZ payload")
    _verify_refuses(tmp_path / "b.bundle", keys[1], "appended")


def _special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, b""


@pytest.mark.parametrize(
    "member,needle",
    [
        (regular("../evil.sh", b"rm -rf /"), "path traversal"),
        (regular("model/../../evil.sh", b"x"), "path traversal"),
        (regular("/etc/cron.d/evil", b"x"), "absolute path"),
        (_special("model/link", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (_special("model/hard", tarfile.LNKTYPE, "contract.json"), "hard link"),
        (_special("model/dev", tarfile.CHRTYPE), "device"),
        (_special("model/sub", tarfile.DIRTYPE), "directory"),
        (regular("contract.json", b"{}"), "appears twice"),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "symlink",
        "hardlink",
        "device",
        "dir",
        "duplicate",
    ],
)
def test_unsafe_members_are_refused_and_nothing_escapes(cxr_bundle, keys, tmp_path, member, needle):
    from edgemed.appliance import load
    from edgemed.errors import InputError

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    bad = write_members(work / "b.bundle", [*read_members(cxr_bundle), member])
    _verify_refuses(bad, keys[1], needle)
    with pytest.raises(InputError, match=needle):
        load(bad, keys[1])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "b.bundle"]


def test_runtime_not_installed_is_refused(cxr_bundle, keys, tmp_path):
    def edit(m):
        m["runtime"]["package"] = "onnxruntime-edgebox"

    bad = write_members(tmp_path / "b.bundle", resign(read_members(cxr_bundle), keys[0], edit))
    _verify_refuses(
        bad, keys[1], "onnxruntime-edgebox is not installed", "needs onnxruntime-edgebox 1.x"
    )


def test_runtime_major_version_mismatch_is_refused(cxr_bundle, keys, tmp_path):
    def edit(m):
        m["runtime"]["version"] = "2.0.1"

    bad = write_members(tmp_path / "b.bundle", resign(read_members(cxr_bundle), keys[0], edit))
    _verify_refuses(bad, keys[1], "installed here but the bundle needs onnxruntime 2.x")


def test_not_a_bundle_and_missing_bundle_are_refused(keys, tmp_path):
    (tmp_path / "x.bundle").write_bytes(b"PK\x03\x04 not a tar")
    _verify_refuses(tmp_path / "x.bundle", keys[1], "not a complete uncompressed tar")
    assert_user_error(
        run_cli("verify", tmp_path / "nope.bundle", "--pubkey", keys[1]), "does not exist"
    )
