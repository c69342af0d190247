"""Accuracy control on a real MONAI ViT with ONNX Runtime INT8 (issue 18).

Trained for 2 epochs at 64 px, the ViT's class token is tiny next to the patch tokens it is
concatenated with, and ONNX Runtime quantizes that sequence with one per-tensor scale wherever a
node reads it: the Concat and both of its consumers (the first LayerNormalization and the first
residual Add). Any one of the three quantized wipes the class token out (measured: 65-81 of 270
decisions flip), so keeping one of them in float changes nothing and exclude-one sensitivity
cannot find them; quantize-alone sensitivity ranks exactly those three first.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import CXR, run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("monai") is None,
        reason="needs monai: pip install 'edgemed[thirdparty]'",
    ),
]
VIT = [
    "--model", "monai.networks.nets:ViT", "--output-index", "0",
    *(f"--model-arg={a}" for a in (
        "in_channels=1", "img_size=64", "patch_size=8", "hidden_size=128", "mlp_dim=256",
        "num_layers=2", "num_heads=4", "classification=true", "num_classes=1", "spatial_dims=2",
        "post_activation=null",
    )),
]  # fmt: skip


def test_quantize_alone_finds_the_layers_sharing_the_class_token_scale(tmp_path):
    model = tmp_path / "model"
    res = run_cli(
        "train", "--data", CXR, *VIT, "--image-size", "64", "--epochs", "2", "--threads", "2",
        "--out", model,
    )  # fmt: skip
    assert res.code == 0, res.err
    contract = tmp_path / "contract.json"
    contract.write_text(json.dumps(json.loads((model / "card.json").read_text())["contract"]))
    out = tmp_path / "int8"
    res = run_cli(
        "export", *VIT, "--checkpoint", model / "model.pt", "--contract", contract,
        "--data", CXR, "--target", "onnx", "--precision", "int8", "--calib", CXR,
        "--calib-count", "128", "--accuracy-control", "--out", out,
    )  # fmt: skip
    assert res.code == 0, res.err
    m = json.loads((out / "manifest.json").read_text())
    ac = m["accuracy_control"]
    first = ac["attempts"][0]
    assert first["step"] == "requested" and not first["within_budget"]
    assert first["decisive_flips"] > 27  # > 10% of 270: the class token is gone
    top3 = [r["node"] for r in ac["sensitivity_quantize_alone"][:3]]
    assert sorted(n.rsplit("/", 1)[-1].rstrip("_0123456789") for n in top3) == [
        "Add", "Concat", "LayerNormalization",
    ]  # fmt: skip
    assert set(top3) <= set(ac["excluded_nodes"])
    assert len(ac["excluded_nodes"]) <= 6  # a few layers, not most of the graph
    ops = m["backend"]["int8_ops"]
    assert ops["fraction"] >= 0.75, ops
    assert m["drift"]["decisive_flip_rate"] <= 0.01 and m["drift"]["auc_drop"] <= 0.005
    # exclude-one's order, grown to the same size, did not hold: it is blind here
    same = [a for a in ac["attempts"] if a["step"] == "fallback"]
    assert same and not any(a["within_budget"] for a in same)
