"""`edgemed study`: the quick grid runs end to end on the real chest X-ray set, resumes after an
interruption without redoing finished points, and refuses bad input without writing anything."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot

QUICK = ["--quick", "--epochs", "1", "--latency-seconds", "0.2", "--threads", "1"]


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "quick"
    res = run_cli("study", "--data", CXR, *QUICK, "--out", out)
    assert res.code == 0, res.err
    return out


def test_quick_study_writes_table_plot_and_picks(quick_study):
    study = json.loads((quick_study / "study.json").read_text())
    rows = study["rows"]
    assert [r["name"] for r in rows] == ["cnn-w0.25-d0.5", "cnn-dwsep-w0.5-d0.5", "resnet18-w0.125"]
    for r in rows:
        assert r["params"] > 0 and r["macs"] > 0 and r["train_seconds"] > 0
        lo, hi = r["test_auc_ci95"]
        assert 0.5 < lo <= r["test_auc"] <= hi
        assert r["latency_precision"] == "int8" and r["latency_ms"] > 0
        assert abs(r["artifact_test_auc"] - r["test_auc"]) < 0.05
    picks = study["picks"]
    assert picks["baseline"] == "resnet18-w0.125"
    names = {r["name"] for r in rows}
    assert picks["best"] in names and picks["smallest_within_margin_of_best"] in names
    assert set(study["pareto"]["macs"]) <= names and study["pareto"]["macs"]
    md = (quick_study / "study.md").read_text()
    assert "| cnn-w0.25-d0.5 |" in md and "Smallest model within 0.01 AUC" in md
    svg = ET.parse(quick_study / "pareto.svg").getroot()
    assert (
        svg.tag.endswith("svg") and len(svg.findall(".//{http://www.w3.org/2000/svg}circle")) >= 2
    )
    assert (quick_study / "models" / "cnn-w0.25-d0.5" / "model.pt").is_file()
    assert not Path(str(quick_study) + ".partial").exists()


def test_resume_continues_without_redoing_finished_points(quick_study, tmp_path):
    out = tmp_path / "quick"
    partial = tmp_path / "quick.partial"
    shutil.copytree(quick_study, partial)
    lines = (partial / "points.jsonl").read_text().splitlines()
    points = [ln for ln in lines if json.loads(ln)["kind"] == "point"]
    # an interrupted run: header + two finished points, the last line torn mid-write
    (partial / "points.jsonl").write_text("\n".join([lines[0], *points[:2], points[2][:40]]) + "\n")
    kept = (partial / "models" / "cnn-w0.25-d0.5" / "model.pt").read_bytes()
    mtime = os.stat(partial / "models" / "cnn-w0.25-d0.5" / "model.pt").st_mtime_ns
    res = run_cli("study", "--data", CXR, *QUICK, "--resume", "--out", out)
    assert res.code == 0, res.err
    assert "resuming: 2 of 3 points already done" in res.err
    study = json.loads((out / "study.json").read_text())
    assert len(study["rows"]) == 3 and not partial.exists()
    model = out / "models" / "cnn-w0.25-d0.5" / "model.pt"
    assert model.read_bytes() == kept and os.stat(model).st_mtime_ns == mtime


def test_resume_with_other_settings_is_refused(quick_study, tmp_path):
    out = tmp_path / "q"
    shutil.copytree(quick_study, out)
    before = tree_snapshot(tmp_path)
    res = run_cli("study", "--data", CXR, "--quick", "--epochs", "2", "--resume", "--out", out)
    assert_user_error(res, "other settings")
    assert not (tmp_path / "q.partial").exists()
    assert tree_snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--resume"], "nothing to resume"),
        (["--resume", "--force"], "pass only one"),
        (["--latency-seconds", "0"], "--latency-seconds"),
    ],
)
def test_bad_study_input_writes_nothing(args, needle, tmp_path):
    before = tree_snapshot(tmp_path)
    res = run_cli("study", "--data", CXR, "--quick", *args, "--out", tmp_path / "s")
    assert_user_error(res, needle)
    assert tree_snapshot(tmp_path) == before and not list(tmp_path.iterdir())


def test_missing_data_and_existing_output_are_refused(tmp_path):
    res = run_cli("study", "--data", tmp_path / "none.npz", "--quick", "--out", tmp_path / "s")
    assert_user_error(res, "does not exist")
    assert not list(tmp_path.iterdir())
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "mine.txt").write_text("x")
    before = tree_snapshot(tmp_path)
    res = run_cli("study", "--data", CXR, "--quick", "--out", tmp_path / "s")
    assert_user_error(res, "already exists")
    assert tree_snapshot(tmp_path) == before


def test_pareto_front_and_smallest_within_margin():
    from edgemed.study.report import front_names, picks, smallest_within

    def row(name, params, macs, auc, lat, role="compact"):
        return {
            "name": name,
            "params": params,
            "macs": macs,
            "test_auc": auc,
            "latency_ms": lat,
            "role": role,
        }

    rows = [
        row("big", 1000, 900, 0.960, 9.0, "baseline"),
        row("mid", 90, 300, 0.955, 3.0),
        row("tiny", 10, 100, 0.930, 1.0),
        row("bad", 50, 400, 0.900, 2.0),
    ]
    assert front_names(rows, "macs") == ["tiny", "mid", "big"]
    assert front_names(rows, "latency_ms") == ["tiny", "mid", "big"]
    assert smallest_within(rows, 0.960)["name"] == "mid"
    p = picks(rows)
    assert p["best"] == "big" and p["smallest_within_margin_of_best"] == "mid"
    assert (
        p["compact_vs_baseline"]["name"] == "mid"
        and p["compact_vs_baseline"]["param_ratio"] == 0.09
    )
