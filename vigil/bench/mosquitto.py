"""A local mosquitto broker for `vigil bench mqtt` and the tests: Debian's ``mosquitto`` on a free loopback port.

It writes its own config file (one listener on 127.0.0.1 only; optional password file, TLS files and persistence),
starts the broker as a child process, waits until the port accepts connections, and stops it by its pid (SIGTERM,
then SIGKILL after a timeout). ``restart()`` brings it back on the same port; without ``persistent``, retained
messages and sessions are lost, as after a real broker restart without persistence; with it they are kept (mosquitto
saves them at SIGTERM). Nothing it starts listens beyond 127.0.0.1.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from vigil.errors import VigilError

DEFAULT_EXECUTABLES = ("mosquitto", "/usr/sbin/mosquitto")
_POLL_S = 0.05


@dataclass(frozen=True)
class BrokerTls:
    """The broker's TLS files (PEM): the CA that signed its certificate, the certificate, its key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def find_mosquitto() -> str | None:
    """The mosquitto executable (PATH, then /usr/sbin), or None when it is not installed."""
    for name in DEFAULT_EXECUTABLES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalMosquitto:
    """One mosquitto process on ``127.0.0.1:port``; ``users`` (name -> password) turns anonymous access off."""

    def __init__(
        self,
        workdir: Path | str,
        *,
        port: int | None = None,
        users: dict[str, str] | None = None,
        tls: BrokerTls | None = None,
        persistent: bool = False,
        executable: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.users = dict(users or {})
        self.tls = tls
        self.persistent = persistent
        self.executable = executable or find_mosquitto()
        if self.executable is None:
            raise VigilError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.log_path = self.workdir / "mosquitto.log"
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.users else 'true'}",
            f"persistence {'true' if self.persistent else 'false'}",
            f"persistence_location {self.workdir}/",
            "max_queued_messages 0",  # no per-client queue limit: a subscriber that lags loses nothing
            f"user {getpass.getuser()}",  # as root, mosquitto would switch to user mosquitto and lose its files
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            f"log_dest file {self.log_path}",
        ]
        if self.users:
            lines.append(f"password_file {self._password_file()}")
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca_file}", f"certfile {self.tls.cert_file}", f"keyfile {self.tls.key_file}"]
        return "\n".join(lines) + "\n"

    def _password_file(self) -> Path:
        path = self.workdir / "passwords"
        path.write_text("", encoding="utf-8")
        path.chmod(0o600)  # mosquitto warns about (and newer versions refuse) a password file others can read
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for user, password in self.users.items():
            subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True, timeout=30)
        return path

    def start(self, timeout_s: float = 15.0) -> LocalMosquitto:
        """Start and wait until the port accepts connections; VigilError with the log's tail when it does not."""
        if self._process is not None:
            raise RuntimeError("mosquitto: already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "mosquitto.conf"
        config.write_text(self.config_text(), encoding="utf-8")
        assert self.executable is not None
        self._process = subprocess.Popen(
            [self.executable, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if _accepts(self.port):
                return self
            time.sleep(_POLL_S)
        self.stop()
        raise VigilError(f"mosquitto did not start on 127.0.0.1:{self.port} within {timeout_s:g} s: {self.log_tail()}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM by pid, SIGKILL if it has not exited within ``timeout_s``; waits until the port is free."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout_s)
        if process.stderr is not None:
            process.stderr.close()

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def log_tail(self, lines: int = 5) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:]) or "(no log)"

    def __enter__(self) -> LocalMosquitto:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
