"""The domain guard on real data: the feature output changes no logit, OOD images (brain MRI,
adult chest X-rays, inverted and rotated chest X-rays) are flagged, in-domain test images mostly
are not, predict says so per image (flag or refuse), old bundles say unknown, a reference that
does not match its model is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.bundle_support import cxr_report_for, keypair, make_bundle, write_png
from tests.conftest import CXR, assert_user_error, run_cli


def _all_images(path, contract) -> np.ndarray:
    from edgemed.data import load_dataset

    ds = load_dataset(path, contract.input_size, contract.channels)
    return np.concatenate([ds.split(s).images for s in ("train", "val", "test")])


def _guard_rows(artifact: Path, own: str, sets: dict) -> tuple[dict, dict]:
    from edgemed.artifact import load_artifact
    from edgemed.backends import open_runner
    from edgemed.data import load_dataset
    from edgemed.domain.guard import DomainGuard
    from edgemed.domain.ood import in_domain_row, ood_row, score_images
    from edgemed.domain.reference import load_reference

    art = load_artifact(artifact)
    c = art.contract
    guard = DomainGuard(load_reference(art.path))
    test = load_dataset(own, c.input_size, c.channels).split("test").images
    with open_runner(art) as r:
        ind = score_images(r, guard, c, test)
        rows = {k: ood_row(k, ind, score_images(r, guard, c, v(c, test))) for k, v in sets.items()}
    return in_domain_row(ind), rows


def test_feature_output_changes_no_logit_and_is_named(cxr_onnx):
    import onnx
    import onnxruntime as ort

    manifest = json.loads((cxr_onnx / "manifest.json").read_text())
    assert manifest["domain"]["feature_output"]["name"] == "features"
    model = onnx.load(str(cxr_onnx / "model.onnx"))
    assert [o.name for o in model.graph.output] == ["logits", "features"]
    plain = onnx.load(str(cxr_onnx / "model.onnx"))
    del plain.graph.output[1:]
    plain.graph.node.remove(next(n for n in plain.graph.node if n.output == ["features"]))
    x = np.load(CXR)["test_images"][:64, None].astype(np.float32) / 255.0
    c = manifest["contract"]
    x = (x - np.float32(c["mean"][0])) / np.float32(c["std"][0])
    with_f = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    without = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, feats = with_f.run(None, {"input": x})
    assert np.array_equal(logits, without.run(None, {"input": x})[0])
    assert feats.shape == (64, manifest["domain"]["feature_size"])


def test_chest_model_flags_other_domains_on_real_data(cxr_onnx):
    """The issue's table as a test: far OOD flagged, near OOD separated, in-domain mostly in."""
    brain = "../shared/datasets/brain_mri"
    nih = "../shared/datasets/nih_chestxray14_1000/nih1000_64.npz"
    if not Path(brain).is_dir() or not Path(nih).is_file():
        pytest.skip("the shared brain_mri / nih_chestxray14_1000 datasets are absent")
    sets = {
        "brain_mri": lambda c, t: _all_images(brain, c),
        "adult_cxr": lambda c, t: _all_images(nih, c),
        "inverted": lambda c, t: 255 - t,
        "rotated90": lambda c, t: np.rot90(t, 1, axes=(1, 2)).copy(),
    }
    own, rows = _guard_rows(cxr_onnx, str(CXR), sets)
    assert own["rate"] <= 0.015, own  # the goal; measured 0.9% (4 of 468), see BENCHMARKS.md
    for name in ("brain_mri", "inverted"):
        assert rows[name]["auroc"] >= 0.99 and rows[name]["flagged"] >= 0.95, rows[name]
    assert rows["adult_cxr"]["auroc"] >= 0.85, rows["adult_cxr"]
    assert rows["rotated90"]["auroc"] >= 0.9, rows["rotated90"]


def test_brain_model_flags_chest_xrays(brain_model, brain_dir, tmp_path):
    from edgemed.pipeline.export import ExportRequest, run_export

    out = tmp_path / "brain-onnx"
    run_export(ExportRequest(model=str(brain_model), target="onnx", out=out))
    own, rows = _guard_rows(out, str(brain_dir), {"cxr": lambda c, t: _all_images(CXR, c)})
    # Goal 95% flagged; measured 99.8% (76% before the statistics were standardized before the
    # shrinkage), see BENCHMARKS.md.
    assert rows["cxr"]["auroc"] >= 0.99 and rows["cxr"]["flagged"] >= 0.95, rows["cxr"]
    assert own["rate"] <= 0.1, own  # 60-odd test images: one flag is 1.6%


def test_tflite_artifact_carries_the_feature_output(cxr_model, tmp_path):
    """The .tflite has the features as a second output (an fx tap of the last Linear's input),
    its FP32 logits are bit-identical to the export without it, and its guard uses them."""
    from edgemed.artifact import load_artifact
    from edgemed.backends import open_runner
    from edgemed.pipeline.export import ExportRequest, run_export

    pytest.importorskip("litert_torch", reason="TFLite export needs edgemed[tflite]")
    m = run_export(ExportRequest(model=str(cxr_model), target="tflite", out=tmp_path / "f"))
    run_export(ExportRequest(model=str(cxr_model), target="tflite", out=tmp_path / "p",
                             domain_fpr=0))  # fmt: skip
    assert m["domain"]["feature_size"] and m["domain"]["feature_output"]["name"] == "features"
    with_f, plain = load_artifact(tmp_path / "f"), load_artifact(tmp_path / "p")
    c = with_f.contract
    x = c.normalize(np.load(CXR)["test_images"][:32, :, :, None])
    with open_runner(with_f) as r, open_runner(plain) as q:
        logits, feats = r.infer_features(x)
        assert np.array_equal(logits, q.infer(x))
        assert q.infer_features(x)[1] is None
    assert feats.shape == (32, m["domain"]["feature_size"]) and np.isfinite(feats).all()
    own, rows = _guard_rows(tmp_path / "f", str(CXR), {"inverted": lambda c, t: 255 - t})
    assert rows["inverted"]["flagged"] >= 0.95 and own["rate"] <= 0.03, (own, rows)


@pytest.fixture(scope="module")
def ood_pngs(tmp_path_factory, brain_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ood")
    test = np.load(CXR)["test_images"]
    brain = sorted((brain_dir / "yes").iterdir())[0]
    return {
        "cxr": write_png(d / "cxr.png", test[0]),
        "inverted": write_png(d / "inverted.png", 255 - test[1]),
        "brain": brain,
    }


def _records(res) -> list[dict]:
    return [json.loads(line) for line in res.out.splitlines()]


def test_predict_flags_or_refuses_by_the_signed_policy(cxr_onnx, ood_pngs, tmp_path_factory):
    report = cxr_report_for(cxr_onnx, tmp_path_factory)
    key, pub = keypair(tmp_path_factory)
    d = tmp_path_factory.mktemp("policy")
    files = (ood_pngs["cxr"], ood_pngs["inverted"], ood_pngs["brain"])
    flag = make_bundle(cxr_onnx, report, key, d / "flag.bundle")
    res = run_cli("predict", flag, *files, "--pubkey", pub)
    assert res.code == 0, res.err
    recs = _records(res)
    assert [r["domain"] for r in recs] == ["in", "out", "out"]
    assert all(r["status"] == "ok" and "decision" in r for r in recs)
    assert recs[1]["domain_scores"]["input"] > recs[1]["domain_thresholds"]["input"]
    refuse = make_bundle(cxr_onnx, report, key, d / "refuse.bundle", "--domain-policy", "refuse")
    res = run_cli("predict", refuse, *files, "--pubkey", pub)
    assert_user_error(res, "2 of 3 images were refused")
    recs = _records(res)
    assert [r["status"] for r in recs] == ["ok", "refused", "refused"]
    assert "decision" not in recs[1] and recs[1]["domain_policy"] == "refuse"


def test_a_bundle_without_a_reference_says_unknown(cxr_model, ood_pngs, tmp_path_factory):
    from edgemed.pipeline.export import ExportRequest, run_export

    d = tmp_path_factory.mktemp("noref")
    art = d / "art"
    m = run_export(ExportRequest(model=str(cxr_model), target="onnx", out=art, domain_fpr=0))
    assert "domain" not in m and not (art / "domain.json").exists()
    key, pub = keypair(tmp_path_factory)
    bundle = make_bundle(art, cxr_report_for_noref(art, d), key, d / "x.bundle")
    res = run_cli("predict", bundle, ood_pngs["brain"], "--pubkey", pub)
    assert res.code == 0, res.err
    assert _records(res)[0]["domain"] == "unknown"


def cxr_report_for_noref(art: Path, d: Path) -> Path:
    from tests.bundle_support import bench_report

    return bench_report(art, d / "report")


def test_a_reference_for_other_model_files_is_refused(cxr_onnx, tmp_path_factory):
    from edgemed.artifact import write_manifest

    d = tmp_path_factory.mktemp("mismatch")
    art = shutil.copytree(cxr_onnx, d / "art")
    ref = json.loads((art / "domain.json").read_text())
    ref["model_files"]["model.onnx"]["sha256"] = "0" * 64
    (art / "domain.json").write_text(json.dumps(ref))
    manifest = json.loads((art / "manifest.json").read_text())
    for k in ("files", "format"):
        manifest.pop(k)
    write_manifest(art, manifest)
    key, _ = keypair(tmp_path_factory)
    report = cxr_report_for(cxr_onnx, tmp_path_factory)
    res = run_cli("bundle", "--model", art, "--report", report, "--key", key, "--out", d / "b")
    assert_user_error(res, "domain reference does not match the model", "model.onnx")
    assert not (d / "b").exists()


def test_a_reference_holding_objects_is_refused(cxr_onnx, tmp_path):
    from edgemed.domain.reference import load_reference
    from edgemed.errors import InputError

    art = shutil.copytree(cxr_onnx, tmp_path / "art")
    with np.load(art / "domain.npz") as z:
        arrays = dict(z)
    arrays["feature_means"] = np.array([{"x": 1}], dtype=object)
    np.savez(art / "domain.npz", **arrays)
    with pytest.raises(InputError, match="malformed"):
        load_reference(art)


def test_serve_raises_a_drift_alarm_after_a_switch_and_monitor_reports_it(
    cxr_onnx, tmp_path, tmp_path_factory
):
    """150 in-domain images (the validation split, the monitor's reference), then 100 inverted
    ones: the alarm comes after the switch, within 100 images, audited and counted."""
    from tests.bundle_support import cxr_bundle_for, write_dicom
    from tests.serve_support import _study, in_process, wait_for

    bundle = cxr_bundle_for(cxr_onnx, tmp_path_factory)
    _, pub = keypair(tmp_path_factory)
    val = np.load(CXR)["val_images"]  # stored by class: shuffled, or the prevalence alarm is right
    val = val[np.random.default_rng(0).permutation(len(val))]
    d = tmp_path / "in"
    d.mkdir()
    before = [write_dicom(d / f"v{i}.dcm", val[i % len(val)], **_study({})) for i in range(150)]
    after = [write_dicom(d / f"x{i}.dcm", 255 - val[i], **_study({})) for i in range(100)]
    svc = in_process(tmp_path, bundle, pub, 0, workers=1)
    try:
        for batch, total in ((before, 150), (after, 250)):
            _send_all(batch, svc.dicom_port)
            wait_for(lambda t=total: svc.metrics.snapshot()["done"] == t, 180, f"{total} done")
        entries = [json.loads(x) for x in svc.cfg.audit_path.read_text().splitlines()]
        alarms = [e for e in entries if e["event"] == "drift_alarm"]
        assert alarms and all(a["seen"] > 150 for a in alarms), alarms
        assert min(a["seen"] for a in alarms) <= 250
        assert svc.metrics.snapshot()["drift_alarms"] == len(alarms)
        assert svc.metrics.snapshot()["domain_flagged"] >= 95
    finally:
        svc.stop()
    res = run_cli("monitor", svc.cfg.spool, "--out", tmp_path / "report")
    assert res.code == 0, res.err
    doc = json.loads((tmp_path / "report" / "surveillance.json").read_text())
    assert doc["images"] == 250 and doc["domain"]["out"] >= 95 and doc["alarms"]
    assert "<svg" in (tmp_path / "report" / "surveillance.html").read_text()


def test_window_monitor_is_quiet_in_domain_and_alarms_after_a_prevalence_switch(cxr_onnx):
    """3,000 results resampled from the validation split, then 3,000 from the test split (two
    held-out splits that differ by more than sampling), raise no alarm; a switch to positives
    only (a shifted prevalence) raises the positive-rate alarm within 100 images."""
    from edgemed.artifact import load_artifact
    from edgemed.backends import open_runner
    from edgemed.data import load_dataset
    from edgemed.domain.fit import run_with_features
    from edgemed.domain.guard import DomainGuard
    from edgemed.domain.monitor import ks_pvalue, monitor_for
    from edgemed.domain.reference import load_reference

    art = load_artifact(cxr_onnx)
    c, guard = art.contract, DomainGuard(load_reference(cxr_onnx))
    ds = load_dataset(str(CXR), c.input_size, c.channels)
    val, test = ds.split("val"), ds.split("test")
    with open_runner(art) as r:
        logits, feats = run_with_features(r, c, val.images)
        t_logits, t_feats = run_with_features(r, c, test.images)
    results = _results(guard, c, val.images, feats, logits)
    mon, rng = monitor_for(guard, c), np.random.default_rng(0)
    assert not [a for i in rng.integers(0, len(results), 3000) for a in mon.observe(results[i])]
    t_res = _results(guard, c, test.images, t_feats, t_logits)
    assert not [a for i in rng.integers(0, len(t_res), 3000) for a in mon.observe(t_res[i])]
    p = c.probabilities(logits)[:, 0]
    positives = [results[i] for i in np.flatnonzero(p >= c.threshold)]
    alarms = [(k, a) for k in range(100) for a in mon.observe(positives[k % len(positives)])]
    assert any(a.statistic == "positive_rate:pneumonia" for _, a in alarms), alarms
    assert ks_pvalue(np.arange(100.0), np.arange(100.0))[1] == 1.0
    assert ks_pvalue(np.zeros(100), np.ones(100))[1] < 1e-20


def _results(guard, c, images, feats, logits) -> list[dict]:
    """Per-image result dicts as the predictor makes them (binary: domain scores + probabilities)."""
    s, p = guard.scores(images, feats), c.probabilities(logits)[:, 0]
    return [{"domain_scores": {k: float(v[i]) for k, v in s.items()},
             "probabilities": {"normal": 1 - p[i], "pneumonia": p[i]}}
            for i in range(len(p))]  # fmt: skip


def _send_all(paths: list[Path], port: int) -> None:
    """C-STORE in associations of 20, a chunk sent again if the association failed (a loaded
    machine can time out a response; the spool acknowledges a repeat without processing it)."""
    from tests.serve_support import send

    for i in range(0, len(paths), 20):
        for _ in range(3):
            try:
                if set(send(paths[i : i + 20], port).values()) == {0}:
                    break
            except RuntimeError:
                continue
        else:
            raise AssertionError(f"could not store images {i}-{i + 19} in 3 tries")


def test_bench_ood_measures_the_guard_and_bundle_holds_it_to_limits(
    cxr_onnx, brain_dir, tmp_path, tmp_path_factory
):
    fast = ("--seconds", "0.05", "--min-runs", "3")
    res = run_cli("bench", cxr_onnx, "--data", CXR, *fast, "--ood", brain_dir,
                  "--out", tmp_path / "bench")  # fmt: skip
    assert res.code == 0, res.err
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())["domain_guard"]
    row = rows[0]
    assert row["in_domain"]["n"] == 468 and row["ood"][0]["auroc"] >= 0.99
    assert "domain guard" in res.out and "AUROC" in res.out
    key, _ = keypair(tmp_path_factory)
    ok = make_bundle(cxr_onnx, tmp_path / "bench", key, tmp_path / "ok.bundle",
                     "--max-domain-fpr", "0.05", "--min-ood-auroc", "0.99")  # fmt: skip
    signed = json.loads(json.dumps(_manifest(ok)))
    assert signed["domain_gate"]["ood"][0]["auroc"] == row["ood"][0]["auroc"]
    assert signed["domain_policy"] == "flag" and signed["domain"]["feature_size"]
    args = ("bundle", "--model", cxr_onnx, "--key", key, "--out", tmp_path / "x.bundle")
    res = run_cli(*args, "--report", tmp_path / "bench", "--max-domain-fpr", "0.0001")
    assert_user_error(res, "domain guard gate failed", "in-domain false flags")
    res = run_cli(*args, "--report", cxr_report_for(cxr_onnx, tmp_path_factory),
                  "--min-ood-auroc", "0.9")  # fmt: skip
    assert_user_error(res, "bench ARTIFACT --data DATA --ood")
    assert not (tmp_path / "x.bundle").exists()


def _manifest(bundle: Path) -> dict:
    from tests.bundle_support import member_bytes, read_members

    return json.loads(member_bytes(read_members(bundle), "bundle-manifest.json"))
