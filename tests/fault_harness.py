"""The fault matrix's tools: the real `vigil run` as a child process, its config, a silent port, the events database.

:class:`VigilRun` starts ``python -m vigil.cli run --config C`` and keeps every log line with the monotonic time it
arrived, so a test measures "stall detected N s after SIGSTOP" or "frames flowing N s after the server returned"
from the lines the operator would see. :class:`Measurements` collects the figures (printed, and written as JSON to
``$VIGIL_FAULT_MATRIX_JSON`` when set: docs/reliability.md quotes such a run).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
MEASUREMENTS_ENV = "VIGIL_FAULT_MATRIX_JSON"


def wait_until(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    """True as soon as ``condition()`` is, False if it is not after ``timeout_s`` (checked every ``poll_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


class VigilRun:
    """`vigil run --config C` in a child process; ``lines`` are (arrival monotonic s, text)."""

    def __init__(self, config: Path, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # the receiver is on 127.0.0.1
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vigil.cli", *(["-v"] if os.environ.get("VIGIL_MATRIX_DEBUG") else []), "run",
             "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env, cwd=REPO,
        )  # fmt: skip
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._log = log_path.open("a", encoding="utf-8")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            now = time.monotonic()
            with self._lock:
                self.lines.append((now, line.rstrip("\n")))
            self._log.write(f"{now - self.started:8.2f} {line}")
            self._log.flush()

    def mark(self, text: str) -> float:
        """Write what the test just did into the log (with the same clock as the lines); returns the time."""
        now = time.monotonic()
        with self._lock:
            if not self._log.closed:
                self._log.write(f"{now - self.started:8.2f} ---- test: {text}\n")
                self._log.flush()
        return now

    def first(self, pattern: str, after: float = 0.0) -> float | None:
        """Arrival time of the first line at or after ``after`` that matches ``pattern`` (a regex), or None."""
        regex = re.compile(pattern)
        with self._lock:
            return next((t for t, line in self.lines if t >= after and regex.search(line)), None)

    def wait_for(self, pattern: str, timeout_s: float, after: float = 0.0) -> float:
        """Arrival time of the first matching line; AssertionError (with the log's tail) after ``timeout_s``."""
        found: list[float] = []

        def seen() -> bool:
            hit = self.first(pattern, after)
            if hit is not None:
                found.append(hit)
            return hit is not None or self.process.poll() is not None

        wait_until(seen, timeout_s)
        assert found, f"no line matching {pattern!r} within {timeout_s} s; last lines:\n{self.tail()}"
        return found[0]

    def health(self) -> dict:
        """The API's ``/api/v1/health`` answer (its address is taken from the log)."""
        import urllib.request

        at = self.first(r"API on http://127\.0\.0\.1:\d+/api/v1")
        assert at is not None, "the API did not start"
        with self._lock:
            line = next(line for t, line in self.lines if t == at and "API on" in line)
        url = re.search(r"(http://127\.0\.0\.1:\d+/api/v1)", line).group(1) + "/health"  # type: ignore[union-attr]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=10) as answer:
            return json.loads(answer.read())

    def tail(self, count: int = 30) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines[-count:])

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> tuple[int | None, float]:
        """Send ``sig``; (exit code, seconds it took to exit), or (None, timeout) and a SIGKILL if it would not."""
        sent = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        try:
            code: int | None = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            code = None
        took = time.monotonic() - sent
        self._reader.join(timeout=5)
        self._log.close()
        return code, took


class SilentPort:
    """A port that accepts TCP connections and never answers (a hung camera); ``close()`` drops all of them."""

    def __init__(self, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.2)
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in [*self.conns, self.listener]:
            with contextlib.suppress(OSError):
                conn.close()


def write_watchlist(folder: Path, photo: Path) -> Path:
    path = folder / "watchlist.yaml"
    text = {"photo_dirs": [str(photo.parent)], "people": [{"id": "lin-manuel-miranda", "name": "Lin-Manuel Miranda",
                                                            "photos": [str(photo)]}]}  # fmt: skip
    path.write_text(yaml.safe_dump(text), encoding="utf-8")
    return path


def write_config(folder: Path, watchlist: Path, cameras: list[dict], webhook: dict, rules: dict | None = None) -> Path:
    """A `vigil run` config: 1 s status lines, 320 px detection; cameras capped at 4 frames/s (the machine has two
    cores for all of them); timeouts are the defaults unless a camera says otherwise."""
    config = {
        "data_dir": str(folder / "data"),
        "watchlist": str(watchlist),
        "status_interval_s": 1.0,
        "cameras": [{"fps_cap": 4.0, **camera} for camera in cameras],
        "detector": {"imgsz": 320},
        "rules": rules or {},
        "alerts": {"console": True, "sqlite": True, "snapshots": False, "webhook": webhook},
        "server": {"listen": "127.0.0.1:0"},  # the API on a free port: its health answer is checked too
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def stored_ids(db_path: Path, table: str = "alerts") -> set[str]:
    """Event ids in a table of the events database (read while `vigil run` may be writing: WAL allows it)."""
    if not db_path.is_file():
        return set()
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return {row[0] for row in conn.execute(f"SELECT id FROM {table}")}
    except sqlite3.OperationalError:
        return set()
    finally:
        conn.close()


def integrity(db_path: Path) -> str:
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


class Measurements:
    """Figures of the matrix, one dict per row: printed, and added to ``$VIGIL_FAULT_MATRIX_JSON`` if set."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, row: str, **figures: object) -> None:
        self.rows.append({"row": row, **figures})
        print(f"fault matrix: {row}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))

    def save(self) -> None:
        target = os.environ.get(MEASUREMENTS_ENV)
        if not target:
            return
        path = Path(target)
        previous = json.loads(path.read_text()) if path.is_file() else []
        path.write_text(json.dumps(previous + self.rows, indent=1) + "\n", encoding="utf-8")
