"""`edgemed serve` parts that need no PACS: settings, the audit chain, the spool, SR UIDs, CLI
errors, and that the service process never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, assert_user_error, run_cli

# ---- settings ---------------------------------------------------------------------------------


def test_toml_keys_are_the_flag_names_and_flags_override(tmp_path):
    from edgemed.serve.config import Destination, build_config, read_toml

    toml = tmp_path / "appliance.toml"
    toml.write_text(
        'spool = "/var/spool/x"\nae-title = "AI1"\ndicom-port = 104\n'
        'forward = ["PACS@127.0.0.1:4242", "RIS@127.0.0.1:4243"]\nallowed-aets = ["CT1"]\n'
    )
    cfg = build_config(read_toml(toml), {"ae-title": "AI2", "forward": (), "http-port": 9000})
    assert (cfg.ae_title, cfg.dicom_port, cfg.http_port, cfg.http_bind) == (
        "AI2",
        104,
        9000,
        "127.0.0.1",
    )
    assert cfg.forward == (
        Destination("PACS", "127.0.0.1", 4242),
        Destination("RIS", "127.0.0.1", 4243),
    )
    assert cfg.allowed_aets == ("CT1",) and cfg.audit_path == Path("/var/spool/x/audit.jsonl")


def test_every_setting_is_a_serve_flag():
    import click

    from edgemed.cli.serve import serve
    from edgemed.serve.config import KEYS

    flags = {o for p in serve.params if isinstance(p, click.Option) for o in p.opts}
    assert {f"--{k}" for k in KEYS} <= flags


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"spool": "s", "colour": 1}, "unknown setting 'colour'"),
        ({"spool": "s", "forward": ["PACS@127.0.0.1"]}, "AET@HOST:PORT"),
        ({"spool": "s", "dicom-port": 70000}, "port number"),
        ({"spool": "s", "workers": 0}, ">= 1"),
        ({"spool": "s", "ae-title": "A" * 17}, "AE title"),
        ({"ae-title": "X"}, "--spool"),
    ],
)
def test_bad_settings_are_refused_with_one_line(values, needle):
    from edgemed.errors import InputError
    from edgemed.serve.config import build_config

    with pytest.raises(InputError, match=None) as exc:
        build_config(values, {})
    assert needle in str(exc.value)


def test_modality_filter_may_narrow_but_never_widen_the_bundle():
    from edgemed.errors import InputError
    from edgemed.serve.config import modality_filter

    assert modality_filter(None, ("CR", "DX")) == ("CR", "DX")
    assert modality_filter(("DX",), ("CR", "DX")) == ("DX",)
    with pytest.raises(InputError, match="MR"):
        modality_filter(("DX", "MR"), ("CR", "DX"))


def test_serve_cli_errors_are_one_line(tmp_path):
    bundle, pub = tmp_path / "none.bundle", tmp_path / "none.pub"
    assert_user_error(
        run_cli("serve", bundle, "--pubkey", pub, "--spool", tmp_path / "s"), "allowed-aets"
    )
    res = run_cli(
        "serve", bundle, "--pubkey", pub, "--spool", tmp_path / "s", "--allowed-aets", "CT1"
    )
    assert_user_error(res, "bundle", "does not exist")
    bad = tmp_path / "bad.toml"
    bad.write_text("spool = [")
    assert_user_error(run_cli("serve", bundle, "--pubkey", pub, "--config", bad), "not valid TOML")
    res = run_cli("serve", bundle, "--pubkey", pub, "--spool", tmp_path / "s", "--forward", "x")
    assert_user_error(res, "AET@HOST:PORT")


# ---- audit chain ------------------------------------------------------------------------------


def _log(tmp_path) -> Path:
    from edgemed.serve.audit import AuditLog

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(4):
        log.append("received", sop_instance_uid=f"1.2.{i}", sha256="ab" * 32)
    log.close()
    AuditLog(path).append("processed", sop_instance_uid="1.2.0")  # a restart continues the chain
    return path


def test_audit_verify_accepts_the_chain_and_counts_events(tmp_path):
    res = run_cli("audit", "verify", _log(tmp_path))
    assert res.code == 0, res
    assert "5 entries, chain intact (processed 1, received 4)" in res.out


@pytest.mark.parametrize("tamper", ["edit", "edit-last", "remove", "reorder", "insert"])
def test_audit_verify_detects_tampering(tmp_path, tamper):
    path = _log(tmp_path)
    lines = path.read_text().splitlines()
    if tamper == "edit":
        lines[1] = lines[1].replace("1.2.1", "1.2.9")
    elif tamper == "edit-last":
        lines[-1] = lines[-1].replace("processed", "refused")
    elif tamper == "remove":
        del lines[2]
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines.insert(2, lines[2])
    path.write_text("\n".join(lines) + "\n")
    assert_user_error(run_cli("audit", "verify", path), "audit log", "line")


def test_audit_entries_carry_no_patient_names(tmp_path):
    text = _log(tmp_path).read_text()
    assert all(
        set(json.loads(x)) <= {"seq", "time", "event", "prev", "sha256", "sop_instance_uid"}
        for x in text.splitlines()
    )


# ---- spool and UIDs ---------------------------------------------------------------------------


def test_spool_is_idempotent_by_uid_and_resumes(tmp_path):
    from edgemed.errors import InputError
    from edgemed.serve.spool import Spool

    spool = Spool(tmp_path / "s")
    assert spool.admit("1.2.3", [b"abc"]) is True
    assert spool.admit("1.2.3", [b"other"]) is False
    assert spool.path("queue", "1.2.3", ".dcm").read_bytes() == b"abc"
    (spool.root / "tmp" / "1.2.4.x.part").write_bytes(b"half")  # a crash mid-write
    again = Spool(tmp_path / "s")
    assert again.pending() == ["1.2.3"] and not list((again.root / "tmp").iterdir())
    again.put("results", "1.2.3", b"{}", ".json")
    again.finish("1.2.3")
    assert again.pending() == [] and again.admit("1.2.3", [b"abc"]) is False
    with pytest.raises(InputError, match="not a valid DICOM UID"):
        spool.admit("../../etc/passwd", [b"x"])


def test_sr_uids_are_derived_from_source_and_bundle():
    from edgemed.serve.sr import Algorithm, SrUids

    a = SrUids.for_source("1.2.3", "bundle-a")
    assert a == SrUids.for_source("1.2.3", "bundle-a")
    assert a != SrUids.for_source("1.2.4", "bundle-a") and a != SrUids.for_source("1.2.3", "b")
    assert a.instance.startswith("2.25.") and len(a.instance) <= 64
    dev = Algorithm("bundle-a", "sha", "m", "v", "rt").device_uid
    assert dev == Algorithm("bundle-a", "x", "y", "z", "w").device_uid
    assert dev != Algorithm("bundle-b", "sha", "m", "v", "rt").device_uid


# ---- no torch ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cxr_bundle(cxr_onnx, tmp_path_factory) -> Path:
    from tests.bundle_support import cxr_bundle_for

    return cxr_bundle_for(cxr_onnx, tmp_path_factory)


def test_the_running_service_never_imports_torch(cxr_bundle, tmp_path, tmp_path_factory):
    from tests.bundle_support import keypair

    code = f"""
import sys
from pathlib import Path
from edgemed.serve.config import build_config
from edgemed.serve.service import Service
cfg = build_config({{"spool": {str(tmp_path / "spool")!r}, "dicom-port": 0, "http-port": 0,
                     "allowed-aets": ["CT1"]}}, {{}})
svc = Service(cfg, Path({str(cxr_bundle)!r}), Path({str(keypair(tmp_path_factory)[1])!r}))
svc.start()
assert svc.ready.is_set()
svc.stop()
bad = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
print("TORCH" if bad else "NO-TORCH", bad[:3])
"""
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert "NO-TORCH" in res.stdout, res.stdout + res.stderr
