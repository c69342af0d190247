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
import json
import logging
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from edgemed.errors import EdgemedError, InputError

log = logging.getLogger("edgemed.serve")
OPEN_PATHS = ("/healthz", "/readyz")


def start_http(service, bind: str, port: int) -> ThreadingHTTPServer:
    handler = type("Handler", (Handler,), {"service": service})
    server = ThreadingHTTPServer((bind, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="edgemed-http", daemon=True).start()
    return server


class Handler(BaseHTTPRequestHandler):
    service = None  # set per server by start_http
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:
        log.debug("http %s - %s", self.address_string(), fmt % args)

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

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(411, "Content-Length required")
            return None
        limit = self.service.cfg.max_upload_mb * 1024 * 1024
        if length < 0 or length > limit:
            self._error(413, f"body of {length} bytes exceeds max-upload-mb")
            return None
        return self.rfile.read(length)

    # ---- routes -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if not self._authorized():
            return
        svc = self.service
        if path == "/healthz":
            self._json(200, {"status": "ok"})
        elif path == "/readyz":
            ready = svc.ready.is_set()
            doc = {"ready": ready, "bundle_id": svc.model.algorithm.bundle_id}
            self._json(200 if ready else 503, doc)
        elif path == "/metrics":
            self._send(200, svc.metrics.render().encode(), "text/plain; version=0.0.4")
        elif path.startswith("/v1/results/"):
            uid = path.removeprefix("/v1/results/")
            from edgemed.serve.spool import valid_uid

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
            self._error(404, f"no such endpoint {path[:80]}")
            return
        body = self._body()
        if body is not None:
            route(body)

    def _predict(self, body: bytes) -> None:
        svc = self.service
        with tempfile.NamedTemporaryFile(dir=svc.spool.root / "tmp", suffix=".upload") as f:
            f.write(body)
            f.flush()
            try:
                result = svc.predict_file(Path(f.name), "upload")
            except EdgemedError as exc:
                self._error(422, " ".join(str(exc).split()).replace(f.name, "the upload"))
                return
        self._json(200, result)

    def _stow(self, body: bytes) -> None:
        from edgemed.serve.intake import sop_instance_uid, stow_parts

        try:
            parts = stow_parts(self.headers.get("Content-Type", ""), body)
        except InputError as exc:
            self._error(415, str(exc))
            return
        stored, failed = [], []
        for data in parts:
            try:
                uid = sop_instance_uid(data)
                self.service.admit(uid, [data], f"stow:{self.client_address[0]}")
                stored.append(uid)
            except (EdgemedError, OSError) as exc:
                failed.append(str(exc))
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


def _ref(uid: str) -> dict:
    return {"00081155": {"vr": "UI", "Value": [uid]}}
