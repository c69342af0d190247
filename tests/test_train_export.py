"""`edgemed train` and `edgemed export --target onnx` on real data, and every bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgemed.data import load_dataset
from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot


def test_card_records_what_a_user_needs(cxr_model):
    card = json.loads((cxr_model / "card.json").read_text())
    t = card["test"]
    for key in ("auc", "auc_ci95", "accuracy", "sensitivity", "specificity", "threshold"):
        assert key in t
    assert t["auc"] > 0.85
    assert card["complexity"]["params"] > 0 and card["complexity"]["macs"] > 0
    assert card["training"]["seconds"] > 0 and card["data"]["data_hash"]
    assert card["contract"]["threshold"] == t["threshold"]
    assert card["provenance"]["runtimes"]["torch"].startswith("2.")


def test_train_cli_on_brain_mri_with_progress(brain_dir, tmp_path):
    out = tmp_path / "brain"
    res = run_cli(
        "train",
        "--data",
        brain_dir,
        "--image-size",
        "32",
        "--epochs",
        "2",
        "--width",
        "0.25",
        "--batch-size",
        "32",
        "--out",
        out,
    )
    assert res.code == 0, res.err
    assert "epoch 2/2" in res.err and "test AUC" in res.out
    card = json.loads((out / "card.json").read_text())
    assert card["data"]["duplicates"]["exact_redundant"] == 25
    assert card["contract"]["input_size"] == [32, 32]


def test_onnx_export_parity_and_manifest(cxr_onnx):
    m = json.loads((cxr_onnx / "manifest.json").read_text())
    assert (
        m["parity"]["max_abs_dp"] < 1e-4 and m["parity"]["flips"] == 0 and m["parity"]["n"] == 270
    )
    assert m["runtime"] == "onnx" and m["precision"] == "fp32"
    assert set(m["files"]) >= {"model.onnx", "card.json"}
    for key in ("edgemed", "runtimes", "inputs", "config"):
        assert key in m["provenance"]
    assert m["provenance"]["inputs"]["model"] and m["provenance"]["inputs"]["data"]


def test_exported_onnx_runs_without_edgemed(cxr_onnx):
    """Only onnx + onnxruntime + numpy + the embedded contract: reproduce the decisions."""
    model = onnx.load(cxr_onnx / "model.onnx")
    contract = json.loads({p.key: p.value for p in model.metadata_props}["edgemed.contract"])
    images = np.load(CXR)["test_images"][:64].astype(np.float32) / contract["scale"]
    x = ((images - contract["mean"][0]) / contract["std"][0])[:, None]
    sess = ort.InferenceSession(str(cxr_onnx / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == "batch"  # dynamic batch axis
    logits = sess.run(None, {"input": x.astype(np.float32)})[0]
    p = 1 / (1 + np.exp(-logits[:, 0]))
    labels = np.load(CXR)["test_labels"][:64, 0]
    assert ((p >= contract["threshold"]) == labels).mean() > 0.8


def test_export_from_checkpoint_and_from_onnx(cxr_model, cxr_onnx, tmp_path):
    res = run_cli(
        "export",
        "--model",
        cxr_model / "model.pt",
        "--target",
        "onnx",
        "--data",
        CXR,
        "--out",
        tmp_path / "a",
    )
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["parity"]["flips"] == 0
    res = run_cli(
        "export",
        "--model",
        cxr_onnx / "model.onnx",
        "--target",
        "onnx",
        "--data",
        CXR,
        "--out",
        tmp_path / "b",
    )
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["source"]["kind"] == "onnx"


def test_export_factory_spec_with_contract(cxr_model, tmp_path):
    contract = json.loads((cxr_model / "card.json").read_text())["contract"]
    (tmp_path / "c.json").write_text(json.dumps(contract))
    res = run_cli(
        "export",
        "--model",
        "edgemed.models.zoo:CompactCNN",
        "--model-arg",
        "width=0.5",
        "--contract",
        tmp_path / "c.json",
        "--target",
        "onnx",
        "--data",
        CXR,
        "--out",
        tmp_path / "f",
    )
    assert res.code == 0, res.err


def test_simplify_option(cxr_model, tmp_path):
    res = run_cli(
        "export", "--model", cxr_model, "--target", "onnx", "--simplify", "--out", tmp_path / "s"
    )
    assert res.code == 0, res.err
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["simplify"]["tool"] == "onnxslim" and m["parity"]["flips"] == 0


@pytest.fixture
def corrupt_files(tmp_path, cxr_model):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint at all")
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage-protobuf")
    trunc = (cxr_model / "model.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(trunc[: len(trunc) // 2])
    return tmp_path


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--model", "{tmp}/missing.pt"], ["checkpoint", "does not exist"]),
        (["--model", "{tmp}/corrupt.pt"], ["corrupt"]),
        (["--model", "{tmp}/truncated.pt"], ["corrupt"]),
        (["--model", "{tmp}/corrupt.onnx"], ["not a valid onnx"]),
        (["--model", "{tmp}/missing.onnx"], ["does not exist"]),
        (["--model", "vgg-huge"], ["not found"]),
        (
            ["--model", "no_such_pkg.nets:Net", "--contract", "{tmp}/missing.json"],
            ["contract file"],
        ),
        (["--model", "{model}", "--target", "coreml"], ["unknown target", "onnx"]),
    ],
)
def test_export_bad_inputs(args, needles, corrupt_files, cxr_model):
    argv = [a.format(tmp=corrupt_files, model=cxr_model) for a in args]
    if "--target" not in argv:
        argv += ["--target", "onnx"]
    out = corrupt_files / "out"
    before = tree_snapshot(corrupt_files)
    res = run_cli("export", *argv, "--out", out)
    assert_user_error(res, *needles)
    assert not out.exists() and tree_snapshot(corrupt_files) == before


def test_unknown_factory_is_one_line(tmp_path, cxr_model):
    contract = json.loads((cxr_model / "card.json").read_text())["contract"]
    (tmp_path / "c.json").write_text(json.dumps(contract))
    res = run_cli(
        "export",
        "--model",
        "no_such_pkg.nets:Net",
        "--contract",
        tmp_path / "c.json",
        "--target",
        "onnx",
        "--out",
        tmp_path / "o",
    )
    assert_user_error(res, "cannot import")


def test_existing_output_is_refused_and_untouched(cxr_model, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    res = run_cli("export", "--model", cxr_model, "--target", "onnx", "--out", out)
    assert_user_error(res, "already exists", "--force")
    assert (out / "keep.txt").read_text() == "precious" and len(list(out.iterdir())) == 1
    res = run_cli("train", "--data", CXR, "--epochs", "1", "--out", out)
    assert_user_error(res, "already exists")
    res = run_cli("export", "--model", cxr_model, "--target", "onnx", "--out", out, "--force")
    assert res.code == 0 and (out / "manifest.json").exists() and not (out / "keep.txt").exists()


def test_interrupted_export_leaves_nothing(cxr_model, tmp_path, monkeypatch):
    import edgemed.backends.onnxruntime as ortb

    def boom(self, req, out):
        (out / "model.onnx").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(ortb.OnnxRuntimeBackend, "convert", boom)
    res = run_cli("export", "--model", cxr_model, "--target", "onnx", "--out", tmp_path / "x")
    assert res.code == 130 and "interrupted" in res.err
    assert list(tmp_path.iterdir()) == []  # no output, no temp dir


@pytest.mark.parametrize(
    "make, needles",
    [
        ("empty", ["no images"]),
        ("oneclass", ["only one class"]),
        ("unreadable", ["bad file.jpg"]),
        ("nokeys", ["lacks the keys"]),
        ("missing", ["does not exist"]),
    ],
)
def test_train_bad_data(make, needles, tmp_path):
    from PIL import Image

    data = tmp_path / make
    if make == "empty":
        data.mkdir()
    elif make in ("oneclass", "unreadable"):
        for cls in ("only",) if make == "oneclass" else ("a", "b"):
            (data / cls).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / cls / "ok.png")
        if make == "unreadable":
            (data / "a" / "bad file.jpg").write_bytes(b"\xff\xd8\xff garbage")
    elif make == "nokeys":
        data = tmp_path / "x.npz"
        np.savez(data, images=np.zeros((2, 4, 4)))
    res = run_cli("train", "--data", data, "--epochs", "1", "--out", tmp_path / "out")
    assert_user_error(res, *needles)
    assert not (tmp_path / "out").exists()


def test_changed_training_data_is_not_used_silently(cxr_model, tmp_path):
    moved = tmp_path / "model"
    shutil.copytree(cxr_model, moved)
    card = json.loads((moved / "card.json").read_text())
    card["data"]["data_hash"] = "0" * 64
    (moved / "card.json").write_text(json.dumps(card))
    res = run_cli("export", "--model", moved, "--target", "onnx", "--out", tmp_path / "o")
    assert_user_error(res, "changed since the model was trained")


def test_brain_split_reproduced_for_parity(brain_dir, brain_model):
    card = json.loads((brain_model / "card.json").read_text())
    ds = load_dataset(
        brain_dir,
        (64, 64),
        1,
        seed=card["data"]["split"]["seed"],
        fractions=tuple(card["data"]["split"]["fractions"]),
    )
    assert ds.data_hash == card["data"]["data_hash"]
    assert len(ds.split("test")) == card["test"]["n"]
