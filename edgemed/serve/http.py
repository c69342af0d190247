"""HTTP side (stdlib ThreadingHTTPServer, bound to 127.0.0.1 unless configured otherwise).

    GET  /healthz                    process alive
    GET  /readyz                     bundle loaded, DICOM listener and workers up (503 otherwise)
    GET  /metrics                    Prometheus text
    GET  /v1/results/{sop_uid}       the JSON result of one instance (404 until it is done)
    POST /v1/predict                 body = one image file (PNG/JPEG/DICOM) -> the predict JSON
    POST /studies                    STOW-RS: multipart/related; type="application/dicom"
    POST /v1/admin/reload            verify the bundle file again and swap (token required)
With a token configured, everything but /healthz and /readyz needs `Authorization: Bearer TOKEN`.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import mmap
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from edgemed.errors import EdgemedError, InputError
from edgemed.serve.httplimits import BodyClock, DeadlineReader, LimitedHTTPServer
from edgemed.serve.intake import sop_instance_uid, stow_spans
from edgemed.serve.spool import valid_uid

log = logging.getLogger("edgemed.serve")
OPEN_PATHS = ("/healthz", "/readyz")


def start_http(service, bind: str, port: int) -> LimitedHTTPServer:
    cfg = service.cfg
    handler = type("Handler", (Handler,), {"service": service})
    server = LimitedHTTPServer(
        (bind, port),
        handler,
        cfg.http_max_connections,
        cfg.http_max_per_client,
        lambda: service.metrics.inc("http_refused"),
        service.tls,
    )
    threading.Thread(target=server.serve_forever, name="edgemed-http", daemon=True).start()
    return server


class Handler(BaseHTTPRequestHandler):
    service = None  # set per server by start_http
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:
        log.debug("http %s - %s", self.address_string(), fmt % args)

    def setup(self) -> None:
        super().setup()
        self._reader = DeadlineReader(self.connection, self.service.cfg.http_timeout)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + self.service.cfg.http_timeout
        super().handle_one_request()

    # ---- plumbing -----------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, doc: object, ctype: str = "application/json") -> None:
        self._send(code, json.dumps(doc).encode(), ctype)

    def _error(self, code: int, message: str) -> None:
        self._json(code, {"error": message})

    def _authorized(self) -> bool:
        token = self.service.token
        if token is None or self.path.split("?")[0] in OPEN_PATHS:
            return True
        given = self.headers.get("Authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip(), token):
            return True
        self._error(401, "missing or wrong bearer token")
        return False

    def _body_file(self) -> Path | None:
        """The request body streamed to a file under spool/tmp (the caller deletes it), or None
        with the error sent: no or oversized Content-Length, a short body (400, nothing kept), a
        spool that cannot take it (503). A stalled or trickling body raises TimeoutError."""
        self._reader.deadline = None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._close_with(411, "Content-Length required")
        limit = self.service.cfg.max_upload_mb * 1024 * 1024
        if length < 0 or length > limit:
            return self._close_with(413, f"body of {length} bytes exceeds max-upload-mb")
        reason = self.service.not_ready_reason()
        if reason is not None:
            return self._close_with(503, f"not accepting uploads now: {reason}")
        path = self.service.spool.root / "tmp" / f"http-{uuid.uuid4().hex}.part"
        try:
            got = self._copy_body(path, length)
        except OSError as exc:
            path.unlink(missing_ok=True)
            if isinstance(exc, TimeoutError):
                raise
            return self._close_with(503, f"the spool cannot store the upload now ({exc})")
        if got < length:
            path.unlink(missing_ok=True)
            return self._close_with(
                400, f"body ended after {got} of {length} bytes (Content-Length); nothing stored"
            )
        return path

    def _copy_body(self, path: Path, length: int) -> int:
        clock = BodyClock(self.service.cfg.http_timeout)
        with open(path, "wb") as f:
            while clock.got < length:
                chunk = self.rfile.read1(min(1 << 20, length - clock.got))
                if not chunk:
                    break
                f.write(chunk)
                clock.tick(len(chunk))
        return clock.got

    def _close_with(self, code: int, message: str) -> None:
        """Send an error and end the connection (the rest of the body was not read)."""
        self.close_connection = True
        self._error(code, message)

    # ---- routes -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if not self._authorized():
            return
        svc = self.service
        if path == "/healthz":
            self._json(200, {"status": "ok"})
        elif path == "/readyz":
            reason = svc.not_ready_reason()
            doc = {"ready": reason is None, "bundle_id": svc.model.algorithm.bundle_id}
            self._json(
                200 if reason is None else 503, doc if reason is None else {**doc, "reason": reason}
            )
        elif path == "/metrics":
            self._send(200, svc.metrics.render().encode(), "text/plain; version=0.0.4")
        elif path.startswith("/v1/results/"):
            uid = path.removeprefix("/v1/results/")

            result = svc.result(uid) if valid_uid(uid) else None
            if result is None:
                self._error(404, f"no result for SOP Instance UID {uid[:80]}")
            else:
                self._json(200, result)
        else:
            self._error(404, f"no such endpoint {path[:80]}")

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        if not self._authorized():
            return
        if path == "/v1/admin/reload":
            self._reload()
            return
        route = {"/v1/predict": self._predict, "/studies": self._stow}.get(path)
        if route is None:
            self._close_with(404, f"no such endpoint {path[:80]}")
            return
        body = self._body_file()
        if body is not None:
            try:
                route(body)
            finally:
                body.unlink(missing_ok=True)

    def _predict(self, body: Path) -> None:
        try:
            result = self.service.predict_file(body, "upload")
        except EdgemedError as exc:
            self._error(422, " ".join(str(exc).split()).replace(str(body), "the upload"))
            return
        self._json(200, result)

    def _stow(self, body: Path) -> None:

        with open(body, "rb") as f, _mapped(f) as data:
            try:
                spans = stow_spans(self.headers.get("Content-Type", ""), data)
            except InputError as exc:
                self._error(415, str(exc))
                return
            self._store_parts(data, spans)

    def _store_parts(self, data, spans: list[tuple[int, int]]) -> None:

        stored, failed = [], []
        for start, end in spans:
            part = data[start:end]
            try:
                uid = sop_instance_uid(part)
                self.service.admit(uid, [part], f"stow:{self.client_address[0]}")
                stored.append(uid)
            except EdgemedError as exc:
                failed.append(str(exc))
            except OSError as exc:  # the spool cannot take it now: nothing more is tried
                self._unavailable(stored, f"the spool cannot store instances now ({exc})")
                return
        code = 200 if not failed else (202 if stored else 409)
        doc = {
            "00081199": {"vr": "SQ", "Value": [_ref(uid) for uid in stored]},
            "edgemed:failed": failed,
        }
        self._json(code, doc, "application/dicom+json")

    def _reload(self) -> None:
        if self.service.token is None:
            self._error(403, "admin calls need a token; set token-file, or send SIGHUP")
        elif self.service.swap():
            self._json(200, {"bundle_id": self.service.model.algorithm.bundle_id})
        else:
            self._error(409, "new bundle refused (see the log); the old bundle keeps serving")


class _mapped:
    """The file read-only mapped (b"" for an empty file, which mmap refuses)."""

    def __init__(self, f) -> None:
        self.f, self.m = f, None

    def __enter__(self):
        size = self.f.seek(0, 2)
        if size == 0:
            return b""
        self.m = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ)
        return self.m

    def __exit__(self, *exc) -> None:
        if self.m is not None:
            self.m.close()


def _ref(uid: str) -> dict:
    return {"00081155": {"vr": "UI", "Value": [uid]}}
