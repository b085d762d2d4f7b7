"""An event and its outbox rows are one transaction: a crash at any statement leaves the event stored and delivered
(at least once) to every receiver, or not stored and delivered nowhere (issue 26).

Each case runs the real dispatcher in a child process (`tests/outbox_crash_child.py`: SQLite store, webhook and
MQTT outboxes) that emits event A, then event B, and is SIGKILLed just before one SQL statement runs; then the
sinks start again in this process against a real HTTP receiver and a real mosquitto on free loopback ports. The
checks: the events stored are the ones expected at that crash point, every outbox table holds exactly the stored
events, each receiver got exactly the stored events (at least once each, nothing that is not stored), and a kill
between a delivery and its "delivered" mark is a duplicate, never a loss.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.outbox_crash_child import event_ids
from tests.webhook_receiver import Receiver
from vigil.alerts import AlertDispatcher, load_events, read_jsonl
from vigil.alerts.mqtt import OUTBOX_TABLE as MQTT_OUTBOX
from vigil.bench.mosquitto import LocalMosquitto, find_mosquitto
from vigil.bench.mqtt import TopicRecorder
from vigil.config import AlertsConfig
from vigil.types import UnknownEvent

needs_mosquitto = pytest.mark.skipif(
    find_mosquitto() is None, reason="mosquitto is not installed (apt-get install mosquitto)"
)

REPO = Path(__file__).resolve().parent.parent
CHILD = REPO / "tests" / "outbox_crash_child.py"
WAIT_S = 60.0  # generous: the test machine is shared and loaded
A, B = event_ids()


@dataclass(frozen=True)
class CrashPoint:
    name: str
    kill_at: str | None  # the statement the child is killed before (None: right after emit(B) returned)
    workers: bool  # outbox workers started in the child once both events are stored (sends before the kill)
    stored: frozenset[str]  # the events stored after the crash
    resent: str | None = None  # the sink whose receiver must see a duplicate (delivered, killed before the mark)


CRASH_POINTS = [
    CrashPoint("alert row written, webhook row not", "INSERT OR IGNORE INTO outbox", False, frozenset({A})),
    CrashPoint("webhook row written, MQTT row not", "INSERT OR IGNORE INTO mqtt_outbox", False, frozenset({A})),
    CrashPoint("every row written, before COMMIT", "COMMIT", False, frozenset({A})),
    CrashPoint("committed, nothing sent yet", None, False, frozenset({A, B})),
    CrashPoint("POSTed, not marked delivered", "UPDATE outbox SET attempts", True, frozenset({A, B}), "webhook"),
    CrashPoint(
        "published, not marked delivered", f"UPDATE {MQTT_OUTBOX} SET attempts", True, frozenset({A, B}), "mqtt"
    ),
]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """urllib honours *_proxy variables; the local receiver must be reached directly."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def alerts_config(webhook_url: str, mqtt_port: int) -> dict:
    return {
        "console": False,
        "sqlite": True,
        "webhook": {"url": webhook_url, "timeout_s": 5.0, "initial_backoff_s": 0.05, "max_backoff_s": 0.2},
        "mqtt": {
            "host": "127.0.0.1",
            "port": mqtt_port,
            "client_id": "vigil-crash-test",
            "reconnect_initial_backoff_s": 1,
            "reconnect_max_backoff_s": 1,
            "publish_timeout_s": 10.0,
        },
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_child(options: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, str(CHILD), json.dumps(options)],
        cwd=REPO,
        env=env,
        timeout=180,
        capture_output=True,
        text=True,
    )


def table_ids(db_path: Path, table: str) -> set[str]:
    conn = sqlite3.connect(db_path)
    try:
        return {row[0] for row in conn.execute(f"SELECT id FROM {table}")}
    finally:
        conn.close()


def restart_and_deliver(alerts: dict, data_dir: Path) -> None:
    """The sinks of the next run: deliver everything the crashed one left, then stop."""
    dispatcher = AlertDispatcher.from_config(AlertsConfig.model_validate(alerts), data_dir, poll_interval_s=0.05)
    try:
        outboxes = {sink.name: sink.outbox for sink in dispatcher.sinks if hasattr(sink, "outbox")}
        assert set(outboxes) == {"webhook", "mqtt"}
        for name, outbox in outboxes.items():
            assert outbox.wait_until_delivered(WAIT_S), f"{name}: {outbox.counts()}"
    finally:
        dispatcher.close()


@needs_mosquitto
@pytest.mark.parametrize("point", CRASH_POINTS, ids=[p.name for p in CRASH_POINTS])
def test_a_crash_at_any_statement_leaves_each_event_stored_and_delivered_or_neither(tmp_path, point):
    receiver = Receiver()
    with LocalMosquitto(tmp_path / "broker") as broker:
        subscriber = TopicRecorder("127.0.0.1", broker.port, client_id="crash-test-subscriber", timeout_s=WAIT_S)
        try:
            alerts = alerts_config(receiver.url, broker.port)
            data_dir = tmp_path / "data"
            child = run_child({"alerts": alerts, "data_dir": str(data_dir), "kill_at": point.kill_at,
                               "workers": point.workers})  # fmt: skip
            assert child.returncode == -9 and "killed at: " in child.stderr, child.stderr[-2000:]
            db = data_dir / "events.sqlite3"
            stored = {event["id"] for event in load_events(db)}
            queued = {"webhook": table_ids(db, "outbox"), "mqtt": table_ids(db, MQTT_OUTBOX)}
            restart_and_deliver(alerts, data_dir)
            subscriber.wait_for(lambda s: set(s.event_ids()) >= stored, WAIT_S)  # the checks below say what is missing
            published = Counter(subscriber.event_ids())
        finally:
            subscriber.close()
            receiver.stop()
    assert queued == {"webhook": stored, "mqtt": stored}, f"stored {sorted(stored)} but queued {queued}"
    assert set(receiver.by_key) == stored, "a stored event not delivered, or one delivered that is not stored"
    assert set(published) == stored, "a stored event not published, or one published that is not stored"
    most = {"webhook": max(receiver.by_key.values()), "mqtt": max(published.values())}
    if point.resent is not None:  # the other sink's worker may have been caught between a send and its mark too
        assert most[point.resent] >= 2, f"{point.resent}: the delivery the kill interrupted was not repeated"
    else:  # nothing was sent before the crash: exactly once each
        assert most == {"webhook": 1, "mqtt": 1}
    assert stored == point.stored


@pytest.mark.parametrize("failing_table", ["alerts", "outbox", MQTT_OUTBOX])
def test_a_failed_write_to_one_table_stores_the_event_in_none(tmp_path, caplog, failing_table):
    """The database refuses one sink's row (a trigger raising, as a full disk would): the transaction is rolled back,
    so no table has the event and nothing will be delivered; the JSONL file still gets it, and one ERROR says so."""
    alerts = alerts_config(f"http://127.0.0.1:{free_port()}/hook", free_port())
    alerts["jsonl"] = {"path": str(tmp_path / "events.jsonl")}
    dispatcher = AlertDispatcher.from_config(AlertsConfig.model_validate(alerts), tmp_path, start=False)
    db = tmp_path / "events.sqlite3"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON {failing_table} BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    conn.close()
    event = UnknownEvent(A, "cam1", 1, 0.2, "2026-11-23T09:00:00.000Z", 1.0, 5, (0, 0, 9, 9), None)
    with caplog.at_level(logging.ERROR, logger="vigil.alerts"):
        dispatcher.emit(event)
    dispatcher.close()
    assert {table: table_ids(db, table) for table in ("alerts", "outbox", MQTT_OUTBOX)} == {
        "alerts": set(),
        "outbox": set(),
        MQTT_OUTBOX: set(),
    }
    assert [e["id"] for e in read_jsonl(tmp_path / "events.jsonl")] == [A]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "sqlite+webhook+mqtt" in errors[0] and "disk full" in errors[0]
