"""No code from data: a checkpoint or artifact naming `package.module:factory` never gets it run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot

torch = pytest.importorskip("torch")


def evil_checkpoint(cxr_model: Path, dest: Path, marker: Path) -> Path:
    """The real trained checkpoint with its arch replaced by `subprocess:getoutput`."""
    data = torch.load(cxr_model / "model.pt", map_location="cpu", weights_only=True)
    data["arch"] = {"name": "subprocess:getoutput", "kwargs": {"cmd": f"touch {marker}"}}
    dest.mkdir(parents=True, exist_ok=True)
    torch.save(data, dest / "model.pt")
    shutil.copy(cxr_model / "card.json", dest / "card.json")
    return dest


@pytest.fixture()
def evil(cxr_model, tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    return evil_checkpoint(cxr_model, tmp_path / "evil", marker), marker


def test_export_refuses_checkpoint_factory(evil, tmp_path):
    d, marker = evil
    for model in (d, d / "model.pt"):
        res = run_cli("export", "--model", model, "--target", "onnx", "--out", tmp_path / "o")
        assert_user_error(res, "subprocess:getoutput", "not a zoo architecture")
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_compress_refuses_checkpoint_factory(evil, tmp_path):
    d, marker = evil
    res = run_cli(
        "compress", "--model", d, "--method", "prune", "--amount", "0.5", "--out", tmp_path / "c"
    )
    assert_user_error(res, "subprocess:getoutput", "not a zoo architecture")
    assert not marker.exists() and not (tmp_path / "c").exists()


def test_factory_named_on_command_line_must_match_the_file(evil, tmp_path):
    d, marker = evil
    contract = json.loads((d / "card.json").read_text())["contract"]
    (tmp_path / "c.json").write_text(json.dumps(contract))
    res = run_cli(
        "export",
        "--model",
        "edgemed.models.zoo:CompactCNN",
        "--checkpoint",
        d / "model.pt",
        "--target",
        "onnx",
        "--out",
        tmp_path / "o",
    )
    assert_user_error(res, "subprocess:getoutput", "edgemed.models.zoo:CompactCNN")
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_bench_worker_never_imports_a_factory_named_by_an_artifact(evil, cxr_onnx, tmp_path):
    d, marker = evil
    art = tmp_path / "art"
    shutil.copytree(cxr_onnx, art)
    manifest = json.loads((art / "manifest.json").read_text())
    from edgemed.fileio import sha256_file

    evil_pt = d / "model.pt"
    manifest["source"] = {
        "kind": "checkpoint",
        "path": str(evil_pt),
        "sha256": sha256_file(evil_pt),
    }
    (art / "manifest.json").write_text(json.dumps(manifest))
    before = tree_snapshot(tmp_path / "art")
    res = run_cli(
        "bench", art, "--data", CXR, "--out", tmp_path / "b", "--seconds", "0.05", "--min-runs", "3"
    )
    assert_user_error(res, "reference")
    assert "not a zoo architecture" in res.err
    assert not marker.exists()
    assert tree_snapshot(tmp_path / "art") == before
