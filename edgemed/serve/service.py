"""The running appliance: spool + workers + DICOM SCP + HTTP + audit, and the bundle swap.

One worker pass per instance (`process`): read the spooled file, check it against the service's
modality filter and the bundle's contract, classify, build the SR, write result JSON and SR to the
spool (the "processed" record), then C-STORE the SR to every destination not yet acknowledged. A
restart re-queues everything still in queue/ and continues from the last record written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from edgemed.domain.watch import DomainWatch
from edgemed.errors import EdgemedError, InputError
from edgemed.serve.audit import AuditLog
from edgemed.serve.audit_head import HeadSigner
from edgemed.serve.config import ServeConfig
from edgemed.serve.dicom_scp import start_scp
from edgemed.serve.forwarder import Forwarder, dest_key
from edgemed.serve.health import SpoolFailing, SpoolHealth, retry_delay
from edgemed.serve.http import start_http
from edgemed.serve.intake import check_header, read_header
from edgemed.serve.metrics import Metrics
from edgemed.serve.model import Model, open_model
from edgemed.serve.preflight import preflight
from edgemed.serve.spool import Spool
from edgemed.serve.sr import build_sr
from edgemed.serve.syslog import SyslogForwarder

log = logging.getLogger("edgemed.serve")
LARGE_DECODE_BYTES = 16 << 20


class Service:
    def __init__(self, cfg: ServeConfig, bundle: Path, pubkey: Path) -> None:
        self.cfg, self.bundle_path, self.pubkey = cfg, Path(bundle), Path(pubkey)
        self.token = cfg.token()
        # TLS files, keys, ports and the bundle are checked before the spool is created: a bad
        # one leaves nothing behind.
        pre = preflight(cfg)
        self.tls = pre.tls
        self.model = open_model(self.bundle_path, self.pubkey, cfg)
        self.spool = Spool(cfg.spool)
        self.audit = AuditLog(cfg.audit_path)
        self.head_signer = (
            HeadSigner(self.audit, pre.audit_key, cfg.audit_sign_interval)
            if pre.audit_key
            else None
        )
        self.metrics = Metrics(self.spool.depth)
        self.syslog = None
        if pre.syslog is not None:
            self.syslog = SyslogForwarder(cfg.audit_syslog, pre.syslog, cfg.ae_title, self.metrics)
            self.audit.sink = self.syslog.put
        self.health = SpoolHealth(self.spool.root / "tmp", self._spool_state_changed)
        self.forwarder = Forwarder(cfg.ae_title, cfg.retries, cfg.retry_backoff, self.tls)
        self.watch = DomainWatch(self.audit, self.metrics, log)
        self._infer_lock = threading.Lock()
        self._large_decode = threading.Lock()
        self._swap_lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._received_at: dict[str, float] = {}
        self._workers: list[threading.Thread] = []
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.scp = self.http = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:

        a = self.model.algorithm
        try:  # a full disk at start: serve, refuse intake and say why until it has room
            self.audit.append("started", bundle_id=a.bundle_id, bundle_sha256=a.bundle_sha256)
        except OSError as exc:
            self._spool_failed("start", exc)
        if self.head_signer is not None:
            self.head_signer.start()
        for uid in self.spool.pending():
            self._queue.put(uid)
        for i in range(self.cfg.workers):
            t = threading.Thread(target=self._work, name=f"edgemed-worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        self._ae, self.scp = start_scp(
            self.cfg.ae_title,
            self.cfg.dicom_bind,
            self.cfg.dicom_port,
            self.cfg.allowed_aets,
            self.admit,
            self.cfg,
            self.tls,
        )
        self.http = start_http(self, self.cfg.http_bind, self.cfg.http_port)
        self.ready.set()

    def not_ready_reason(self) -> str | None:
        """Why the service cannot take work now (GET /readyz), or None when it can."""
        if not self.ready.is_set():
            return "starting or stopping"
        if self.health.reason is not None:
            return self.health.reason
        dead = [t.name for t in self._workers if not t.is_alive()]
        return f"worker threads ended: {', '.join(dead)}" if dead else None

    @property
    def dicom_port(self) -> int:
        return self.scp.server_address[1]

    @property
    def http_port(self) -> int:
        return self.http.server_address[1]

    def stop(self) -> None:
        """Stop taking work, let workers finish the item in hand, release the model."""
        self.ready.clear()
        if self.scp is not None:
            self.scp.shutdown()
        if self.http is not None:
            self.http.shutdown()
        self.forwarder.stopping.set()
        for _ in self._workers:
            self._queue.put(None)
        for t in self._workers:
            t.join(timeout=30)
        self.forwarder.close()
        self.health.close()
        self.model.predictor.close()
        self._audit_quietly("stopped")
        if self.head_signer is not None:
            self.head_signer.close()
        if self.syslog is not None:
            self.syslog.close()
        self.audit.close()
        self.stopped.set()

    # ---- intake -------------------------------------------------------------------------------
    def admit(self, uid: str, chunks: Iterable[bytes], source: str) -> bool:
        """Spool one instance (durable before return); False for a duplicate SOP Instance UID.

        OSError (SpoolFailing while the spool is known not to accept writes): nothing is kept,
        the sender is told to retry (C-STORE 0xA700, STOW-RS 503)."""
        if self.health.reason is not None:
            raise SpoolFailing(self.health.reason)
        digest = hashlib.sha256()
        try:
            if not self.spool.admit(uid, _hashing(chunks, digest)):
                self.metrics.inc("duplicates")
                self.audit.append("duplicate", sop_instance_uid=uid, source=source)
                return False
        except OSError as exc:
            self._spool_failed("receive", exc)
            raise
        try:
            self.audit.append(
                "received", sop_instance_uid=uid, source=source, sha256=digest.hexdigest()
            )
        except OSError as exc:  # not acknowledged, so not kept: the sender retries
            self.spool.finish(uid)
            self._spool_failed("audit", exc)
            raise
        self._received_at[uid] = time.perf_counter()
        self.metrics.inc("received")
        self._queue.put(uid)
        return True

    def result(self, uid: str) -> dict | None:
        """The JSON result of `uid`, or None (not done, or a record a power cut left damaged)."""
        try:
            return json.loads(self.spool.path("results", uid, ".json").read_text())
        except (OSError, ValueError):
            return None

    # ---- work ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            uid = self._queue.get()
            if uid is None:
                return
            self._handle(uid)

    def _handle(self, uid: str) -> None:
        """Process `uid` until it has an SR or a refusal record; a spool write error is retried
        with capped backoff (the instance stays in queue/ meanwhile, so a restart resumes it)."""
        attempt = 0
        while True:
            try:
                try:
                    self.process(uid)
                except OSError:
                    raise
                except Exception as exc:  # one bad instance must not take a worker down
                    log.exception("processing %s failed", uid)
                    self._give_up(uid, "failed", f"{type(exc).__name__}: {exc}")
                return
            except OSError as exc:
                self._spool_failed(f"processing {uid}", exc)
                if self.forwarder.stopping.wait(retry_delay(attempt)):
                    return  # shutting down: the instance is still in queue/
                attempt += 1

    def _spool_failed(self, what: str, exc: OSError) -> None:
        if isinstance(exc, SpoolFailing):
            return
        log.error("spool write failed (%s): %s", what, exc)
        self.metrics.inc("spool_write_errors")
        self.health.failed(what, exc)

    def _spool_state_changed(self, failing: bool, reason: str) -> None:
        self._audit_quietly("spool_failing" if failing else "spool_recovered", reason=reason[:500])

    def _audit_quietly(self, event: str, **fields: object) -> None:
        """An audit entry about the spool itself, which may sit on the failing disk."""
        try:
            self.audit.append(event, **fields)
        except OSError as exc:
            log.error("audit entry %s not written: %s", event, exc)

    def process(self, uid: str) -> None:
        sr = self._cached_sr(uid)
        if sr is None:
            sr = self._classify(uid)
            if sr is None:
                return
        if self._forward(uid, sr):
            self.spool.finish(uid)
            started = self._received_at.pop(uid, None)
            if started is not None:
                self.metrics.observe("latency_seconds", time.perf_counter() - started)

    def _cached_sr(self, uid: str):
        """The SR made before a restart, if its records are whole (else None: make it again)."""
        from pydicom import dcmread
        from pydicom.errors import InvalidDicomError

        if self.result(uid) is None:
            return None
        try:
            return dcmread(self.spool.path("sr", uid, ".dcm"))
        except (OSError, InvalidDicomError, ValueError, EOFError):
            return None

    def _classify(self, uid: str):

        src = self.spool.path("queue", uid, ".dcm")
        t0 = time.perf_counter()
        try:
            header = read_header(src)
            model = self.model
            check_header(header, uid, model.modalities)
            result = self._predict(model, src, uid, t0)
        except InputError as exc:
            self._give_up(uid, "refused", str(exc))
            return None
        self.watch.observe(model.predictor, result, uid)
        if result["status"] == "refused":  # outside the domain under `refuse`: no finding
            self._give_up(uid, "domain_refused", result.get("domain_reason", "out of domain"))
            return None
        self.metrics.observe("inference_seconds", time.perf_counter() - t0)
        sr = build_sr(header, result, model.algorithm)
        result.update(
            sop_instance_uid=uid,
            study_instance_uid=str(header.StudyInstanceUID),
            sr_sop_instance_uid=str(sr.SOPInstanceUID),
            device_uid=model.algorithm.device_uid,
        )
        self.spool.put("sr", uid, _encode(sr), ".dcm", durable=False)
        self.spool.put("results", uid, json.dumps(result, indent=1).encode(), ".json", False)
        self.audit.append(
            "processed",
            sop_instance_uid=uid,
            sr_sop_instance_uid=str(sr.SOPInstanceUID),
            bundle_id=model.algorithm.bundle_id,
            decision=result["decision"],
        )
        self.metrics.inc("done")
        return sr

    def predict_file(self, path: Path, name: str) -> dict:
        """Classify one file with the bundle in service now (POST /v1/predict); no SR, no spool."""
        return self._predict(self.model, path, name, time.perf_counter())

    def _predict(self, model: Model, src: Path, uid: str, t0: float) -> dict:
        image = self._prepare(model, src)
        with self._infer_lock:  # a swap closes the old runner only while holding this lock
            if self.model is not model:
                model = self.model
                image = model.predictor.prepare(src)
            result = model.predictor.predict_image(image, uid, t0)
        if not all(math.isfinite(v) for v in result.get("probabilities", {}).values()):
            raise InputError(f"the model's output for {uid} is not finite; no result is reported")
        return result

    def _prepare(self, model: Model, src: Path):
        """Decode + preprocess; one large instance at a time (decoding a 60 MB image peaks near
        11x its size), so memory is bounded by one large decode, not one per worker."""
        if src.stat().st_size < LARGE_DECODE_BYTES:
            return model.predictor.prepare(src)
        with self._large_decode:
            return model.predictor.prepare(src)

    def _forward(self, uid: str, sr) -> bool:
        """True when every destination has the SR or it was dead-lettered for it."""
        for dest in self.cfg.forward:
            key = dest_key(dest)
            marker = self.spool.sent_marker(key, uid)
            if marker.exists():
                continue
            out = self.forwarder.send(sr, dest)
            if out.ok:
                self.spool.put(f"sent/{key}", uid, b"", durable=False)
                self.audit.append(
                    "sent",
                    sop_instance_uid=uid,
                    destination=str(dest),
                    sr_sop_instance_uid=str(sr.SOPInstanceUID),
                    attempts=out.attempts,
                )
                self.metrics.inc("sent")
            elif self.forwarder.stopping.is_set():
                return False  # shutting down: resume after the restart, not a dead letter
            else:
                self.spool.put(f"dead/{key}", uid, _encode(sr), ".dcm")
                self.audit.append(
                    "failed",
                    sop_instance_uid=uid,
                    destination=str(dest),
                    detail=out.detail,
                    attempts=out.attempts,
                )
                self.metrics.inc("dead_lettered")
        return True

    def _give_up(self, uid: str, kind: str, reason: str) -> None:
        """No SR for this instance: record why, count it, drop it from the queue."""
        log.warning("%s %s: %s", kind, uid, reason)
        record = {"sop_instance_uid": uid, "kind": kind, "reason": reason}
        self.spool.put("refused", uid, json.dumps(record).encode(), ".json")
        self.audit.append(kind, sop_instance_uid=uid, reason=reason[:500])
        self.metrics.inc(kind)
        self._received_at.pop(uid, None)
        self.spool.finish(uid)

    def on_sighup(self) -> None:
        """SIGHUP: read the TLS files again (if TLS is on), then verify and swap the bundle."""
        if self.tls is not None and self.tls.reload():
            self._audit_quietly("tls_reloaded", cert_sha256=_sha256_file(self.tls.files.cert))
        self.swap()

    # ---- bundle swap --------------------------------------------------------------------------
    def swap(self) -> bool:
        """Verify and load the bundle file again; switch only when it is completely good."""
        with self._swap_lock:
            old = self.model
            try:
                new = open_model(self.bundle_path, self.pubkey, self.cfg)
            except EdgemedError as exc:
                log.error("bundle swap refused, still serving %s: %s", old.algorithm.bundle_id, exc)
                self.audit.append(
                    "bundle_refused",
                    bundle_id=old.algorithm.bundle_id,
                    reason=" ".join(str(exc).split())[:500],
                )
                self.metrics.inc("bundle_swaps_refused")
                return False
            with self._infer_lock:
                self.model = new
                old.predictor.close()
            a = new.algorithm
            self.audit.append(
                "bundle_swapped",
                old_bundle_id=old.algorithm.bundle_id,
                bundle_id=a.bundle_id,
                bundle_sha256=a.bundle_sha256,
            )
            self.metrics.inc("bundle_swaps")
            log.info("now serving bundle %s", a.bundle_id)
            return True


def _sha256_file(path: Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def _hashing(chunks: Iterable[bytes], digest) -> Iterator[bytes]:
    """`chunks`, fed to `digest` on the way (the instance is read once, never held whole)."""
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _encode(ds) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
