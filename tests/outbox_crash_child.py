"""The process `test_outbox_atomic` kills: the real sinks behind the real dispatcher, killed at one SQL statement.

``python tests/outbox_crash_child.py '<json>'`` builds ``AlertDispatcher.from_config`` (SQLite store, webhook and
MQTT outboxes in ``data_dir``, their workers and the MQTT connection not started), emits event A, arms the trap,
emits event B, starts the workers if ``workers`` says so (so whatever they send, both events are stored first), and
SIGKILLs itself the moment a statement starting with ``kill_at`` is about to run on any connection of the process
(SQLite's trace hook, in whatever thread runs it: the dispatcher's or an outbox worker's). ``kill_at`` null: killed
right after ``emit(B)`` returned. The line ``killed at: <statement>`` (stderr) tells the test where; a trap that never
fires exits 3.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
import time
from typing import Any

TRAP_WAIT_S = 60.0  # how long a trap in a worker's statement may take to fire after B was emitted


def event_ids() -> tuple[str, str]:
    return "a" * 32, "b" * 32


def install_trap(kill_at: str | None, armed: threading.Event) -> None:
    """Every connection opened from now on calls the trap before each statement it runs."""
    connect = sqlite3.connect

    def on_statement(sql: str) -> None:
        if kill_at is not None and armed.is_set() and sql.startswith(kill_at):
            print(f"killed at: {sql[:100]}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(on_statement)
        return conn

    sqlite3.connect = traced_connect  # type: ignore[assignment]


def main(options: dict[str, Any]) -> int:
    armed = threading.Event()
    install_trap(options["kill_at"], armed)
    from vigil.alerts import AlertDispatcher, MqttSink
    from vigil.config import AlertsConfig
    from vigil.types import UnknownEvent

    config = AlertsConfig.model_validate(options["alerts"])
    dispatcher = AlertDispatcher.from_config(config, options["data_dir"], start=False, poll_interval_s=0.05)
    first, second = (
        UnknownEvent(event_id, "cam1", track, 0.2, "2026-11-23T09:00:00.000Z", 1.0, 5, (0, 0, 9, 9), None)
        for track, event_id in enumerate(event_ids())
    )
    dispatcher.emit(first)
    armed.set()
    dispatcher.emit(second)
    for sink in dispatcher.sinks if options["workers"] else []:
        if isinstance(sink, MqttSink):
            sink.connection.start()
        outbox = getattr(sink, "outbox", None)
        if outbox is not None:
            outbox.start()
    if options["kill_at"] is None:
        print("killed at: after emit(B) returned", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(TRAP_WAIT_S)
    print(f"the trap {options['kill_at']!r} never fired", file=sys.stderr, flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
