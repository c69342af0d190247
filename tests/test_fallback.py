"""Drift budget and accuracy-aware fallback, run for real with ONNX Runtime on the chest X-ray model.

A coarse percentile calibration (clipping the top 1% or 40% of every activation) forces real drift,
so the budget is exceeded deterministically without touching the budget arithmetic. The chest
X-ray CNN has 10 nodes ONNX Runtime quantizes (7 conv, global pool, flatten, gemm): accuracy
control's candidates are read from the quantized graph and ranked twice (exclude-one and
quantize-alone). At 99% every layer but one must stay float and 3 flips remain, so the budget allows 4 (1.5%): the search must stop before the all-float model,
which is never an INT8 answer.
"""

from __future__ import annotations

import json

import pytest

from edgemed.pipeline.fallback import BLIND_FRACTION
from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot

CLIPPED = ("--calib-method", "percentile", "--option")


def _int8(cxr_model, out, percentile: float, *extra: str):
    return run_cli(
        "export", "--model", cxr_model, "--target", "onnx", "--out", out,
        "--precision", "int8", "--calib", CXR, "--calib-count", "128",
        *CLIPPED, f"calib_percentile={percentile}", *extra,
    )  # fmt: skip


def test_over_budget_without_accuracy_control_names_the_numbers(cxr_model, tmp_path):
    before = tree_snapshot(tmp_path)
    res = _int8(cxr_model, tmp_path / "o", 99.0)
    assert_user_error(
        res, "beyond the budget", "decisive flip rate", "--max-flip-rate 0.01", "--accuracy-control"
    )
    assert "borderline band 0.001" in res.err and "95% CI" in res.err
    assert res.code == 4
    assert tree_snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def controlled(cxr_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fallback") / "o"
    res = _int8(cxr_model, out, 99.0, "--accuracy-control", "--max-flip-rate", "0.015")
    assert res.code == 0, res.err
    return res, json.loads((out / "manifest.json").read_text()), out


def test_accuracy_control_grows_the_float_layers_until_the_budget_holds(controlled):
    res, m, _ = controlled
    ac = m["accuracy_control"]
    attempts = ac["attempts"]
    assert attempts[0]["step"] == "requested" and not attempts[0]["within_budget"]
    sens = [a for a in attempts if a["step"] == "sensitivity"]
    alone = [a for a in attempts if a["step"] == "alone"]
    # quantize-alone runs only where exclude-one is blind, decided from the recorded numbers
    blind = min(a["budget_used"] for a in sens) >= BLIND_FRACTION * attempts[0]["budget_used"]
    assert ac["exclude_one_blind"] is blind
    if blind:
        assert ac["rankings"] == ["exclude-one", "quantize-alone"]
    if alone:  # every node but one in float, each probe measured (none skipped as "float")
        assert len(alone) == len(ac["sensitivity_quantize_alone"]) == 10
        assert all(len(a["excluded"]) == 9 and "drift" in a for a in alone)
    for step, ranking in (("fallback", ac["sensitivity"]), ("alone-fallback", None)):
        grow = [a for a in attempts if a["step"] == step]
        for prev, cur in zip(grow, grow[1:], strict=False):  # one more layer in float per step
            assert cur["excluded"][: len(prev["excluded"])] == prev["excluded"]
            assert len(cur["excluded"]) == len(prev["excluded"]) + 1
        if ranking and grow:
            assert grow[0]["excluded"] == [r["node"] for r in ranking[:2]]
        assert not any(a["within_budget"] for a in grow[:-1])  # it stopped at the first that held
    grown = [a for a in attempts if a["step"] in ("fallback", "alone-fallback")] or sens[:1]
    chosen = next(a for a in grown if a["excluded"] == ac["excluded_nodes"])
    assert chosen["within_budget"]
    smaller = [a for a in grown if len(a["excluded"]) < len(chosen["excluded"])]
    assert not any(a["within_budget"] for a in smaller)  # the fewest layers in float that held
    assert m["backend"]["excluded_nodes"] == ac["excluded_nodes"]
    assert m["drift"]["decisive_flip_rate"] <= 0.015 and m["drift"]["auc_drop"] <= 0.005
    assert "accuracy control" in res.err  # progress lines name each attempt
    ops = m["backend"]["int8_ops"]
    assert 0 < ops["quantized"] < ops["total"] == 8, ops  # not the FP32 model
    if ops["fraction"] < 0.5:
        assert ops["note"] and "edgemed: note: only" in res.err


def test_excluded_layers_really_stay_float(controlled):
    import onnx

    _, m, out = controlled
    g = onnx.load(str(out / "model.onnx")).graph
    producers = {o: n for n in g.node for o in n.output}
    excluded = set(m["accuracy_control"]["excluded_nodes"])
    weight_is_int8 = {
        n.name: getattr(producers.get(n.input[1]), "op_type", None) == "DequantizeLinear"
        for n in g.node
        if n.op_type == "Conv"
    }
    assert excluded & set(weight_is_int8)
    for name, int8 in weight_is_int8.items():
        assert int8 == (name not in excluded), name


def test_accuracy_control_fails_with_the_table_of_what_was_tried(cxr_model, tmp_path):
    before = tree_snapshot(tmp_path)
    res = _int8(cxr_model, tmp_path / "o", 60.0, "--accuracy-control", "--max-float-layers", "2")
    assert_user_error(
        res,
        "could not bring",
        "with 2 of 10 layers in float",
        "by exclude-one sensitivity and by quantize-alone",
        "none: ",
        "+/",
        "quantize-alone order +/",
        "--max-float",
    )
    assert res.code == 4
    assert tree_snapshot(tmp_path) == before


def test_max_float_layers_needs_accuracy_control(cxr_model, tmp_path):
    before = tree_snapshot(tmp_path)
    res = _int8(cxr_model, tmp_path / "o", 99.0, "--max-float-layers", "2")
    assert_user_error(res, "--max-float-layers applies only with --accuracy-control")
    assert res.code == 2
    assert tree_snapshot(tmp_path) == before


def test_accuracy_control_needs_validation_images(cxr_onnx, tmp_path):
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", cxr_onnx / "model.onnx", "--target", "onnx", "--out", tmp_path / "o",
        "--precision", "int8", "--calib", CXR, "--calib-count", "64", "--accuracy-control",
    )  # fmt: skip
    assert_user_error(res, "no validation data on record", "--data")
    assert tree_snapshot(tmp_path) == before


def test_backend_without_layer_control_says_so(cxr_model, tmp_path, monkeypatch):
    import edgemed.pipeline.export
    from edgemed.backends.onnxruntime import OnnxRuntimeBackend

    class NoLayerControl(OnnxRuntimeBackend):  # the real runtime, without the fallback hook
        def quantizable_nodes(self, req):
            return ()

    monkeypatch.setattr(edgemed.pipeline.export, "get_backend", lambda name: NoLayerControl())
    before = tree_snapshot(tmp_path)
    res = _int8(cxr_model, tmp_path / "o", 99.0, "--accuracy-control")
    assert_user_error(res, "cannot keep layers in float", "higher precision")
    assert tree_snapshot(tmp_path) == before


def test_drift_records_how_far_each_flip_was_from_the_threshold():
    import numpy as np

    from edgemed.contract import Contract
    from edgemed.evaluation.drift import drift_from_logits

    c = Contract(input_size=(28, 28), channels=1, class_names=("normal", "pneumonia"))
    logit = lambda p: np.log(np.asarray(p) / (1 - np.asarray(p))).reshape(-1, 1)  # noqa: E731
    ref, cand = logit([0.51, 0.9, 0.2, 0.7]), logit([0.49, 0.88, 0.6, 0.71])
    d = drift_from_logits(c, ref, cand, np.array([1, 1, 0, 0]))
    assert d.flips == 2 and d.flip_margins == pytest.approx((0.01, 0.3))
    assert (d.borderline_flips, d.decisive_flips) == (0, 2)  # 0.01 is outside the 0.001 band
    assert "2 decisive (farthest 0.3000)" in d.margin_note()
    assert d.to_dict()["flip_margins"] == pytest.approx([0.01, 0.3])


def test_flip_budget_finer_than_one_image_is_warned(cxr_model, tmp_path):
    """270 validation images: one flip is 0.37%, so --max-flip-rate 0.002 means zero flips."""
    res = run_cli(
        "export", "--model", cxr_model, "--target", "onnx", "--out", tmp_path / "o",
        "--precision", "fp16", "--max-flip-rate", "0.002",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "one decisive flip on the 270 validation images is 0.37%" in res.err
    assert "allows no decisive flip on this split (one needs >= 500 images)" in res.err
