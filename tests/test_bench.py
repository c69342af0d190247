"""`edgemed bench` end to end on real artifacts and data: outputs, gate, resume, a killed and a
hung configuration, and every bad input of issue 5."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot

FAST = ("--seconds", "0.2", "--min-runs", "20")
SCHEMA_ROW = {
    "artifact",
    "label",
    "runtime",
    "precision",
    "artifact_manifest_sha256",
    "status",
    "error",
    "drift",
    "latency",
    "memory",
}
SCHEMA_DRIFT = {
    "auc_reference",
    "auc_candidate",
    "auc_drop",
    "auc_drop_ci95",
    "delong_p",
    "flip_rate",
    "flips",
    "borderline_flips",
    "decisive_flips",
    "decisive_flip_ci95",
    "band",
    "mcnemar_p",
    "sensitivity",
    "sensitivity_reference",
    "sens_drop",
    "specificity",
    "specificity_reference",
    "spec_drop",
    "accuracy",
    "max_abs_dp",
    "mean_abs_dp",
    "ece",
}


def perturbed_copy(src: Path, dst: Path, scale: float, seed: int = 0) -> Path:
    """A real, consistent artifact whose ONNX weights carry noise (a stand-in for a lossy
    conversion): same source model, so it is compared with the same FP32 reference."""
    import onnx
    from onnx import numpy_helper

    from edgemed.artifact import write_manifest
    from edgemed.fileio import read_json

    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim >= 2:
            noisy = w + rng.normal(0, scale * (w.std() + 1e-8), w.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(dst / "model.onnx"))
    manifest = read_json(dst / "manifest.json")
    for key in ("files", "format"):
        manifest.pop(key)
    write_manifest(dst, manifest)
    return dst


@pytest.fixture(scope="module")
def drifted(cxr_onnx, tmp_path_factory) -> Path:
    return perturbed_copy(cxr_onnx, tmp_path_factory.mktemp("drift") / "onnx-noisy", 0.5)


def export(model: Path, target: str, precision: str, out: Path, data=CXR, **limits) -> Path:
    from edgemed.pipeline.budget import BudgetOptions
    from edgemed.pipeline.export import ExportRequest, run_export

    calib = str(data) if precision == "int8" else None
    req = ExportRequest(
        str(model), target, out, precision=precision, calib=calib, budget=BudgetOptions(limits)
    )
    run_export(req)
    return out


@pytest.fixture(scope="module")
def cxr_int8(cxr_model, tmp_path_factory) -> Path:
    return export(cxr_model, "onnx", "int8", tmp_path_factory.mktemp("int8") / "onnx-int8")


@pytest.fixture(scope="module")
def cxr_openvino(cxr_model, tmp_path_factory) -> Path | None:
    from edgemed.backends import get_backend

    if get_backend("openvino").available():
        return None
    return export(cxr_model, "openvino", "fp32", tmp_path_factory.mktemp("ov") / "openvino-fp32")


@pytest.fixture(scope="module")
def bench_run(cxr_onnx, cxr_int8, cxr_openvino, drifted, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "b"
    arts = [a for a in (cxr_onnx, cxr_int8, cxr_openvino, drifted) if a]
    res = run_cli("bench", *arts, "--data", CXR, "--include-reference", *FAST, "--out", out)
    return res, out


def test_bench_writes_table_results_and_report(bench_run, cxr_onnx):
    res, out = bench_run
    assert res.code == 0, res.err
    results = json.loads((out / "results.json").read_text())
    assert results["format"] == "edgemed-bench/1"
    assert results["data"]["split"] == "test" and results["data"]["n"] == 468
    assert {"cpu", "cores", "load_average_start", "busy_warning"} <= set(results["device"])
    labels = [r["label"] for r in results["rows"]]
    ov = ["openvino-fp32"] if len(labels) == 5 else []
    expected = [
        "torch-fp32",
        f"onnx-fp32@{cxr_onnx.name}",
        "onnx-int8",
        *ov,
        "onnx-fp32@onnx-noisy",
    ]
    assert labels == expected
    for row in results["rows"]:
        assert set(row) >= SCHEMA_ROW and row["status"] == "ok"
        assert set(row["drift"]) >= SCHEMA_DRIFT
        lat = row["latency"]
        assert lat["warmup_runs"] >= 10 and lat["runs"] >= 20 and lat["threads"] == 1
        assert lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
        assert lat["load_ms"] > 0 and lat["first_ms"] > 0
        assert row["memory"]["model_bytes"] > 0 and row["memory"]["peak_rss_delta_mb"] > 0
        assert row["memory"]["gpu"]["peak_mb"] is None and row["memory"]["gpu"]["reason"]
    rows = {r["label"]: r for r in results["rows"]}
    torch_row, fp32, noisy = rows["torch-fp32"], results["rows"][1], rows["onnx-fp32@onnx-noisy"]
    int8 = rows["onnx-int8"]
    assert int8["precision"] == "int8" and int8["reference"]["kind"] == "torch"
    assert int8["drift"]["flip_rate"] < 0.05 and int8["drift"]["auc_drop"] < 0.01
    assert int8["memory"]["model_bytes"] < fp32["memory"]["model_bytes"]
    assert int8["int8_ops"] == "8/8" and fp32["int8_ops"] is None  # counted in the artifact
    # every runner reports what the runtime really does (threads, providers), not only OpenVINO
    assert int8["runtime_settings"]["providers"] == ["CPUExecutionProvider"]
    assert int8["runtime_settings"]["intra_op_threads"] == 1
    assert torch_row["runtime_settings"]["intra_op_threads"] == 1
    if ov:
        assert rows["openvino-fp32"]["runtime_settings"]["execution_precision"] == "f32"
        assert rows["openvino-fp32"]["drift"]["flips"] == 0
    assert fp32["artifact"] == str(cxr_onnx.resolve())
    assert fp32["artifact_manifest_sha256"] == _sha(cxr_onnx / "manifest.json")
    assert fp32["drift"]["flips"] == 0 and abs(fp32["drift"]["auc_drop"]) < 1e-4
    assert fp32["reference"]["kind"] == "torch" and torch_row["drift"]["max_abs_dp"] == 0
    assert noisy["drift"]["flips"] > 0 and noisy["drift"]["max_abs_dp"] > 1e-3
    assert len((out / "results.jsonl").read_text().splitlines()) == len(labels)
    html = (out / "report.html").read_text()
    assert (
        html.count("<svg") >= 2 + len(labels)
        and "Pareto" in html
        and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    )
    assert "torch-fp32" in res.out and "p50 ms" in res.out and "load average" in res.out
    assert "INT8 ops" in res.out


def _sha(path: Path) -> str:
    from edgemed.fileio import sha256_file

    return sha256_file(path)


def test_gate_on_resume_names_artifact_limit_and_excess(bench_run):
    _, out = bench_run
    before = (out / "results.jsonl").read_text()
    res = run_cli(
        "bench",
        *_artifacts(out),
        "--data",
        CXR,
        "--include-reference",
        "--resume",
        "--max-flip-rate",
        "0.001",
        "--max-auc-drop",
        "0.5",
        *FAST,
        "--out",
        out,
    )
    assert res.code == 4
    assert_user_error(res, "gate failed", "onnx-fp32@onnx-noisy", "> --max-flip-rate 0.001")
    assert "--max-auc-drop" not in res.err  # that limit held
    assert (out / "results.jsonl").read_text() == before  # nothing re-run
    results = json.loads((out / "results.json").read_text())
    over = [r["label"] for r in results["rows"] if r["drift"]["flip_rate"] > 0.001]
    assert "onnx-fp32@onnx-noisy" in over and "torch-fp32" not in over
    assert results["gates"]["passed"] is False and len(results["gates"]["violations"]) == len(over)


def _artifacts(out: Path) -> list[str]:
    rows = json.loads((out / "results.json").read_text())["rows"]
    return [r["artifact"] for r in rows if r["kind"] == "artifact"]


def test_resume_runs_only_new_rows_and_refuses_other_settings(cxr_onnx, drifted, tmp_path):
    out = tmp_path / "b"
    assert run_cli("bench", cxr_onnx, "--data", CXR, *FAST, "--out", out).code == 0
    first = (out / "results.jsonl").read_text()
    res = run_cli("bench", cxr_onnx, drifted, "--data", CXR, *FAST, "--resume", "--out", out)
    assert res.code == 0, res.err
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == first.strip()
    snap = tree_snapshot(out)
    res = run_cli("bench", cxr_onnx, "--data", CXR, "--threads", "2", "--resume", "--out", out)
    assert_user_error(res, "cannot resume", "threads")
    assert tree_snapshot(out) == snap


def test_killed_and_hung_configurations_keep_the_other_rows(cxr_onnx, tmp_path, monkeypatch):
    crash = shutil.copytree(cxr_onnx, tmp_path / "crashes")
    hang = shutil.copytree(cxr_onnx, tmp_path / "hangs")
    out = tmp_path / "b"
    monkeypatch.setenv("EDGEMED_BENCH_FAULT", "crash:crashes,hang:hangs")
    args = ("bench", crash, cxr_onnx, hang, "--data", CXR, *FAST, "--timeout", "25", "--out", out)
    res = run_cli(*args)
    assert_user_error(res, "2 of 3 configurations failed", "SIGKILL", "timeout")
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["failed", "ok", "timeout"]
    assert rows[1]["drift"]["flips"] == 0 and rows[1]["latency"]["median_ms"] > 0
    assert "signal SIGKILL" in rows[0]["error"] and rows[0]["drift"] is None
    monkeypatch.delenv("EDGEMED_BENCH_FAULT")
    res = run_cli(*args[:-2], "--resume", "--retry-failed", "--out", out)
    assert res.code == 0, res.err
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]


def test_brain_mri_artifacts_on_their_own_test_split(brain_dir, brain_model, tmp_path):
    fp32 = export(brain_model, "onnx", "fp32", tmp_path / "fp32", brain_dir)
    int8 = export(brain_model, "onnx", "int8", tmp_path / "int8", brain_dir, flip_rate=1.0)
    res = run_cli("bench", fp32, int8, "--data", brain_dir, *FAST, "--out", tmp_path / "b")
    assert res.code == 0, res.err
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    card = json.loads((brain_model / "card.json").read_text())
    assert results["data"]["n"] == card["test"]["n"]  # the duplicate-aware split, reproduced
    fp32_row, int8_row = results["rows"]
    assert fp32_row["drift"]["auc_reference"] == pytest.approx(card["test"]["auc"], abs=1e-6)
    assert fp32_row["drift"]["flips"] == 0 and int8_row["status"] == "ok"


def test_reference_falls_back_to_fp32_onnx_artifact_then_refuses(cxr_model, tmp_path):
    model = shutil.copytree(cxr_model, tmp_path / "model")
    fp32 = export(model, "onnx", "fp32", tmp_path / "fp32")
    int8 = export(model, "onnx", "int8", tmp_path / "int8")
    (model / "model.pt").unlink()  # the torch reference is gone
    res = run_cli("bench", int8, fp32, "--data", CXR, *FAST, "--out", tmp_path / "b")
    assert res.code == 0, res.err
    rows = json.loads((tmp_path / "b" / "results.json").read_text())["rows"]
    assert [r["reference"]["kind"] for r in rows] == ["onnx", "onnx"]
    assert str(fp32) in rows[0]["reference"]["why"] and "is gone" in rows[0]["reference"]["why"]
    assert rows[1]["drift"]["max_abs_dp"] == 0.0  # the FP32 artifact against itself
    res = run_cli("bench", int8, "--data", CXR, "--out", tmp_path / "c")
    assert_user_error(res, "no FP32 reference", "is gone", "--target onnx")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("kind", ["missing", "training-dir", "file"])
def test_refuses_what_is_not_an_artifact(kind, cxr_model, cxr_onnx, tmp_path):
    target = {
        "missing": tmp_path / "nope",
        "training-dir": cxr_model,
        "file": cxr_onnx / "model.onnx",
    }[kind]
    before = tree_snapshot(tmp_path)
    res = run_cli("bench", target, "--data", CXR, "--out", tmp_path / "b")
    assert_user_error(res, "not an edgemed artifact", "edgemed export")
    assert res.code == 2 and tree_snapshot(tmp_path) == before and not (tmp_path / "b").exists()


def test_refuses_data_with_other_classes(brain_dir, cxr_onnx, tmp_path):
    res = run_cli("bench", cxr_onnx, "--data", brain_dir, "--out", tmp_path / "b")
    assert_user_error(res, "does not match the preprocessing contract", "class_names")
    assert not (tmp_path / "b").exists()


def test_refuses_data_at_another_size(cxr_onnx, tmp_path):
    with np.load(CXR) as f:
        arrays = {k: f[k] for k in f.files}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = arrays[f"{split}_images"].repeat(2, 1).repeat(2, 2)
    data = tmp_path / "pneumoniamnist_56px.npz"
    np.savez(data, **arrays)
    res = run_cli("bench", cxr_onnx, "--data", data, "--out", tmp_path / "b")
    assert_user_error(res, "input_size", "56x56", "28x28")
    assert not (tmp_path / "b").exists()


def test_refuses_empty_split(cxr_onnx, tmp_path):
    with np.load(CXR) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["test_images"], arrays["test_labels"] = (
        arrays["test_images"][:0],
        arrays["test_labels"][:0],
    )
    data = tmp_path / "pneumoniamnist_notest.npz"
    np.savez(data, **arrays)
    res = run_cli("bench", cxr_onnx, "--data", data, "--out", tmp_path / "b")
    assert_user_error(res, "'test' split", "empty")
    assert not (tmp_path / "b").exists()


def test_refuses_existing_output_without_force_or_resume(cxr_onnx, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = run_cli("bench", cxr_onnx, "--data", CXR, "--out", out)
    assert_user_error(res, "already exists", "--resume", "--force")
    assert tree_snapshot(out) == {"keep.txt": b"mine"}
    res = run_cli("bench", cxr_onnx, "--data", CXR, "--resume", "--out", out)
    assert_user_error(res, "not an `edgemed bench` output")
    assert tree_snapshot(out) == {"keep.txt": b"mine"}


def test_force_replaces_output(cxr_onnx, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "old.txt").write_text("old")
    res = run_cli("bench", cxr_onnx, "--data", CXR, *FAST, "--force", "--out", out)
    assert res.code == 0, res.err
    assert not (out / "old.txt").exists() and (out / "results.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


@pytest.mark.parametrize(
    "flag,value,needle",
    [("--threads", "0", "--threads"), ("--max-auc-drop", "-1", "--max-auc-drop")],
)
def test_refuses_bad_numbers(flag, value, needle, cxr_onnx, tmp_path):
    res = run_cli("bench", cxr_onnx, "--data", CXR, flag, value, "--out", tmp_path / "b")
    assert_user_error(res, needle)
    assert not (tmp_path / "b").exists()


def test_bench_help_does_not_import_runtimes():
    import subprocess
    import sys

    code = (
        "import sys\nfrom edgemed.cli import main\ntry:\n    main(['bench', '--help'])\n"
        "except SystemExit:\n    pass\n"
        "bad = [m for m in ('torch', 'onnxruntime', 'openvino', 'tensorflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
