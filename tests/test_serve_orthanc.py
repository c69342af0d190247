"""`edgemed serve` against a real Orthanc PACS on loopback: real chest X-rays (28 px and a
2048x2048 16-bit DICOM) pushed with pynetdicom, SRs read back through Orthanc's REST API and
checked against `predict` on the same files; resend, refusals, dead letters, STOW-RS, SIGHUP swap,
and SIGKILL at random moments with nothing lost and nothing doubled."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
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
    stow_body,
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


def test_images_pushed_get_srs_in_orthanc_matching_predict(
    service, pacs, cxr_bundle, pubkey, tmp_path
):
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
        assert sr["domain"] == want["domain"] in ("in", "out")  # the coded domain qualifier
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
        assert (
            ref.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == uid
        )
    if shutil.which("dsrdump"):  # DCMTK (scripts/system-packages.txt) parses the SR tree
        one = tmp_path / "sr.dcm"
        next(iter(got.values()))["ds"].save_as(one)
        dump = subprocess.run(["dsrdump", str(one)], capture_output=True, text=True)
        assert dump.returncode == 0 and 'CODE:(,,"Finding")' in dump.stdout, dump
    m = parse_metrics(http_get(f"{service_url(service)}/metrics")[1].decode())
    assert m["edgemed_serve_received_total"] == m["edgemed_serve_done_total"] == len(paths)
    assert m["edgemed_serve_sent_total"] == len(paths)
    assert m['edgemed_serve_latency_seconds_bucket{le="+Inf"}'] == len(paths)


def service_url(svc) -> str:
    return f"http://127.0.0.1:{svc.http_port}"


def test_resend_gives_no_second_result_and_unknown_ae_is_rejected(service, pacs, tmp_path):
    paths = cxr_dicoms(tmp_path / "in", 2)
    assert set(send(paths, service.dicom_port).values()) == {0}
    assert set(send(paths[:1], service.dicom_port).values()) == {0}  # acknowledged again
    wait_for(lambda: service.metrics.snapshot()["sent"] == 2, 30, "two SRs sent")
    assert send(paths[1:], service.dicom_port).values()  # a resend after it was done
    assert send(paths, service.dicom_port, calling="STRANGER") == {"rejected": True}
    m = service.metrics.snapshot()
    assert (m["received"], m["duplicates"], m["done"], m["sent"]) == (2, 2, 2, 2)
    assert len(pacs.sr_instance_ids()) == 2
    events = [json.loads(x)["event"] for x in service.cfg.audit_path.read_text().splitlines()]
    assert events.count("received") == 2 and events.count("duplicate") == 2


def test_refused_images_get_no_sr_and_are_logged_and_counted(service, pacs, tmp_path):
    from tests.bundle_support import cxr_test_images, write_dicom

    good = cxr_dicoms(tmp_path / "in", 1)
    mr = cxr_dicoms(tmp_path / "mr", 1, offset=1, Modality="MR")  # not the bundle's CR/DX
    tiny = cxr_dicoms(tmp_path / "tiny", 1, offset=2)
    write_dicom(tiny[0], cxr_test_images(1)[0][:8, :8], **_header(tiny[0]))  # below half size
    statuses = send(good + mr + tiny, service.dicom_port)
    assert set(statuses.values()) == {0}  # spooled (acknowledged) first, then judged
    wait_for(lambda: service.metrics.snapshot()["refused"] == 2, 30, "two refusals")
    wait_for(lambda: service.metrics.snapshot()["sent"] == 1, 30, "one SR sent")
    assert [sr.ReferencedSOPInstanceUID for sr in _sources(pacs)] == [sop_uid(good[0])]
    for p in mr + tiny:
        record = json.loads((service.spool.path("refused", sop_uid(p), ".json")).read_text())
        assert record["kind"] == "refused"
    assert (
        "Modality MR"
        in json.loads(service.spool.path("refused", sop_uid(mr[0]), ".json").read_text())["reason"]
    )
    assert service.result(sop_uid(mr[0])) is None
    log = [json.loads(x) for x in service.cfg.audit_path.read_text().splitlines()]
    assert sum(e["event"] == "refused" for e in log) == 2
    assert "Test^Patient" not in service.cfg.audit_path.read_text()  # no patient names
    assert service.spool.depth() == 0


def _header(path: Path) -> dict:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    keys = ("StudyInstanceUID", "SeriesInstanceUID", "PatientName", "Modality")
    return {k: getattr(ds, k) for k in keys}


def _sources(pacs) -> list:
    out = []
    for sr in pacs.srs():
        item = next(i for i in sr.ContentSequence if i.ValueType == "IMAGE")
        out.append(item.ReferencedSOPSequence[0])
    return out


def test_unreachable_destination_dead_letters_after_the_retry_budget(tmp_path, cxr_bundle, pubkey):
    dead_port = free_port()  # nothing listens there
    svc = in_process(
        tmp_path,
        cxr_bundle,
        pubkey,
        0,
        forward=[f"NOBODY@127.0.0.1:{dead_port}"],
        retries=2,
        **{"retry-backoff": 0.01},
    )
    try:
        path = cxr_dicoms(tmp_path / "in", 1)[0]
        assert set(send([path], svc.dicom_port).values()) == {0}
        wait_for(lambda: svc.metrics.snapshot()["dead_lettered"] == 1, 30, "a dead letter")
        dead = list((svc.spool.root / "dead").rglob("*.dcm"))
        assert [p.stem for p in dead] == [sop_uid(path)]
        failed = [json.loads(x) for x in svc.cfg.audit_path.read_text().splitlines()]
        assert [e["attempts"] for e in failed if e["event"] == "failed"] == [3]
        assert svc.result(sop_uid(path)) is not None  # the JSON result is still kept
    finally:
        svc.stop()


def test_stow_rs_predict_and_token(tmp_path, pacs, cxr_bundle, pubkey):
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    svc = in_process(
        tmp_path,
        cxr_bundle,
        pubkey,
        pacs.service_port,
        forward=[pacs.destination],
        **{"token-file": str(token)},
    )
    try:
        url, auth = service_url(svc), {"Authorization": "Bearer 0123456789abcdef0123456789abcdef"}
        paths = cxr_dicoms(tmp_path / "in", 2)
        body, ctype = stow_body([p.read_bytes() for p in paths])
        assert http_post(f"{url}/studies", body, ctype)[0] == 401
        assert http_get(f"{url}/metrics")[0] == 401
        assert http_get(f"{url}/healthz")[0] == 200 and http_get(f"{url}/readyz")[0] == 200
        code, resp = http_post(f"{url}/studies", body, ctype, auth)
        assert code == 200, resp
        refs = json.loads(resp)["00081199"]["Value"]
        assert [r["00081155"]["Value"][0] for r in refs] == [sop_uid(p) for p in paths]
        wait_for(lambda: len(pacs.sr_instance_ids()) == 2, 30, "SRs for the STOW-RS instances")
        assert http_post(f"{url}/studies", b"x", "application/dicom", auth)[0] == 415
        png = tmp_path / "x.png"
        from tests.bundle_support import cxr_test_images, write_png

        write_png(png, cxr_test_images(1)[0])
        code, resp = http_post(f"{url}/v1/predict", png.read_bytes(), "image/png", auth)
        assert code == 200, resp
        want = predict_all(cxr_bundle, pubkey, [paths[0]])[sop_uid(paths[0])]
        assert json.loads(resp)["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
        code, resp = http_post(f"{url}/v1/predict", b"not an image", "image/png", auth)
        assert code == 422 and "cannot read image" in json.loads(resp)["error"]
        assert http_post(f"{url}/v1/admin/reload", b"", "text/plain")[0] == 401
        code, resp = http_post(f"{url}/v1/admin/reload", b"", "text/plain", auth)
        assert code == 200 and json.loads(resp)["bundle_id"] == svc.model.algorithm.bundle_id
        assert svc.metrics.snapshot()["bundle_swaps"] == 1
    finally:
        svc.stop()


def _serve_args(tmp_path: Path, bundle: Path, pubkey: Path, pacs) -> list[str]:
    """The real CLI with a TOML config for most settings and flags for the rest."""
    config = tmp_path / "appliance.toml"
    config.write_text(
        f'ae-title = "EDGEMED"\nallowed-aets = ["{SENDER_AET}"]\nworkers = 2\nthreads = 1\n'
        f'forward = ["{pacs.destination}"]\nretry-backoff = 0.05\n'
    )
    return [
        str(bundle),
        "--pubkey",
        str(pubkey),
        "--config",
        str(config),
        "--dicom-port",
        str(pacs.service_port),
        "--spool",
        str(tmp_path / "spool"),
    ]


def test_sighup_swaps_a_good_bundle_and_refuses_a_bad_one(
    tmp_path, pacs, cxr_onnx, cxr_bundle, pubkey, tmp_path_factory
):
    from tests.bundle_support import cxr_report_for, keypair, make_bundle

    live = tmp_path / "live.bundle"
    shutil.copyfile(cxr_bundle, live)
    report = cxr_report_for(cxr_onnx, tmp_path_factory)
    second = make_bundle(
        cxr_onnx, report, keypair(tmp_path_factory)[0], tmp_path / "b2.bundle", "--modality", "CR"
    )
    proc = ServeProcess(
        _serve_args(tmp_path, live, pubkey, pacs), tmp_path / "serve.log", free_port()
    ).start()
    try:
        first_id = proc.readyz()["bundle_id"]
        shutil.copyfile(second, live)
        proc.proc.send_signal(signal.SIGHUP)
        new_id = wait_for(lambda: (i := proc.readyz()["bundle_id"]) != first_id and i, 60, "swap")
        data = bytearray(live.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte: the hash check must refuse it
        live.write_bytes(bytes(data))
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: proc.metrics()["edgemed_serve_bundle_swaps_refused_total"] == 1, 60, "refusal"
        )
        assert proc.readyz()["bundle_id"] == new_id  # the good bundle keeps serving
        path = cxr_dicoms(tmp_path / "in", 1)[0]
        assert set(send([path], pacs.service_port).values()) == {0}
        wait_for(lambda: len(pacs.sr_instance_ids()) == 1, 30, "an SR")
        assert sr_results(pacs)[sop_uid(path)]["text"]["Bundle ID"] == new_id
    finally:
        proc.stop()
    events = [json.loads(x) for x in (tmp_path / "spool" / "audit.jsonl").read_text().splitlines()]
    swaps = [e for e in events if e["event"].startswith("bundle_")]
    assert [e["event"] for e in swaps] == ["bundle_swapped", "bundle_refused"]
    assert swaps[0]["old_bundle_id"] == first_id and swaps[0]["bundle_id"] == new_id


def _keep_sending(
    paths: list[Path], port: int, acked: dict, stop: threading.Event, tls_args=None
) -> None:
    """A modality that re-sends whatever was not acknowledged until everything is."""
    import time

    import pydicom
    from pynetdicom import AE

    datasets = {sop_uid(p): pydicom.dcmread(p) for p in paths}
    ae = AE(ae_title=SENDER_AET)
    ae.add_requested_context(next(iter(datasets.values())).SOPClassUID)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    while not stop.is_set() and len(acked) < len(datasets):
        assoc = ae.associate("127.0.0.1", port, ae_title="EDGEMED", tls_args=tls_args)
        if not assoc.is_established:
            time.sleep(0.1)
            continue
        try:
            for uid, ds in datasets.items():
                if uid in acked:
                    continue
                status = assoc.send_c_store(ds)
                if not status or not assoc.is_established:
                    break
                if int(status.Status) == 0:
                    acked[uid] = True
        except (RuntimeError, OSError):
            pass
        finally:
            if assoc.is_established:
                assoc.release()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path, pacs, cxr_bundle, pubkey):
    from tests.conftest import run_cli

    seed = random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    paths = cxr_dicoms(tmp_path / "in", 100)
    args = _serve_args(tmp_path, cxr_bundle, pubkey, pacs)
    proc = ServeProcess(args, tmp_path / "serve.log", free_port()).start()
    acked: dict[str, bool] = {}
    stop = threading.Event()
    sender = threading.Thread(target=_keep_sending, args=(paths, pacs.service_port, acked, stop))
    sender.start()
    try:
        for mark in sorted(rng.sample(range(5, 90), 2)):
            wait_for(lambda m=mark: len(acked) >= m, 120, f"{mark} acknowledgements")
            proc.kill()
            proc = ServeProcess(args, tmp_path / "serve.log", proc.http_port).start()
        sender.join(timeout=180)
        assert len(acked) == len(paths), f"seed {seed}: {len(acked)} acknowledged"
        wait_for(lambda: len(pacs.sr_instance_ids()) >= len(paths), 120, f"SRs (seed {seed})")
        wait_for(lambda: proc.metrics()["edgemed_serve_queue_depth"] == 0, 60, "an empty queue")
    finally:
        stop.set()
        sender.join(timeout=30)
        proc.stop()
    sources = [r.ReferencedSOPInstanceUID for r in _sources(pacs)]
    assert sorted(sources) == sorted(acked), f"seed {seed}: SRs per acknowledged image differ"
    assert len(sources) == len(set(sources)), f"seed {seed}: an image got two SRs"
    res = run_cli("audit", "verify", tmp_path / "spool" / "audit.jsonl")
    assert res.code == 0 and "chain intact" in res.out, res


def test_srs_reach_orthanc_over_dicom_tls(tmp_path, cxr_bundle, pubkey):
    """Both legs over TLS: DCMTK storescu +tls in, Orthanc with DicomTls* settings receiving the
    SR from the forwarder (which verifies Orthanc's certificate and presents the appliance's)."""
    from tests.serve_support import tls_material

    m = tls_material(tmp_path / "tls")
    port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", port, tls=m).start()
    settings = {
        "tls-cert": str(m.server_cert),
        "tls-key": str(m.server_key),
        "tls-ca": str(m.ca),
        "forward-tls": True,
        "forward-ca": str(m.ca),
    }
    svc = in_process(tmp_path, cxr_bundle, pubkey, port, forward=[orthanc.destination], **settings)
    try:
        path = cxr_dicoms(tmp_path / "in", 1)[0]
        cmd = ["/usr/bin/storescu", "+tls", str(m.client_key), str(m.client_cert), "+cf"]
        cmd += [str(m.ca), "-aet", SENDER_AET, "-aec", "EDGEMED", "127.0.0.1", str(port), str(path)]
        assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
        wait_for(lambda: len(orthanc.sr_instance_ids()) == 1, 60, "the SR in Orthanc over TLS")
        assert svc.metrics.snapshot()["sent"] == 1
        # Orthanc's DICOM port takes no clear text: a plain association is refused there.
        assert (
            send([path], orthanc.dicom_port, calling="EDGEMED", called="ORTHANC").get("rejected")
            is not None
        )
    finally:
        svc.stop()
        orthanc.stop()
