"""A local webhook receiver for the tests: counts deliveries by ``Idempotency-Key``, and fails on demand.

It binds 127.0.0.1 (a free port unless one is given) and can play every fault the outbox must survive:
``fail_first`` requests answered with ``fail_status``; ``mode`` ``ok`` (200), ``fail`` (``fail_status``) or ``hang``
(the request is held, unanswered, until the mode changes or the receiver stops: the client's timeout fires); and
``stop()`` / ``start()`` (the port refuses connections in between, then serves again on the same port).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(
        self, fail_first: int = 0, port: int = 0, fail_status: int = 500, tls: ssl.SSLContext | None = None
    ) -> None:
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.mode = "ok"
        self.requests = 0
        self.by_key: Counter[str] = Counter()
        self.body_ids: dict[str, str] = {}
        self.delivered: list[tuple[str, dict[str, str], bytes]] = []  # (key, headers, body) of each 200
        self.first_ok_mono_s: float | None = None  # when the first request after start()/set_mode("ok") was taken
        self.lock = threading.Lock()
        self._release = threading.Event()
        self._tls = tls
        self._port = port
        self.server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._port}/hook"

    @property
    def keys(self) -> set[str]:
        with self.lock:
            return set(self.by_key)

    def set_mode(self, mode: str) -> None:
        """``ok``, ``fail`` or ``hang``; leaving ``hang`` releases the held requests (they get the new answer)."""
        with self.lock:
            self.mode = mode
            if mode == "ok":
                self.first_ok_mono_s = None
        if mode != "hang":
            self._release.set()
        else:
            self._release.clear()

    def start(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler())
        self.server.daemon_threads = True
        if self._tls is not None:
            self.server.socket = self._tls.wrap_socket(self.server.socket, server_side=True)
        self._port = self.server.server_address[1]
        with self.lock:
            self.first_ok_mono_s = None
        thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()

    def stop(self) -> None:
        """Close the port (connections are refused until ``start()``) and release any held request."""
        self._release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def _answer(self, key: str, headers: dict[str, str], body: bytes) -> int:
        """The status for one request (waits while the mode is ``hang``)."""
        while True:
            with self.lock:
                mode = self.mode
            if mode != "hang":
                break
            self._release.wait(0.1)
        with self.lock:
            self.requests += 1
            if self.requests <= self.fail_first or mode == "fail":
                return self.fail_status
            self.by_key[key] += 1
            self.body_ids[key] = json.loads(body)["id"]
            self.delivered.append((key, headers, body))
            if self.first_ok_mono_s is None:
                self.first_ok_mono_s = time.monotonic()
        return 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver._answer(self.headers.get("Idempotency-Key", ""), dict(self.headers.items()), body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.send_header("Location", "/elsewhere")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (its timeout) while the request was held

            def log_message(self, *args: object) -> None:
                pass

        return Handler
