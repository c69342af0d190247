"""Broken models fail every gate they meet: export, the bench gate, the bundle gate and predict.

Each model is a real ONNX file run by the real runtime on the real chest X-ray images: NaN
outputs, constant outputs, saturated outputs, an untrained 5-output head under a binary
contract, and the real trained CNN with a branch that turns some inputs into NaN.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.bundle_support import keypair, make_bundle, write_png
from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot

FAST = ("--seconds", "0.05", "--min-runs", "3")


def linear_onnx(path: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    """x (N,1,28,28) -> Flatten -> MatMul weight (784, K) -> Add bias: a real ONNX classifier."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = weight.shape[1]
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "B"], ["logits"]),
        ],
        "broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k])],
        [
            numpy_helper.from_array(weight.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


RNG = np.random.default_rng(0)
BROKEN = {
    "nan": (np.zeros((784, 1)), np.array([np.nan]), "non-finite"),
    "constant": (np.zeros((784, 1)), np.array([0.3]), "constant"),
    "saturated": (RNG.normal(0, 1, (784, 1)) * 1e4, np.zeros(1), "saturated"),
    "five-outputs": (RNG.normal(0, 0.01, (784, 5)), np.zeros(5), "needs exactly one logit"),
}


@pytest.fixture(scope="module")
def contract_json(cxr_model, tmp_path_factory) -> Path:
    card = json.loads((cxr_model / "card.json").read_text())
    path = tmp_path_factory.mktemp("contract") / "contract.json"
    path.write_text(json.dumps(card["contract"]))
    return path


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_export_refuses_a_broken_model(kind, contract_json, tmp_path):
    w, b, needle = BROKEN[kind]
    model = linear_onnx(tmp_path / f"{kind}.onnx", w, b)
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", model, "--contract", contract_json, "--data", CXR,
        "--target", "onnx", "--out", tmp_path / "o",
    )  # fmt: skip
    assert_user_error(res, needle)
    assert tree_snapshot(tmp_path) == before


def broken_artifact(good: Path, model: Path, out: Path) -> Path:
    """The real FP32 artifact `good` with its model file replaced (manifest hashes rewritten), so
    bench compares it with the good model's FP32 reference, as for a conversion gone wrong."""
    from edgemed.artifact import write_manifest
    from edgemed.fileio import read_json

    shutil.copytree(good, out)
    shutil.copyfile(model, out / "model.onnx")
    for name in ("domain.json", "domain.npz"):  # fitted on the good model's features
        (out / name).unlink(missing_ok=True)
    manifest = read_json(out / "manifest.json")
    manifest.pop("domain", None)
    for key in ("files", "format"):
        manifest.pop(key)
    write_manifest(out, manifest)
    return out


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_bench_and_bundle_gates_refuse_a_broken_artifact(kind, cxr_onnx, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"broken-{kind}")
    w, b, needle = BROKEN[kind]
    art = broken_artifact(cxr_onnx, linear_onnx(tmp / "m.onnx", w, b), tmp / "art")
    res = run_cli("bench", art, "--data", CXR, *FAST, "--out", tmp / "bench")
    assert_user_error(res, "failed", needle)
    row = json.loads((tmp / "bench" / "results.json").read_text())["rows"][0]
    assert row["status"] == "failed" and row["drift"] is None and needle in row["error"]
    key, _ = keypair(tmp_path_factory)
    res = run_cli("bundle", "--model", art, "--report", tmp / "bench", "--key", key,
                  "--out", tmp / "x.bundle")  # fmt: skip
    assert_user_error(res, "release gate refused", needle)
    assert not (tmp / "x.bundle").exists()


def nan_below(good_onnx: Path, out: Path, mean_below: float) -> Path:
    """The real trained CNN plus a branch that is NaN for images whose mean input is below
    `mean_below` (log of a negative number), else adds exactly 0: fine on the test split."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(good_onnx))
    g = model.graph
    out_name = g.output[0].name
    g.initializer.extend([numpy_helper.from_array(np.array(mean_below, np.float32), "t"),
                          numpy_helper.from_array(np.array(0.0, np.float32), "zero")])  # fmt: skip
    for node in g.node:
        node.output[:] = [f"{o}_pre" if o == out_name else o for o in node.output]
    g.node.extend([
        helper.make_node("ReduceMean", [g.input[0].name], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Sub", ["m", "t"], ["d"]),
        helper.make_node("Log", ["d"], ["l"]),
        helper.make_node("Mul", ["l", "zero"], ["z"]),
        helper.make_node("Unsqueeze", ["z", "one"], ["z2"]),
        helper.make_node("Add", [f"{out_name}_pre", "z2"], [out_name]),
    ])  # fmt: skip
    g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def test_predict_never_prints_nan_or_decides_from_it(cxr_onnx, tmp_path_factory):
    """Bench and the gate pass (the test images are fine), the bundle is signed, and predict on a
    dark image, where this model's output is NaN, is refused with one line and no JSON."""
    from edgemed.contract import Contract

    tmp = tmp_path_factory.mktemp("nan-predict")
    c = Contract.from_dict(json.loads((cxr_onnx / "manifest.json").read_text())["contract"])
    test = np.load(CXR)["test_images"]
    means = c.normalize(test[:, :, :, None]).mean(axis=(1, 2, 3))
    art = broken_artifact(cxr_onnx, nan_below(cxr_onnx / "model.onnx", tmp / "m.onnx",
                                              float(means.min()) - 0.5), tmp / "art")  # fmt: skip
    res = run_cli("bench", art, "--data", CXR, *FAST, "--out", tmp / "bench")
    assert res.code == 0, res.err
    key, pub = keypair(tmp_path_factory)
    bundle = make_bundle(art, tmp / "bench", key, tmp / "x.bundle")
    dark = (test[0].astype(np.float32) * 0.02).astype(np.uint8) + np.arange(28, dtype=np.uint8)
    ok = write_png(tmp / "ok.png", test[0])
    bad = write_png(tmp / "dark.png", dark)
    good = run_cli("predict", bundle, ok, "--pubkey", pub)
    assert good.code == 0 and "NaN" not in good.out, good.err
    res = run_cli("predict", bundle, ok, bad, "--pubkey", pub)
    assert_user_error(res, "1 of 2 images were refused or unreadable")
    records = [json.loads(line, parse_constant=_no_nan) for line in res.out.splitlines()]
    assert [r["status"] for r in records] == ["ok", "failed"]
    assert "non-finite" in records[1]["reason"] and "probabilities" not in records[1]


def _no_nan(name: str) -> float:
    raise AssertionError(f"predict printed {name} as a number")


# ---------------------------------------------------------------- a 3-class model over its limits


@pytest.fixture(scope="module")
def three_class(tmp_path_factory) -> dict:
    """A 3-class set from the real chest X-rays (normal / pneumonia dim / pneumonia bright by
    the image's mean against the training median), a linear ONNX classifier fitted on it by
    ridge least squares, its contract, and its FP32 artifact."""
    from edgemed.pipeline.export import ExportRequest, run_export

    tmp = tmp_path_factory.mktemp("three")
    with np.load(CXR) as f:
        a = {k: f[k] for k in f.files}
    med = np.median(a["train_images"].reshape(len(a["train_images"]), -1).mean(axis=1))
    for s in ("train", "val", "test"):
        bright = a[f"{s}_images"].reshape(len(a[f"{s}_images"]), -1).mean(axis=1) > med
        y = a[f"{s}_labels"].reshape(-1)
        a[f"{s}_labels"] = np.where(y == 0, 0, np.where(bright, 2, 1)).astype(np.uint8)[:, None]
    np.savez(tmp / "cxr3.npz", **a)
    dark = {k: (v * 0.4).astype(np.uint8) if k.endswith("_images") else v for k, v in a.items()}
    np.savez(tmp / "cxr3_dark.npz", **dark)  # calibration far too dark: INT8 clips real images
    x = np.c_[
        (a["train_images"].reshape(-1, 784) / 255.0 - 0.5) / 0.5, np.ones(len(a["train_images"]))
    ]
    y = np.eye(3)[a["train_labels"].reshape(-1)] * 8 - 4
    w = np.linalg.solve(x.T @ x + 10 * np.eye(785), x.T @ y)
    model = linear_onnx(tmp / "m3.onnx", w[:-1], w[-1])
    noisy = linear_onnx(tmp / "noisy.onnx", w[:-1] + RNG.normal(0, 0.8 * w[:-1].std(), (784, 3)),
                        w[-1])  # fmt: skip
    contract = tmp / "c3.json"
    contract.write_text(json.dumps({"input_size": [28, 28], "channels": 1, "task": "multiclass",
                                    "class_names": ["normal", "pneumonia-dim", "pneumonia-bright"],
                                    "mean": [0.5], "std": [0.5]}))  # fmt: skip
    fp32 = tmp / "fp32"
    run_export(ExportRequest(model=str(model), target="onnx", out=fp32, contract=str(contract),
                             data=str(tmp / "cxr3.npz")))  # fmt: skip
    return {"tmp": tmp, "model": model, "noisy": noisy, "contract": contract, "fp32": fp32,
            "data": tmp / "cxr3.npz", "dark": tmp / "cxr3_dark.npz"}  # fmt: skip


def test_export_refuses_a_3class_int8_over_a_tiny_auc_drop(three_class, tmp_path):
    t = three_class
    res = run_cli(
        "export", "--model", t["model"], "--contract", t["contract"], "--data", t["data"],
        "--target", "onnx", "--precision", "int8", "--calib", t["dark"],
        "--max-auc-drop", "0.001", "--max-flip-rate", "1", "--out", tmp_path / "o",
    )  # fmt: skip
    assert res.code == 4
    assert_user_error(res, "AUC drop beyond the band", "> --max-auc-drop 0.001")
    assert not (tmp_path / "o").exists()


def test_bench_and_bundle_refuse_a_3class_artifact_over_a_tiny_auc_drop(
    three_class, tmp_path_factory
):
    t, tmp = three_class, tmp_path_factory.mktemp("three-gates")
    art = broken_artifact(t["fp32"], t["noisy"], tmp / "art")
    res = run_cli("bench", art, "--data", t["data"], "--max-auc-drop", "0.001", *FAST,
                  "--out", tmp / "bench")  # fmt: skip
    assert res.code == 4
    assert_user_error(
        res, "bench gate failed", "AUC drop beyond the band", "> --max-auc-drop 0.001"
    )
    drift = json.loads((tmp / "bench" / "results.json").read_text())["rows"][0]["drift"]
    assert drift["task"] == "multiclass" and drift["auc_drop"] > 0.001
    key, _ = keypair(tmp_path_factory)
    res = run_cli("bundle", "--model", art, "--report", tmp / "bench", "--key", key,
                  "--max-auc-drop", "0.001", "--out", tmp / "x.bundle")  # fmt: skip
    assert_user_error(res, "release gate refused", "> --max-auc-drop 0.001")
    assert not (tmp / "x.bundle").exists()
