"""One corrupted artifact among several becomes its own failed row; the others are still benched."""

from __future__ import annotations

import json
import shutil

from tests.conftest import CXR, assert_user_error, run_cli


def test_corrupted_artifact_is_a_failed_row_not_a_refused_run(cxr_onnx, tmp_path):
    good = shutil.copytree(cxr_onnx, tmp_path / "good")
    bad = shutil.copytree(cxr_onnx, tmp_path / "bad")
    model = bad / json.loads((bad / "manifest.json").read_text())["model_file"]
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    model.write_bytes(bytes(raw))
    out = tmp_path / "b"
    res = run_cli(
        "bench", good, bad, "--data", CXR, "--out", out, "--seconds", "0.05", "--min-runs", "3"
    )
    assert_user_error(res, "1 of 2 configurations failed", "does not match its manifest hash")
    rows = {r["artifact"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows[str(good)]["status"] == "ok" and rows[str(good)]["drift"] is not None
    assert rows[str(bad)]["status"] == "failed" and rows[str(bad)]["latency"] is None
    assert "does not match its manifest hash" in rows[str(bad)]["error"]


def test_a_single_corrupted_artifact_is_still_refused(cxr_onnx, tmp_path):
    bad = shutil.copytree(cxr_onnx, tmp_path / "bad")
    (bad / json.loads((bad / "manifest.json").read_text())["model_file"]).write_bytes(b"x")
    res = run_cli("bench", bad, "--data", CXR, "--out", tmp_path / "b")
    assert_user_error(res, "does not match its manifest hash")
    assert not (tmp_path / "b").exists()
