"""The appliance: load a verified bundle and predict on PNG and DICOM without torch; bad inputs and
tampered bundles are refused with one line and no partial output."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.bundle_support import (
    bench_report,
    cxr_bundle_for,
    cxr_test_images,
    keypair,
    make_bundle,
    member_bytes,
    read_members,
    replace_member,
    write_dicom,
    write_members,
    write_png,
)
from tests.conftest import CXR, REPO, assert_user_error, run_cli, tree_snapshot


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keypair(tmp_path_factory)


@pytest.fixture(scope="module")
def cxr_bundle(cxr_onnx, tmp_path_factory) -> Path:
    return cxr_bundle_for(cxr_onnx, tmp_path_factory)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Real chest X-ray test images as PNG and as 16-bit DICOM (rescaled), same pixels."""
    d = tmp_path_factory.mktemp("inputs")
    imgs = cxr_test_images(3)
    out = {f"png{i}": write_png(d / f"cxr{i}.png", im) for i, im in enumerate(imgs)}
    stored = imgs[0].astype(np.uint16) * 257
    out["dcm0"] = write_dicom(d / "cxr0.dcm", stored, RescaleSlope=0.5, RescaleIntercept=100)
    return out


@pytest.fixture(scope="module")
def int8_bundle(cxr_model, keys, tmp_path_factory) -> Path:
    """The chest X-ray model as an ONNX Runtime INT8 (QDQ) artifact, benched and bundled."""
    from edgemed.backends.onnxruntime import OnnxRuntimeBackend
    from edgemed.pipeline.export import ExportRequest, run_export

    if "int8" not in OnnxRuntimeBackend.precisions:
        pytest.skip("the ONNX Runtime backend has no INT8 export in this checkout")
    root = tmp_path_factory.mktemp("int8")
    art = root / "onnx-int8"
    run_export(
        ExportRequest(
            model=str(cxr_model), target="onnx", out=art, precision="int8", calib=str(CXR)
        )
    )
    report = bench_report(art, root / "bench")
    return make_bundle(art, report, keys[0], root / "int8.bundle", "--modality", "CR")


def test_predict_equals_running_the_artifact_directly(cxr_bundle, cxr_onnx, keys, inputs):
    from edgemed.appliance import load
    from edgemed.artifact import load_artifact
    from edgemed.backends import open_runner, run_batches

    art = load_artifact(cxr_onnx)
    images = cxr_test_images(3)[..., None]
    with open_runner(art, threads=1) as runner:
        expected = art.contract.probabilities(run_batches(runner, art.contract, images))[:, 0]
    with load(cxr_bundle, keys[1], threads=1) as predictor:
        got = [predictor.predict(inputs[f"png{i}"]) for i in range(3)]
    for p, r in zip(expected, got, strict=True):
        assert r["probabilities"]["pneumonia"] == pytest.approx(float(p), abs=1e-7)
        assert r["decision"] == ("pneumonia" if p >= art.contract.threshold else "normal")


def test_cli_predict_prints_one_json_object_per_image(cxr_bundle, keys, inputs):
    from edgemed.fileio import sha256_file

    res = run_cli(
        "predict", cxr_bundle, inputs["png0"], inputs["dcm0"], inputs["png1"], "--pubkey", keys[1]
    )
    assert res.code == 0, res
    rows = [json.loads(line) for line in res.out.strip().splitlines()]
    assert [r["image"] for r in rows] == [str(inputs[k]) for k in ("png0", "dcm0", "png1")]
    manifest = json.loads(member_bytes(read_members(cxr_bundle), "bundle-manifest.json"))
    for r in rows:
        assert set(r["probabilities"]) == {"normal", "pneumonia"}
        assert sum(r["probabilities"].values()) == pytest.approx(1.0)
        assert r["positive"] == (r["probabilities"]["pneumonia"] >= r["threshold"])
        assert r["bundle_id"] == manifest["bundle_id"] and r["bundle_sha256"] == sha256_file(
            cxr_bundle
        )
        assert r["runtime"] == "onnx" and r["precision"] == "fp32" and r["gate"] == "passed"
        assert r["latency_ms"] >= r["inference_ms"] > 0
    assert rows[0]["probabilities"] == rows[1]["probabilities"]  # DICOM of the same pixels


def test_appliance_runs_without_torch(cxr_bundle, keys, inputs):
    code = (
        "import json, sys\n"
        "from edgemed.appliance import load\n"
        f"p = load({str(cxr_bundle)!r}, {str(keys[1])!r})\n"
        f"a = p.predict({str(inputs['png0'])!r}); b = p.predict({str(inputs['dcm0'])!r})\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'tensorflow', 'openvino', 'tensorrt', 'onnx', 'sklearn'})\n"
        "print(json.dumps({'heavy': heavy, 'same': a['probabilities'] == b['probabilities'],"
        " 'pydicom': 'pydicom' in sys.modules, 'ort': 'onnxruntime' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts == {"heavy": [], "same": True, "pydicom": True, "ort": True}


def test_tampered_bundle_is_refused_by_predict(cxr_bundle, keys, inputs, tmp_path):
    members = read_members(cxr_bundle)
    model = bytearray(member_bytes(members, "model/model.onnx"))
    model[len(model) // 3] ^= 0x04
    bad = write_members(
        tmp_path / "bad.bundle", replace_member(members, "model/model.onnx", bytes(model))
    )
    res = run_cli("predict", bad, inputs["png0"], "--pubkey", keys[1])
    assert_user_error(res, "model/model.onnx does not match its sha-256")
    assert res.out == ""


def _tiny(d: Path) -> Path:
    return write_png(d / "tiny.png", cxr_test_images(1)[0][:10, :10])


def _strip(d: Path) -> Path:
    return write_png(d / "strip.png", np.tile(cxr_test_images(1)[0], (1, 6)))


def _missing(d: Path) -> Path:
    return d / "missing.png"


def _text(d: Path) -> Path:
    (d / "notes.png").write_text("not an image")
    return d / "notes.png"


@pytest.mark.parametrize(
    "make,needles",
    [
        (_tiny, ("only 10x10", "at least 14x14", "the model takes 28x28")),
        (_strip, ("too elongated", "4:1")),
        (_missing, ("does not exist",)),
        (_text, ("cannot read image",)),
    ],
    ids=["too-small", "elongated", "missing", "not-an-image"],
)
def test_bad_images_get_their_own_record_and_a_non_zero_exit(
    cxr_bundle, keys, inputs, tmp_path, make, needles
):
    bad = make(tmp_path)
    before = tree_snapshot(tmp_path)
    res = run_cli("predict", cxr_bundle, inputs["png0"], bad, inputs["png1"], "--pubkey", keys[1])
    assert_user_error(res, "1 of 3 images were refused or unreadable")
    records = [json.loads(line) for line in res.out.splitlines()]
    assert [r["status"] for r in records] == ["ok", "unreadable", "ok"]
    assert all(n in records[1]["reason"] for n in needles)
    assert "decision" in records[0] and "decision" in records[2]
    assert tree_snapshot(tmp_path) == before


def _appliance_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("edgemed-appliance-*")}


def test_load_extracts_privately_and_cleans_up(cxr_bundle, keys, tmp_path):
    from edgemed.appliance import load

    before = _appliance_dirs()
    p = load(cxr_bundle, keys[1])
    new = _appliance_dirs() - before
    assert len(new) == 1
    workdir = Path(tempfile.gettempdir()) / new.pop()
    assert workdir.stat().st_mode & 0o077 == 0  # private: owner only
    p.close()
    assert not workdir.exists()
    members = read_members(cxr_bundle)
    bad = write_members(tmp_path / "b.bundle", replace_member(members, "contract.json", b"{}"))
    with pytest.raises(Exception, match="does not match its SHA-256"):
        load(bad, keys[1])
    assert _appliance_dirs() == before


def test_int8_bundle_verifies_and_predicts_on_png_and_dicom(int8_bundle, keys, inputs):
    res = run_cli("verify", int8_bundle, "--pubkey", keys[1])
    assert res.code == 0, res
    manifest = json.loads(member_bytes(read_members(int8_bundle), "bundle-manifest.json"))
    assert manifest["model"]["precision"] == "int8"
    assert manifest["documents"]["calibration_manifest"] in manifest["files"]
    res = run_cli("predict", int8_bundle, inputs["png0"], inputs["dcm0"], "--pubkey", keys[1])
    assert res.code == 0, res
    png, dcm = (json.loads(line) for line in res.out.strip().splitlines())
    assert png["precision"] == "int8" and png["probabilities"] == dcm["probabilities"]
