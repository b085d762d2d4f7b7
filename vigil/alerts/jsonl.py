"""The JSONL sink: one JSON object per line in a file, and reading such a file back."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from vigil.alerts.sink import SinkContext
from vigil.config import AlertsConfig
from vigil.errors import VigilError
from vigil.types import Event

log = logging.getLogger("vigil.alerts")


class JsonlSink:
    """Appends one JSON object per line; each line reaches the OS at once, ``flush``/``close`` also fsync."""

    name = "jsonl"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise VigilError(f"{self.path}: cannot open events file ({exc.strerror or exc})") from None
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        line = json.dumps(event.to_json(), ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()  # to the OS: survives a process kill

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())  # to the disk: survives a power cut

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._file.close()


def build(alerts: AlertsConfig, context: SinkContext) -> JsonlSink | None:
    return None if alerts.jsonl is None else JsonlSink(alerts.jsonl.path)


def read_jsonl(path: Path | str) -> list[dict]:
    """Read an events file back; a torn last line (killed mid-write) is skipped."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipping an unreadable line", path)
    return events
