"""Running the API inside `vigil run`: uvicorn in its own thread, on a socket vigil binds itself.

Binding first gives one clear line when the address is taken or not allowed, and lets tests ask for port 0. The
thread is stopped with the run's stop event (``stop()``: uvicorn finishes in-flight requests for at most
``GRACEFUL_S``; open event streams end within a second, see routes/stream.py). uvicorn installs no signal handlers
outside the main thread, so Ctrl-C and SIGTERM stay `vigil run`'s.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from vigil.config import ServerConfig
from vigil.errors import ConfigError, VigilError

log = logging.getLogger("vigil.server")
GRACEFUL_S = 2.0
START_TIMEOUT_S = 15.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_open_without_users(config: ServerConfig, users: int, config_path: str = "config.yaml") -> None:
    """Listening beyond this machine with nobody able to log in is refused with one line that says what to do."""
    if users == 0 and not is_loopback(config.host):
        raise ConfigError(
            f"server.listen: {config.listen} is reachable from other machines but no user exists; create an admin "
            f"first (vigil user add NAME --role admin --config {config_path}) or listen on 127.0.0.1"
        )


def bind_socket(config: ServerConfig) -> socket.socket:
    host, port = config.host, config.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted connections only then; without it a
    # response written in two parts waits for the client's delayed ACK (measured: 45 ms per request instead of 3)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise VigilError(f"server.listen: cannot listen on {config.listen} ({exc.strerror or exc})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class ServerThread:
    """The API server on its own thread; ``start()`` returns once it accepts connections."""

    def __init__(self, app: FastAPI, config: ServerConfig) -> None:
        self.config = config
        self.socket = bind_socket(config)
        self.port = self.socket.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=int(GRACEFUL_S),
                timeout_keep_alive=5,
                proxy_headers=False,
                server_header=False,
                ssl_certfile=str(config.tls.cert) if config.tls else None,
                ssl_keyfile=str(config.tls.key) if config.tls else None,
            )
        )
        self._thread = threading.Thread(target=self._run, name="vigil-http", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls else "http"
        host = self.config.host
        return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self.socket])
        except BaseException as exc:  # SystemExit from uvicorn on a startup failure, or a bad TLS file
            self._error = exc

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                reason = f" ({self._error})" if self._error else ""
                raise VigilError(f"server: could not start on {self.config.listen}{reason}")
            time.sleep(0.02)
        log.info("API on %s/api/v1 (docs: %s/api/docs)", self.url, self.url)

    def stop(self, timeout_s: float = GRACEFUL_S + 3.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        self.socket.close()
