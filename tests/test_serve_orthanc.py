"""`edgemed serve` against a real Orthanc PACS on loopback: real chest X-rays (28 px and a
2048x2048 16-bit DICOM) pushed with pynetdicom, SRs read back through Orthanc's REST API and
checked against `predict` on the same files; resend, refusals, dead letters, STOW-RS, SIGHUP swap,
and SIGKILL at random moments with nothing lost and nothing doubled."""

from __future__ import annotations

import json
import random
import shutil
import signal
import threading
from pathlib import Path

import pytest

from tests.bundle_support import cxr_bundle_for, keypair
from tests.serve_support import (
    ORTHANC_BIN,
    SENDER_AET,
    Orthanc,
    ServeProcess,
    cxr_dicoms,
    free_port,
    http_get,
    http_post,
    in_process,
    large_dicom,
    parse_metrics,
    send,
    sop_uid,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    ORTHANC_BIN is None,
    reason="the Orthanc binary is not installed (apt-get install orthanc; see scripts/system-packages.txt)",
)


@pytest.fixture(scope="module")
def cxr_bundle(cxr_onnx, tmp_path_factory) -> Path:
    return cxr_bundle_for(cxr_onnx, tmp_path_factory)


@pytest.fixture(scope="module")
def pubkey(tmp_path_factory) -> Path:
    return keypair(tmp_path_factory)[1]


@pytest.fixture
def pacs(tmp_path):
    """A fresh Orthanc per test; the service's DICOM port is chosen first so Orthanc knows it."""
    port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", port).start()
    yield orthanc
    orthanc.stop()


@pytest.fixture
def service(tmp_path, pacs, cxr_bundle, pubkey):
    svc = in_process(tmp_path, cxr_bundle, pubkey, pacs.service_port, forward=[pacs.destination])
    yield svc
    svc.stop()


def predict_all(bundle: Path, pubkey: Path, paths: list[Path]) -> dict[str, dict]:
    from edgemed.appliance import load

    with load(bundle, pubkey, threads=1) as predictor:
        return {sop_uid(p): predictor.predict(p) for p in paths}


def sr_results(pacs) -> dict[str, dict]:
    from edgemed.serve.sr import read_sr_result

    return {(r := read_sr_result(sr))["source_uid"]: {**r, "ds": sr} for sr in pacs.srs()}


def test_images_pushed_get_srs_in_orthanc_matching_predict(service, pacs, cxr_bundle, pubkey, tmp_path):
    paths = cxr_dicoms(tmp_path / "in", 6) + [large_dicom(tmp_path / "in" / "big.dcm", 6)]
    statuses = send(paths, service.dicom_port)
    assert set(statuses.values()) == {0}, statuses
    wait_for(lambda: len(pacs.sr_instance_ids()) == len(paths), 60, "one SR per image in Orthanc")
    expected = predict_all(cxr_bundle, pubkey, paths)
    got = sr_results(pacs)
    assert set(got) == set(expected)
    for uid, want in expected.items():
        sr = got[uid]
        assert sr["findings"] == [want["decision"]]
        assert sr["threshold"] == pytest.approx(want["threshold"])
        for name, p in want["probabilities"].items():
            assert sr["probabilities"][name] == pytest.approx(p, abs=1e-6)
        assert sr["text"]["Bundle ID"] == want["bundle_id"]
        assert sr["device_uid"] == sr["ds"].DeviceUID == service.model.algorithm.device_uid
        ds = sr["ds"]
        src = json.loads(http_get(f"{service_url(service)}/v1/results/{uid}")[1])
        assert ds.StudyInstanceUID == src["study_instance_uid"]
        assert ds.SOPInstanceUID == src["sr_sop_instance_uid"]
        assert src["probabilities"] == pytest.approx(want["probabilities"])
        assert src["decision"] == want["decision"] and src["bundle_id"] == want["bundle_id"]
        ref = ds.CurrentRequestedProcedureEvidenceSequence[0]
        assert ref.StudyInstanceUID == ds.StudyInstanceUID
        assert ref.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == uid
    m = parse_metrics(http_get(f"{service_url(service)}/metrics")[1].decode())
    assert m["edgemed_serve_received_total"] == m["edgemed_serve_done_total"] == len(paths)
    assert m["edgemed_serve_sent_total"] == len(paths)
    assert m['edgemed_serve_latency_seconds_bucket{le="+Inf"}'] == len(paths)


def service_url(svc) -> str:
    return f"http://127.0.0.1:{svc.http_port}"
