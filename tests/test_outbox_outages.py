"""The outbox through receiver outages, on a fake clock: probing while down, catch-up, given-up rows sent again.

Issue 26, defects 2 and 4: rows given up after ``max_attempts`` (58 min of outage with the defaults) were never sent
again, not even after a restart; and each row kept its own backoff, so alerts stayed queued minutes after the
receiver was back. Each scenario below is simulated second by second with the default retry settings unless it says
otherwise; the fake receiver answers according to the clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from vigil.alerts import AlertDispatcher, DeliveryResult, WebhookSink
from vigil.alerts.outbox import (
    ChannelState,
    Outbox,
    RetryPolicy,
    after_failure,
    after_success,
    outbox_counts,
    retry_dead,
)
from vigil.cli import main
from vigil.commands.run import log_outbox
from vigil.config import WebhookSinkConfig
from vigil.types import Alert, AlertStage, ListKind

DEFAULTS = WebhookSinkConfig(url="http://hook.invalid/x")  # 20 attempts, 1 s doubling to 300 s


def alert(i: int) -> Alert:
    return Alert(
        f"{i:032x}", AlertStage.CONFIRMED, "jdoe", "John Doe", ListKind.DENY, "cam1", i, 0.9, 0.2,
        "2026-11-23T09:00:00.000Z", 1.0, i, (1.0, 2.0, 3.0, 4.0), None, "watchlist",
    )  # fmt: skip


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.start = self.now = now

    def __call__(self) -> float:
        return self.now

    @property
    def t(self) -> float:
        return self.now - self.start


class FakeReceiver:
    """Answers by the fake clock: down (an error) while ``down(t)``; ``reject`` ids always get HTTP 400."""

    def __init__(self, clock: FakeClock, down: Callable[[float], bool], reject: frozenset[str] = frozenset()) -> None:
        self.clock, self.down, self.reject = clock, down, reject
        self.posts: list[tuple[float, str, bool]] = []  # (t, event id, ok)

    def __call__(self, url: str, event_id: str, payload: str, timeout_s: float, **_: object) -> DeliveryResult:
        ok = not self.down(self.clock.t) and event_id not in self.reject
        self.posts.append((self.clock.t, event_id, ok))
        if event_id in self.reject:
            return DeliveryResult(False, "HTTP 400")
        return DeliveryResult(ok, "" if ok else "Connection refused")


@dataclass
class Run:
    sink: WebhookSink
    clock: FakeClock
    receiver: FakeReceiver

    def until(self, t_end: float, emit_at: dict[float, list[int]] | None = None, step_s: float = 1.0) -> None:
        """Advance the clock to ``t_end`` second by second, emitting the given alerts and letting the worker run
        (as its loop would: again at once while it finds a full batch)."""
        emit_at = emit_at or {}
        while self.clock.t <= t_end:
            for i in emit_at.get(round(self.clock.t, 3), []):
                self.sink.emit(alert(i))
            while self.sink.deliver_due() >= 32:
                pass
            self.clock.now += step_s


def make_run(tmp_path, down: Callable[[float], bool], config: WebhookSinkConfig = DEFAULTS, **kw) -> Run:
    clock = FakeClock()
    receiver = FakeReceiver(clock, down, **kw)
    sink = WebhookSink(tmp_path / "events.sqlite3", config, wall_clock=clock, start=False, post=receiver)
    return Run(sink, clock, receiver)


# ---- the channel's state: pure functions ------------------------------------------------------------------------
POLICY = RetryPolicy(max_attempts=20, initial_backoff_s=1.0, max_backoff_s=300.0)


@pytest.mark.parametrize(
    ("failures", "retry_in_s"), [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (500, 300.0)]
)
def test_channel_probes_on_a_doubling_backoff(failures: int, retry_in_s: float) -> None:
    state = ChannelState()
    for second in range(failures):
        state = after_failure(state, 100.0 + second, POLICY)
    last = 100.0 + failures - 1
    assert (state.failures, state.down_since, state.retry_at - last) == (failures, 100.0, retry_in_s)
    assert not state.may_send(last + retry_in_s - 0.01, POLICY) and state.may_send(last + retry_in_s, POLICY)
    assert state.may_send(last - 3600.0, POLICY)  # the wall clock went back an hour: probe rather than stall
    assert after_success(state) == (ChannelState(), 100.0)
    assert after_success(ChannelState()) == (ChannelState(), None)


# ---- outages ------------------------------------------------------------------------------------------------------
OUTAGES = [
    # name, receiver down for [0, outage_s), alerts emitted at these seconds
    ("41 min outage, 58 alerts", 2460.0, {float(t): [t] for t in range(0, 2436, 42)}),
    ("twice as long as max_attempts allowed (2 x 64 min), 5 alerts", 2 * 3811.0, {0.0: [0, 1, 2, 3, 4]}),
    ("3 hours, one alert", 3 * 3600.0, {0.0: [0]}),
    ("10 s blip, 3 alerts", 10.0, {0.0: [0, 1, 2]}),
]


@pytest.mark.parametrize(("name", "outage_s", "emit_at"), OUTAGES, ids=[o[0] for o in OUTAGES])
def test_every_alert_arrives_after_an_outage_and_all_at_once(tmp_path, name, outage_s, emit_at) -> None:
    run = make_run(tmp_path, down=lambda t: t < outage_s)
    emitted = {i for ids in emit_at.values() for i in ids}
    run.until(outage_s + DEFAULTS.max_backoff_s + 5, emit_at)
    delivered = [(t, eid) for t, eid, ok in run.receiver.posts if ok]
    assert {eid for _, eid in delivered} == {f"{i:032x}" for i in emitted}, "an alert was lost"
    assert run.sink.counts() == {"pending": 0, "delivered": len(emitted), "dead": 0}
    first_ok = delivered[0][0]
    assert first_ok - outage_s <= DEFAULTS.max_backoff_s  # the next probe after the receiver is back
    assert all(t == first_ok for t, _ in delivered)  # catch-up: every waiting alert in the pass that found it back
    run.sink.close()


def test_while_down_one_probe_per_backoff_not_every_row(tmp_path) -> None:
    """10 alerts and a 10 minute outage: each failed try is a probe, spaced by the channel's backoff (plus one per
    new alert); before, each row retried on its own clock (10 x 12 tries)."""
    run = make_run(tmp_path, down=lambda t: t < 600.0)
    run.until(600.0 + DEFAULTS.max_backoff_s + 5, {0.0: list(range(10))})
    failed = [t for t, _, ok in run.receiver.posts if not ok]
    assert len(failed) <= 12, failed  # 1, 2, 4, ... 256 s: 10 probes in 600 s, + the first try
    assert run.sink.counts()["delivered"] == 10


def test_a_row_the_receiver_always_rejects_is_given_up_and_others_flow(tmp_path) -> None:
    """A poison row (HTTP 400 every time) must not block the others nor loop forever: it is given up after
    max_attempts, queued again once when the channel recovers, then left dead (visible) until a restart or retry."""
    config = DEFAULTS.model_copy(update={"max_attempts": 3, "max_backoff_s": 4.0})
    poison = f"{0:032x}"
    run = make_run(tmp_path, down=lambda t: False, config=config, reject=frozenset({poison}))
    run.until(120.0, {float(t): [t] for t in range(0, 100, 5)})
    tries = sum(1 for _, eid, _ok in run.receiver.posts if eid == poison)
    assert 3 <= tries <= 2 * config.max_attempts
    assert run.sink.counts() == {"pending": 0, "delivered": 19, "dead": 1}
    assert run.sink.status().dead == 1
    run.sink.close()


# ---- given-up rows: sent again on start, by `vigil outbox retry`, visible --------------------------------------
QUICK_DEATH = DEFAULTS.model_copy(update={"max_attempts": 2, "initial_backoff_s": 1.0, "max_backoff_s": 2.0})


def _kill_rows(tmp_path, count: int) -> FakeClock:
    """Emit ``count`` alerts into a dead receiver until every row is given up; the database stays."""
    run = make_run(tmp_path, down=lambda t: True, config=QUICK_DEATH)
    run.until(30.0, {0.0: list(range(count))})
    assert run.sink.counts() == {"pending": 0, "delivered": 0, "dead": count}
    run.sink.close()
    return run.clock


def test_given_up_rows_are_sent_again_after_a_restart(tmp_path, caplog) -> None:
    _kill_rows(tmp_path, 3)
    caplog.set_level(logging.INFO, logger="vigil.alerts")
    run = make_run(tmp_path, down=lambda t: False, config=QUICK_DEATH)
    assert run.sink.counts() == {"pending": 3, "delivered": 0, "dead": 0}
    assert any(
        "3 undelivered event(s)" in r.getMessage() and "3 of them given up" in r.getMessage() for r in caplog.records
    )
    run.until(1.0)
    assert run.sink.counts() == {"pending": 0, "delivered": 3, "dead": 0}
    run.sink.close()


def test_vigil_outbox_retry_requeues_given_up_rows_of_every_outbox_table(tmp_path, capsys) -> None:
    import sqlite3

    from vigil.alerts.outbox import outbox_schema

    _kill_rows(tmp_path, 2)
    conn = sqlite3.connect(tmp_path / "events.sqlite3")  # a second outbox (another sink's), one dead row
    conn.executescript(outbox_schema("mqtt_outbox"))
    conn.execute(
        "INSERT INTO mqtt_outbox (id, payload, created_at, next_attempt_at, dead_at) VALUES ('m', '{}', 1, 1, 2)"
    )
    conn.commit()
    conn.close()
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: {tmp_path}\n", encoding="utf-8")
    assert main(["outbox", "status", "--config", str(config)]) == 0
    assert "mqtt_outbox: pending=0 dead=1" in capsys.readouterr().out
    assert main(["outbox", "retry", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "outbox: 2 given-up event(s) queued again" in out and "mqtt_outbox: 1 given-up" in out
    counts = outbox_counts(tmp_path / "events.sqlite3")
    assert counts == {
        "mqtt_outbox": {"pending": 1, "delivered": 0, "dead": 0},
        "outbox": {"pending": 2, "delivered": 0, "dead": 0},
    }
    assert retry_dead(tmp_path / "events.sqlite3") == {"mqtt_outbox": 0, "outbox": 0}


def test_a_running_outbox_delivers_rows_requeued_by_retry(tmp_path) -> None:
    from tests.webhook_receiver import Receiver

    _kill_rows(tmp_path, 2)
    receiver = Receiver()
    config = QUICK_DEATH.model_copy(update={"url": receiver.url})
    sink = WebhookSink(tmp_path / "events.sqlite3", config, poll_interval_s=0.05)
    try:
        assert sink.wait_until_delivered(timeout_s=10.0)  # revived at start: sent
        assert len(receiver.keys) == 2
    finally:
        sink.close()
        receiver.stop()


@pytest.mark.parametrize(
    ("down_s", "dead", "level", "words"),
    [
        (None, 0, logging.INFO, "alerts webhook: up pending=1 dead=0 delivered=0"),
        (42.0, 0, logging.WARNING, "alerts webhook: receiver DOWN for 42 s pending=1 dead=0"),
        (None, 3, logging.WARNING, "dead=3 delivered=0 (re-send the dead ones: vigil outbox retry)"),
    ],
)
def test_the_status_line_shows_a_down_receiver_and_given_up_rows(caplog, down_s, dead, level, words) -> None:
    from vigil.alerts.outbox import OutboxStatus

    caplog.set_level(logging.INFO, logger="vigil.run")
    log_outbox(OutboxStatus("webhook", pending=1, delivered=0, dead=dead, receiver_down_s=down_s))
    (record,) = caplog.records
    assert record.levelno == level and words in record.getMessage()


def test_the_dispatcher_reports_each_outbox(tmp_path) -> None:
    run = make_run(tmp_path, down=lambda t: True, config=QUICK_DEATH)
    dispatcher = AlertDispatcher([run.sink])
    run.until(30.0, {0.0: [0]})
    (status,) = dispatcher.outbox_statuses()
    assert (status.channel, status.pending, status.dead) == ("webhook", 0, 1)
    assert status.receiver_down_s is not None and status.receiver_down_s >= 29.0
    dispatcher.close()


# ---- a transport that knows when it cannot deliver (MQTT: ``ready`` is "connected to the broker") -------------------
class Transport:
    """``ready`` and ``send`` of a transport whose link comes and goes; ``accept`` says whether a send succeeds."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.connected, self.accept = clock, True, True
        self.sent: list[tuple[float, str, bool]] = []  # (t, event id, ok)

    def ready(self) -> bool:
        return self.connected

    def send(self, event_id: str, payload: str) -> DeliveryResult:
        self.sent.append((self.clock.t, event_id, self.accept))
        return DeliveryResult(self.accept, "" if self.accept else "no acknowledgement within 5 s")


def transport_outbox(tmp_path, clock: FakeClock, transport: Transport, policy: RetryPolicy) -> Outbox:
    return Outbox(
        tmp_path / "events.sqlite3", transport.send, policy, channel="mqtt", target="broker", table="mqtt_outbox",
        wall_clock=clock, start=False, ready=transport.ready,
    )  # fmt: skip


def test_a_transport_back_is_probed_at_once_and_catches_up_given_up_rows(tmp_path) -> None:
    """Publishes failed while connected (a row given up, the channel in a 60 s backoff), then the link dropped and
    came back: the reconnect (``retry_now``) sends at once, and the row given up during the outage goes too."""
    clock = FakeClock()
    transport = Transport(clock)
    outbox = transport_outbox(tmp_path, clock, transport, RetryPolicy(1, 60.0, 300.0))
    transport.accept = False
    for i in range(3):
        outbox.put(alert(i))
    assert outbox.deliver_due() == 1  # the first publish fails: given up (max_attempts 1), channel down for 60 s
    assert outbox.counts() == {"pending": 2, "delivered": 0, "dead": 1}
    transport.connected = False  # the link drops ...
    clock.now += 5.0
    assert outbox.status().receiver_down_s == 5.0
    transport.connected, transport.accept = True, True  # ... and is back 5 s later, well inside the channel backoff
    outbox.retry_now()
    assert outbox.deliver_due() == 3  # at once: the probe, then the waiting row and the given-up one
    assert outbox.counts() == {"pending": 0, "delivered": 3, "dead": 0}
    assert {t for t, _, ok in transport.sent if ok} == {5.0}
    assert outbox.status().receiver_down_s is None
    outbox.close()


def test_a_transport_not_ready_counts_as_a_receiver_down(tmp_path) -> None:
    clock = FakeClock()
    transport = Transport(clock)
    outbox = transport_outbox(tmp_path, clock, transport, POLICY)
    outbox.put(alert(0))
    assert outbox.status().receiver_down_s is None
    transport.connected = False
    assert outbox.status().receiver_down_s == 0.0
    clock.now += 42.0
    status = outbox.status()
    assert (status.channel, status.pending, status.receiver_down_s) == ("mqtt", 1, 42.0)
    transport.connected = True
    assert outbox.status().receiver_down_s is None
    assert transport.sent == []  # nothing was attempted while it was down
    outbox.close()
