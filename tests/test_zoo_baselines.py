"""The literature's baselines in the zoo (VGG-, Inception-, ResNet-50-style, a small ViT): each
trains at 28 px and exports to every CPU runtime, FP32 parity-checked on real chest X-rays."""

from __future__ import annotations

import json

import pytest

from tests.conftest import CXR, assert_user_error, run_cli

# Small settings of each family, so one epoch on 2 shared cores takes seconds.
BASELINES = {
    "vgg": ("--width", "0.25", "--depth", "0.5"),
    "inception": ("--width", "0.125", "--depth", "0.34"),
    "resnet50": ("--width", "0.125", "--depth", "0.25"),
    "vit": ("--width", "0.5", "--depth", "0.5"),
}
TARGETS = ("onnx", "openvino", "tflite")


@pytest.fixture(scope="module", params=sorted(BASELINES))
def trained(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"zoo-{request.param}") / "model"
    res = run_cli(
        "train", "--data", CXR, "--model", request.param, *BASELINES[request.param],
        "--epochs", "1", "--threads", "2", "--out", out,
    )  # fmt: skip
    assert res.code == 0, res.err
    return request.param, out


@pytest.mark.parametrize("target", TARGETS)
def test_baseline_exports_to_every_cpu_target(trained, target, tmp_path):
    name, model = trained
    res = run_cli("export", "--model", model, "--target", target, "--out", tmp_path / target)
    assert res.code == 0, (name, res.err)
    m = json.loads((tmp_path / target / "manifest.json").read_text())
    assert m["source"]["arch"]["name"] == name
    assert m["parity"]["n"] > 0 and m["parity"]["decisive_flips"] == 0
    assert m["drift"]["decisive_flips"] == 0  # FP32 in each runtime matches torch


# Measured refusals (one line, with the cause), kept as facts a change must revisit. Inception on
# TFLite: the LiteRT converter refuses a Concat whose inputs carry different INT8 scales, which
# the PT2E quantizer gives the branches (on every CPU).
INT8_REFUSED = {("inception", "tflite"): "litert-torch could not conv"}
# Refused on some CPUs only: ViT on OpenVINO, NNCF INT8 gave 19 decisive flips of 270 on an
# AVX2-only EPYC (budget 1%; --accuracy-control keeps 4 layers in float and passes, 172 s) and
# 1 of 270 on an AVX-512 VNNI EPYC, whose INT8 kernels differ. Either outcome is checked: a
# one-line refusal naming the budget, or an artifact within it.
# ResNet-50 (w 0.125) on ONNX Runtime after the training recipe of issue 27 (one epoch = the
# warm-up alone): 4 decisive flips of 270 (1.5%) on an AVX-512 VNNI/AMX Xeon in the whole-suite run,
# within budget in the branch's own runs; a barely trained model sits near its threshold.
INT8_CPU_DEPENDENT = {
    ("vit", "openvino"): "drifted beyond the budget",
    ("resnet50", "onnx"): "drifted beyond the budget",
}


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_baseline_int8_on_every_cpu_target(trained, target, tmp_path):
    """Static INT8 calibrated on the training images: within the default drift budget, or
    refused in one line with the measured cause (INT8_REFUSED, INT8_CPU_DEPENDENT)."""
    name, model = trained
    res = run_cli(
        "export", "--model", model, "--target", target, "--precision", "int8",
        "--calib", CXR, "--calib-count", "128", "--out", tmp_path / target,
    )  # fmt: skip
    cause = INT8_REFUSED.get((name, target))
    if cause is None and res.code != 0:
        cause = INT8_CPU_DEPENDENT.get((name, target))
    if cause is not None:
        assert_user_error(res, cause)
        assert not (tmp_path / target).exists()
        return
    assert res.code == 0, (name, res.err)
    m = json.loads((tmp_path / target / "manifest.json").read_text())
    assert m["precision"] == "int8" and m["drift"]["n"] > 0
    assert m["drift"]["decisive_flips"] <= 0.01 * m["drift"]["n"]  # the default budget held
