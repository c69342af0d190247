"""The probe: one forward pass before data loading turns third-party model mistakes into one line.

Each error case goes through the real CLI with real torch modules (tests/probe_models.py) or real
ONNX files; `--data` points at a path that does not exist (export) or at images that cannot be
decoded (train), so a probe error proves it came before any data was read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgemed.contract import Contract
from tests.conftest import CXR, assert_user_error, run_cli

M = "tests.probe_models"


@pytest.fixture
def contract_file(tmp_path) -> Path:
    c = Contract(input_size=(28, 28), channels=1, class_names=("normal", "pneumonia"))
    path = tmp_path / "contract.json"
    path.write_text(c.to_json())
    return path


def export(tmp_path, contract_file, model, *extra, data=None, precision="fp32"):
    data = data or tmp_path / "no-data-here.npz"  # never read when the probe refuses first
    return run_cli(
        "export", "--model", model, "--contract", contract_file, "--target", "onnx",
        "--precision", precision, "--data", data, "--out", tmp_path / "out", *extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("factory", "args", "needles"),
    [
        ("Small", ["--model-arg", "out_channels=2"], ["gives 2 logits", "exactly ONE logit"]),
        ("TupleNet", [], ["returns a tuple of 2 outputs", "--output-index 0"]),
        ("DictNet", [], ["returns a dict of 2 outputs", "--output-name features"]),
        ("Small", ["--model-arg", "in_channels=3"], ["takes 3-channel input", "in_channels=1"]),
        ("Deep", [], ["too small", "smallest input that runs: 112 px"]),
        ("Spatial", [], ["returns shape 2x1x28x28", "pool or flatten"]),
        ("LazyImport", [], ["'edgemed_absent_optional_dep'", "pip install"]),
        ("needs_missing_dependency", [], ["'edgemed_absent_optional_dep'", "pip install"]),
        ("Small", ["--output-index", "0"], ["single tensor", "drop --output-index"]),
        ("DictNet", ["--output-name", "probs"], ["no output 'probs'", "'logits'"]),
    ],
)
def test_export_probe_errors(tmp_path, contract_file, factory, args, needles):
    res = export(tmp_path, contract_file, f"{M}:{factory}", *args)
    assert_user_error(res, *needles)
    assert len(res.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_factory_module_is_not_a_pip_package(tmp_path, contract_file):
    res = export(tmp_path, contract_file, "tests.no_such_module:Net")
    assert_user_error(res, "no module 'tests.no_such_module'", "PYTHONPATH")


@pytest.mark.parametrize(("flag", "value"), [("--output-index", "0"), ("--output-name", "logits")])
def test_chosen_output_exports_and_runs_outside_edgemed(tmp_path, contract_file, flag, value):
    import numpy as np
    import onnxruntime as ort

    factory = "TupleNet" if flag == "--output-index" else "DictNet"
    res = export(tmp_path, contract_file, f"{M}:{factory}", flag, value, data=CXR)
    assert res.code == 0, res.err
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["contract"]["input_name"] == "input" and m["contract"]["output_name"] == "logits"
    assert m["parity"]["against"] == "torch" and m["parity"]["flips"] == 0
    sess = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    x = np.zeros((3, 1, 28, 28), np.float32)
    y, features = sess.run(None, {sess.get_inputs()[0].name: x})  # logits first, then the
    assert y.shape == (3, 1) and len(features) == 3  # domain guard's feature output
    assert [o.name for o in sess.get_outputs()] == ["logits", "features"]


def _onnx(path: Path, module, names=("x",), outputs=("y",), dynamic=True) -> Path:
    import torch

    axes = {n: {0: "b"} for n in (*names, *outputs)} if dynamic else None
    torch.onnx.export(
        module.eval(), torch.zeros(4 if not dynamic else 2, 1, 28, 28), str(path),
        input_names=list(names), output_names=list(outputs), dynamic_axes=axes, dynamo=False,
    )  # fmt: skip
    return path


def test_onnx_with_two_outputs_names_them(tmp_path, contract_file):
    from tests.probe_models import TupleNet

    path = _onnx(tmp_path / "two.onnx", TupleNet(), outputs=("logit", "feat"))
    res = export(tmp_path, contract_file, path)
    assert_user_error(res, "has 2 outputs", "logit: 2x1", "feat: 2x8", "--output-name logit")
    res = export(tmp_path, contract_file, path, "--output-name", "nope")
    assert_user_error(res, "no output 'nope'", "logit, feat")


def test_onnx_output_name_exports_with_its_own_names(tmp_path, contract_file):
    from tests.probe_models import TupleNet

    path = _onnx(tmp_path / "two.onnx", TupleNet(), outputs=("logit", "feat"))
    res = export(tmp_path, contract_file, path, "--output-name", "logit", data=CXR)
    assert res.code == 0, res.err
    assert "parity vs source ONNX" in res.out
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (m["contract"]["input_name"], m["contract"]["output_name"]) == ("x", "logit")


def test_fixed_batch_onnx_is_refused_before_data(tmp_path, contract_file):
    from tests.probe_models import Small

    res = export(tmp_path, contract_file, _onnx(tmp_path / "b4.onnx", Small(), dynamic=False))
    assert_user_error(res, "fixed batch of 4", "dynamic batch axis")


def test_batch1_onnx_is_refused_for_int8_only(tmp_path, contract_file):
    import onnx

    from tests.probe_models import Small

    path = _onnx(tmp_path / "b1.onnx", Small(), dynamic=True)
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(path))
    res = export(tmp_path, contract_file, path, "--calib", CXR, precision="int8")
    assert_user_error(res, "fixed batch of 1", "INT8 calibration")


def test_onnx_source_requires_data(tmp_path, contract_file):
    from tests.probe_models import Small

    path = _onnx(tmp_path / "m.onnx", Small())
    res = run_cli(
        "export", "--model", path, "--contract", contract_file, "--target", "onnx",
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert_user_error(res, "no validation data on record", "--data")
    res = run_cli(
        "export", "--model", f"{M}:Small", "--contract", contract_file, "--target", "onnx",
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert_user_error(res, "factory model has no validation data", "--data")


def test_dead_onnx_is_caught_by_output_sanity_not_parity(tmp_path, contract_file):
    """Every image gets the same logit 0 (p = 0.5, on the threshold): sanity refuses it."""
    import torch

    from tests.probe_models import Small

    dead = Small()
    with torch.no_grad():
        dead.head.weight.zero_()
        dead.head.bias.zero_()
    res = export(tmp_path, contract_file, _onnx(tmp_path / "dead.onnx", dead), data=CXR)
    assert_user_error(res, "same output for all")
    assert "--parity-tol" not in res.err


@pytest.fixture
def undecodable_folder(tmp_path) -> Path:
    """Two class folders whose 'images' cannot be decoded: reading them would fail."""
    for cls in ("normal", "pneumonia"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        (tmp_path / "data" / cls / "a.png").write_bytes(b"not a png")
    return tmp_path / "data"


@pytest.mark.parametrize(
    ("factory", "args", "needles"),
    [
        ("Small", ["--model-arg", "out_channels=2"], ["exactly ONE logit"]),
        ("TupleNet", [], ["--output-index 0"]),
        ("Deep", ["--image-size", "28"], ["smallest input that runs: 112 px"]),
        ("Small", ["--model-arg", "in_channels=3"], ["in_channels=1"]),
    ],
)
def test_train_probe_errors_come_before_reading_images(
    tmp_path, undecodable_folder, factory, args, needles
):
    res = run_cli(
        "train", "--data", undecodable_folder, "--model", f"{M}:{factory}", *args,
        "--epochs", "1", "--out", tmp_path / "t",
    )  # fmt: skip
    assert_user_error(res, *needles)
    assert not (tmp_path / "t").exists()


def test_train_with_output_index_trains_and_exports(tmp_path):
    res = run_cli(
        "train", "--data", CXR, "--model", f"{M}:TupleNet", "--output-index", "0",
        "--epochs", "1", "--out", tmp_path / "t",
    )  # fmt: skip
    assert res.code == 0, res.err
    res = run_cli(
        "export", "--model", f"{M}:TupleNet", "--checkpoint", tmp_path / "t" / "model.pt",
        "--data", CXR, "--target", "onnx", "--out", tmp_path / "o",
    )  # fmt: skip
    assert res.code == 0, res.err
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["source"]["arch"]["output"] == 0


def test_monai_network_too_small_names_the_size_that_runs(tmp_path, contract_file):
    pytest.importorskip("monai", reason="monai not installed (pip install 'edgemed[thirdparty]')")
    res = export(
        tmp_path, contract_file, "monai.networks.nets:EfficientNetBN",
        "--model-arg", "model_name=efficientnet-b0", "--model-arg", "spatial_dims=2",
        "--model-arg", "in_channels=1", "--model-arg", "num_classes=1",
        "--model-arg", "pretrained=false",
    )  # fmt: skip
    assert_user_error(res, "too small", "smallest input that runs: 56 px")
