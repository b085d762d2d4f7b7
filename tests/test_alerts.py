"""Events and sinks: JSONL, SQLite, the webhook outbox against a local HTTP server that fails then recovers."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from tests.webhook_receiver import Receiver
from vigil.alerts import (
    AlertDispatcher,
    ConsoleSink,
    DeliveryResult,
    JsonlSink,
    SqliteSink,
    WebhookSink,
    event_from_decision,
    load_events,
    post_json,
    read_jsonl,
    save_snapshot,
    utc_timestamp,
)
from vigil.backoff import backoff_delay_s
from vigil.config import AlertsConfig, JsonlSinkConfig, WebhookSinkConfig
from vigil.errors import VigilError
from vigil.types import Alert, AlertStage, Decision, DecisionKind, ListKind, Person, UnknownEvent

REPO = Path(__file__).resolve().parent.parent
REQUIRED_ALERT_KEYS = {
    "type",
    "stage",
    "person_id",
    "person_name",
    "list",
    "camera",
    "track_id",
    "score",
    "margin",
    "ts",
    "video_ts_s",
    "frame_index",
    "bbox",
    "snapshot",
    "id",
}


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """urllib honours *_proxy variables; the local test server must be reached directly."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def make_alert(i: int = 0, camera: str = "cam1", person_id: str = "jdoe") -> Alert:
    return Alert(
        id=f"{i:032x}",
        stage=AlertStage.CONFIRMED,
        person_id=person_id,
        person_name="John Doe",
        list=ListKind.DENY,
        camera=camera,
        track_id=i,
        score=0.71234,
        margin=0.2,
        ts=f"2026-11-23T09:00:{i % 60:02d}.000Z",
        video_ts_s=1.5 + i,
        frame_index=37 + i,
        bbox=(1.0, 2.0, 30.5, 40.25),
        snapshot=None,
        label="watchlist",
    )


def make_unknown(i: int = 0) -> UnknownEvent:
    return UnknownEvent(f"u{i:031x}", "cam2", i, 0.21, "2026-11-23T09:00:00.000Z", 2.0, 50, (0, 0, 10, 10), None)


def fast_webhook(url: str, **overrides) -> WebhookSinkConfig:
    values = {"url": url, "timeout_s": 2.0, "max_attempts": 50, "initial_backoff_s": 0.01, "max_backoff_s": 0.05}
    return WebhookSinkConfig(**(values | overrides))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def start(**kwargs) -> Receiver:
        started.append(Receiver(**kwargs))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


# ---------------------------------------------------------------------------------------------------------------------
# Records


def test_alert_json_has_the_documented_fields():
    record = make_alert().to_json()
    assert record.keys() >= REQUIRED_ALERT_KEYS
    assert record["type"] == "alert" and record["stage"] == "confirmed" and record["bbox"] == [1.0, 2.0, 30.5, 40.2]


def test_utc_timestamp_is_iso_utc():
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 11, 23, 10, 11, 37, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert utc_timestamp(moment) == "2026-11-23T09:11:37.123Z"


def test_event_from_decision_alert_and_unknown():
    person = Person("jdoe", "John Doe", ListKind.VIP, None, np.ones(4, np.float32), np.ones((1, 4), np.float32))
    alert = event_from_decision(
        Decision(DecisionKind.ALERT, "cam1", 3, AlertStage.PROVISIONAL, person, "vip", 0.7, 0.2),
        bbox=np.array([1, 2, 3, 4], np.float32),
        frame_index=9,
        video_ts_s=0.36,
        snapshot="s.jpg",
    )
    unknown = event_from_decision(
        Decision(DecisionKind.UNKNOWN, "cam1", 4, None, None, "unknown", 0.2, 0.0),
        bbox=(1, 2, 3, 4),
        frame_index=9,
        video_ts_s=0.36,
        snapshot=None,
    )
    assert isinstance(alert, Alert) and alert.to_json()["label"] == "vip" and alert.to_json()["list"] == "vip"
    assert alert.person_name == "John Doe" and alert.bbox == (1.0, 2.0, 3.0, 4.0) and len(alert.id) == 32
    record = unknown.to_json()
    assert record["type"] == "unknown" and "person_id" not in record and record["track_id"] == 4


# ---------------------------------------------------------------------------------------------------------------------
# JSONL and SQLite


def test_jsonl_round_trip_and_append(tmp_path):
    path = tmp_path / "out" / "events.jsonl"
    events = [make_alert(0), make_unknown(1), make_alert(2)]
    sink = JsonlSink(path)
    for event in events[:2]:
        sink.emit(event)
    sink.close()
    sink = JsonlSink(path)  # reopen appends
    sink.emit(events[2])
    sink.close()
    assert read_jsonl(path) == [event.to_json() for event in events]


def test_jsonl_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(make_alert(0).to_json()) + "\n" + '{"type": "al', encoding="utf-8")
    assert [e["id"] for e in read_jsonl(path)] == [make_alert(0).id]


def test_jsonl_unwritable_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(VigilError, match="cannot open events file"):
        JsonlSink(blocker / "events.jsonl")


def test_sqlite_survives_reopen_without_duplicates(tmp_path):
    db = tmp_path / "data" / "events.sqlite3"
    sink = SqliteSink(db)
    sink.emit(make_alert(0))
    sink.emit(make_unknown(1))
    sink.close()
    sink = SqliteSink(db)
    sink.emit(make_alert(0))  # replay of the same id
    sink.emit(make_alert(2, camera="cam2", person_id="asmith"))
    sink.close()
    assert [e["id"] for e in load_events(db)] == [make_alert(0).id, make_unknown(1).id, make_alert(2).id]
    assert [e["id"] for e in load_events(db, camera="cam2", person_id="asmith")] == [make_alert(2).id]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexed = {
        row[2]
        for name in ("alerts_camera", "alerts_person_id", "alerts_ts")
        for row in conn.execute(f"PRAGMA index_info({name})")
    }
    conn.close()
    assert indexed == {"camera", "person_id", "ts"}


def test_sqlite_on_a_non_database_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "events.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(VigilError, match="events.sqlite3"):
        SqliteSink(bad)


# ---------------------------------------------------------------------------------------------------------------------
# Webhook outbox


@pytest.mark.parametrize(
    "failures, expected_s",
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (9, 256.0), (10, 300.0), (10_000, 300.0)],
)
def test_backoff_table(failures, expected_s):
    assert backoff_delay_s(failures, initial_s=1.0, max_s=300.0) == expected_s


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_outbox_backoff_schedule_and_dead_letter_with_fake_clock(tmp_path, caplog):
    clock, calls = FakeClock(), []

    def always_fail(url, event_id, payload, timeout_s, **_):
        calls.append(clock.now)
        return DeliveryResult(False, "HTTP 503")

    config = WebhookSinkConfig(url="http://hook.invalid/x", max_attempts=4, initial_backoff_s=1.0, max_backoff_s=3.0)
    sink = WebhookSink(tmp_path / "e.sqlite3", config, wall_clock=clock, start=False, post=always_fail)
    sink.emit(make_alert(0))
    start = clock.now
    with caplog.at_level(logging.WARNING, logger="vigil.alerts"):
        for offset in [0.0, 0.5, 1.0, 1.5, 2.9, 3.0, 5.9, 6.0, 20.0, 40.0]:
            clock.now = start + offset
            sink.deliver_due()
    # attempts at 0, then +1 s, +2 s, +3 s (capped): dead after 4 attempts; while the receiver stays down the given-up
    # row is still the probe every max_backoff_s (20 s, 40 s: uncounted, no new warning), so a receiver that comes back
    # is found (tests/test_outbox_outages.py)
    assert [c - start for c in calls] == [0.0, 1.0, 3.0, 6.0, 20.0, 40.0]
    assert sink.counts() == {"pending": 0, "delivered": 0, "dead": 1}
    assert sum("giving up" in r.getMessage() for r in caplog.records) == 1
    sink.close()


def test_outbox_treats_a_far_future_due_time_as_due(tmp_path):
    """The wall clock went back: a due time beyond now + max_backoff must not stall delivery."""
    clock, sent = FakeClock(), []
    config = WebhookSinkConfig(url="http://hook.invalid/x", initial_backoff_s=1.0, max_backoff_s=10.0)
    sink = WebhookSink(
        tmp_path / "e.sqlite3",
        config,
        wall_clock=clock,
        start=False,
        post=lambda url, eid, payload, t, **_: sent.append(eid) or DeliveryResult(True),
    )
    clock.now += 3600.0  # emitted "in the future"
    sink.emit(make_alert(0))
    clock.now -= 3600.0  # clock jumps back an hour
    sink.deliver_due()
    assert sent == [make_alert(0).id]
    sink.close()


@pytest.mark.parametrize("fail_status", [500, 404, 302, 307])
def test_post_json_non_2xx_and_redirects_are_failures(receivers, fail_status):
    receiver = receivers(fail_first=1, fail_status=fail_status)
    assert post_json(receiver.url, "k1", '{"id": "k1"}', 2.0) == DeliveryResult(False, f"HTTP {fail_status}")
    assert post_json(receiver.url, "k1", '{"id": "k1"}', 2.0) == DeliveryResult(True)
    assert receiver.by_key == {"k1": 1}


def test_post_json_connection_refused_is_a_failure():
    result = post_json(f"http://127.0.0.1:{free_port()}/hook", "k1", "{}", 2.0)
    assert not result.ok and result.error


def test_outbox_emit_is_idempotent(tmp_path):
    sink = WebhookSink(tmp_path / "e.sqlite3", fast_webhook("http://hook.invalid/x"), start=False)
    sink.emit(make_alert(0))
    sink.emit(make_alert(0))
    assert sink.counts() == {"pending": 1, "delivered": 0, "dead": 0}
    sink.close()


@pytest.mark.parametrize("fail_first, count", [(0, 5), (7, 12)])
def test_outbox_delivers_every_alert_through_server_errors(tmp_path, receivers, fail_first, count):
    receiver = receivers(fail_first=fail_first)
    sink = WebhookSink(tmp_path / "e.sqlite3", fast_webhook(receiver.url), poll_interval_s=0.05)
    emitted = [make_alert(i) for i in range(count)]
    for alert in emitted:
        sink.emit(alert)
    assert sink.wait_until_delivered(timeout_s=15.0)
    assert sink.counts() == {"pending": 0, "delivered": count, "dead": 0}
    sink.close()
    assert set(receiver.by_key) == {a.id for a in emitted}
    assert all(n >= 1 for n in receiver.by_key.values())
    assert all(receiver.body_ids[key] == key for key in receiver.by_key)
    assert receiver.requests >= fail_first + count  # the failures really happened


def test_outbox_delivers_after_restart_when_server_was_down(tmp_path, receivers):
    port = free_port()  # nothing listens: connection refused
    db = tmp_path / "data" / "events.sqlite3"
    url = f"http://127.0.0.1:{port}/hook"
    first = WebhookSink(db, fast_webhook(url), poll_interval_s=0.05)
    emitted = [make_alert(i) for i in range(4)]
    for alert in emitted:
        first.emit(alert)
    assert not first.wait_until_delivered(timeout_s=0.3)
    first.close()

    receiver = receivers(port=port)
    second = WebhookSink(db, fast_webhook(url), poll_interval_s=0.05)
    assert second.wait_until_delivered(timeout_s=15.0)
    second.close()
    assert set(receiver.by_key) == {a.id for a in emitted}


def test_outbox_delivers_after_the_process_is_killed(tmp_path, receivers):
    """An alert emitted, then SIGKILL before any delivery: a new process delivers it."""
    db = tmp_path / "events.sqlite3"
    port = free_port()
    script = textwrap.dedent(f"""
        import os, signal
        from vigil.alerts import WebhookSink
        from vigil.types import UnknownEvent
        from vigil.config import WebhookSinkConfig
        sink = WebhookSink({str(db)!r}, WebhookSinkConfig(url="http://127.0.0.1:{port}/hook"), start=False)
        for i in range(3):
            sink.emit(UnknownEvent(f"k{{i}}", "cam1", i, 0.2, "2026-11-23T09:00:00.000Z", 1.0, 5, (0, 0, 9, 9), None))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=60, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    receiver = receivers(port=port)
    sink = WebhookSink(db, fast_webhook(receiver.url), poll_interval_s=0.05)
    assert sink.wait_until_delivered(timeout_s=15.0)
    sink.close()
    assert set(receiver.by_key) == {"k0", "k1", "k2"}


# ---------------------------------------------------------------------------------------------------------------------
# Dispatcher and snapshots


class BrokenSink:
    name = "broken"

    def __init__(self) -> None:
        self.closed = False

    def emit(self, event):
        raise OSError("disk full")

    def flush(self):
        raise OSError("disk full")

    def close(self):
        self.closed = True
        raise OSError("disk full")


def test_dispatcher_keeps_going_when_a_sink_fails(tmp_path, caplog):
    broken, good = BrokenSink(), JsonlSink(tmp_path / "events.jsonl")
    dispatcher = AlertDispatcher([broken, good])
    with caplog.at_level(logging.WARNING, logger="vigil.alerts"):
        dispatcher.emit(make_alert(0))
        dispatcher.close()
    assert [e["id"] for e in read_jsonl(tmp_path / "events.jsonl")] == [make_alert(0).id]
    assert broken.closed
    assert any("broken" in r.getMessage() and "disk full" in r.getMessage() for r in caplog.records)


def test_dispatcher_from_config_fans_out_to_all_sinks(tmp_path, receivers, caplog):
    receiver = receivers()
    config = AlertsConfig(
        console=True,
        sqlite=True,
        jsonl=JsonlSinkConfig(path=tmp_path / "out.jsonl"),
        webhook=fast_webhook(receiver.url),
    )
    data_dir = tmp_path / "vigil-data"
    with caplog.at_level(logging.INFO, logger="vigil.alerts"):
        dispatcher = AlertDispatcher.from_config(config, data_dir, poll_interval_s=0.05)
        assert [s.name for s in dispatcher.sinks] == ["sqlite", "webhook", "jsonl", "console"]
        dispatcher.emit(make_alert(0))
        dispatcher.emit(make_unknown(1))
        webhook = dispatcher.sinks[1]
        assert isinstance(webhook, WebhookSink) and webhook.wait_until_delivered(timeout_s=15.0)
        dispatcher.close()
    ids = [make_alert(0).id, make_unknown(1).id]
    assert [e["id"] for e in load_events(data_dir / "events.sqlite3")] == ids
    assert [e["id"] for e in read_jsonl(tmp_path / "out.jsonl")] == ids
    assert set(receiver.by_key) == set(ids)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("ALERT", "UNKNOWN"))]
    assert len(lines) == 2 and "jdoe (John Doe)" in lines[0]


def test_console_sink_writes_one_line(caplog):
    with caplog.at_level(logging.INFO, logger="vigil.alerts"):
        ConsoleSink().emit(make_alert(0))
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()


def test_save_snapshot_writes_a_readable_jpeg(tmp_path):
    import cv2

    chip = np.zeros((112, 112, 3), np.uint8)
    chip[:, :56] = (0, 0, 255)
    path = save_snapshot(tmp_path, "abc123", chip, day=date(2026, 11, 23))
    assert path == str(tmp_path / "snapshots" / "2026-11-23" / "abc123.jpg")
    image = cv2.imread(path)
    assert image.shape == (112, 112, 3) and image[50, 10, 2] > 200 and image[50, 100, 2] < 50


def test_save_snapshot_failure_returns_none(tmp_path, caplog):
    assert save_snapshot(tmp_path, "abc", np.zeros((0, 0, 3), np.uint8)) is None
    assert "cannot save snapshot" in caplog.text
