"""What keeps the stdlib HTTP server alive on a hostile network.

- a connection cap (`http-max-connections`) and a per-client-address cap (`http-max-per-client`):
  a connection over either gets an immediate 503 and is closed, no thread is started for it;
- a header deadline (`http-timeout` seconds for the request line and headers, which is also how
  long an idle keep-alive connection is kept);
- a body that stalls (no byte for `http-timeout` s) or trickles (below MIN_BODY_RATE after the
  first `http-timeout` s) ends the connection; the part written so far is deleted.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from http.server import ThreadingHTTPServer

from edgemed.serve.tls import handshake

log = logging.getLogger("edgemed.serve")
LOG_EVERY_S = 60.0
MIN_BODY_RATE = 64 * 1024  # bytes/s a body must average once `http-timeout` has passed
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nContent-Length: 41\r\n\r\n"
    b'{"error": "too many connections; retry"} '
)


class DeadlineReader(io.RawIOBase):
    """A socket reader whose every recv waits at most `idle` s and never past `deadline`."""

    def __init__(self, sock: socket.socket, idle: float) -> None:
        self.sock, self.idle = sock, idle
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        wait = self.idle
        if self.deadline is not None:
            wait = min(wait, self.deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError("request headers not received within http-timeout")
        self.sock.settimeout(wait)
        return self.sock.recv_into(buf)


class BodyClock:
    """Raises TimeoutError when a body, after `grace` seconds, averages below MIN_BODY_RATE."""

    def __init__(self, grace: float) -> None:
        self.grace, self.t0, self.got = grace, time.monotonic(), 0

    def tick(self, n: int) -> None:
        self.got += n
        elapsed = time.monotonic() - self.t0
        if elapsed > self.grace and self.got < MIN_BODY_RATE * elapsed:
            raise TimeoutError(f"body arrives at {self.got / elapsed:.0f} B/s, below the floor")


class LimitedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a total and a per-client connection cap."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # socketserver's 5 leaves a burst of connects waiting in SYN retries

    def __init__(
        self, address, handler, max_connections: int, max_per_client: int, on_refuse, tls=None
    ):
        self.tls = tls  # serve.tls.Contexts: TLS handshake in the connection's thread
        self.max_connections, self.max_per_client = max_connections, max_per_client
        self._on_refuse = on_refuse
        self._active: dict[str, int] = {}
        self._lock = threading.Lock()
        self._logged_at = -LOG_EVERY_S
        super().__init__(address, handler)

    def active_connections(self, ip: str | None = None) -> int:
        """Open connections, in total or from one client address."""
        with self._lock:
            return sum(self._active.values()) if ip is None else self._active.get(ip, 0)

    def process_request(self, request, client_address) -> None:
        ip = client_address[0]
        with self._lock:
            busy = (
                sum(self._active.values()) >= self.max_connections
                or self._active.get(ip, 0) >= self.max_per_client
            )
            if not busy:
                self._active[ip] = self._active.get(ip, 0) + 1
        if busy:
            self._refuse(request, ip)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(ip)
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            if self.tls is not None:
                request = self._tls(request, client_address[0])
                if request is None:
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._release(client_address[0])

    def _tls(self, request, peer: str):

        try:
            wrapped = self.tls.server.wrap_socket(
                request, server_side=True, do_handshake_on_connect=False
            )
        except OSError:
            request.close()
            return None
        if not handshake(
            self.tls, wrapped, self.RequestHandlerClass.service.cfg.http_timeout, peer
        ):
            wrapped.close()
            return None
        return wrapped

    def handle_error(self, request, client_address) -> None:
        """One log line, never socketserver's traceback on stderr (a client that hung up before
        its answer is routine on a hostile network)."""
        import sys

        exc = sys.exc_info()[1]
        level = logging.DEBUG if isinstance(exc, ConnectionError) else logging.ERROR
        log.log(level, "http request from %s failed: %s: %s", client_address[0],
                type(exc).__name__, exc)  # fmt: skip

    def _release(self, ip: str) -> None:
        with self._lock:
            left = self._active.get(ip, 0) - 1
            if left > 0:
                self._active[ip] = left
            else:
                self._active.pop(ip, None)

    def _refuse(self, request: socket.socket, ip: str) -> None:
        """503 without a thread; a peer that does not read it just loses it."""
        self._on_refuse()
        if time.monotonic() - self._logged_at > LOG_EVERY_S:  # a flood must not flood the log
            self._logged_at = time.monotonic()
            log.warning(
                "http connection from %s refused: connection cap reached (counted in "
                "edgemed_serve_http_refused_total; logged once a minute)",
                ip,
            )
        try:
            request.setblocking(False)
            request.send(BUSY)
        except OSError:
            pass
        self.shutdown_request(request)
