"""The fault matrix (issue 26): the real `vigil run` against GStreamer's RTSP server, the project's own relay and a
webhook receiver, each fault played on it, each asserting recovery within a bound and the exact alerts delivered.

Two runs of the matrix, each with the real process (models, detection, rules, sinks):

* cameras (one `vigil run`, six cameras, default timeouts): a camera down at start (closed port; and a port that
  accepts and never answers, later served by the project's relay), GStreamer killed and back after 5 s and after
  60 s, GStreamer frozen (SIGSTOP) 15 s, past the default 10 s stall timeout, and a wrong password.
* alerts (three `vigil run`s over one events database): the webhook receiver down far past max_attempts, answering
  500, hanging; SIGTERM while the receiver hangs; restart; `kill -9` right after an alert; restart.

"Exactly delivered": the set of event ids the receiver got equals the set in the events database (none lost, none
invented; duplicates are allowed by at-least-once and counted). Bounds are the issue's targets: stall detected within
stall timeout + 1 s; frames flowing 5 s after the source returns; a killed server's camera back 5 s after it is.
The figures are printed and, with ``VIGIL_FAULT_MATRIX_JSON=path``, saved (docs/reliability.md).
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tests.fault_harness import (
    Measurements,
    SilentPort,
    VigilRun,
    integrity,
    stored_ids,
    wait_until,
    write_config,
    write_watchlist,
)
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.slow

BACK_WITHIN_S = 5.0  # the target for frames flowing after the source returns
STALL_TIMEOUT_S = 10.0  # the default
STARTUP_S = 180.0  # models, enrolment and the first frames on a loaded two-core machine


@pytest.fixture(scope="module")
def measurements():
    collected = Measurements()
    yield collected
    collected.save()


@pytest.fixture
def watchlist(tmp_path: Path, shared_data) -> Path:
    return write_watchlist(tmp_path, shared_data("video", "lin-manuel-miranda.png"))


def _delivered_exactly(receiver: Receiver, db: Path, timeout_s: float) -> bool:
    return wait_until(lambda: bool(stored_ids(db)) and receiver.keys == stored_ids(db), timeout_s, poll_s=0.2)


def _back(run: VigilRun, camera: str, since: float) -> float:
    """Seconds from ``since`` to the camera's 'frames flowing' line."""
    return run.wait_for(rf"camera {camera}: reconnected after .* frames flowing", 60.0, after=since) - since


# ---- cameras ------------------------------------------------------------------------------------------------------
def test_camera_faults(tmp_path, gst_servers, watchlist, clip_relay, measurements) -> None:
    from rtsp_server import free_tcp_port

    killed5, killed60, frozen = gst_servers(), gst_servers(), gst_servers()
    locked = gst_servers(user="admin", password="right-one")
    late = gst_servers(start=False)
    silent = SilentPort(free_tcp_port())
    silent_port = silent.listener.getsockname()[1]
    receiver = Receiver()
    cameras = [
        {"name": "killed5", "source": killed5.url},
        {"name": "killed60", "source": killed60.url},
        {"name": "frozen", "source": frozen.url},
        {"name": "locked", "source": locked.url_with("admin", "wrong")},
        {"name": "late", "source": late.url},
        {"name": "silent", "source": f"rtsp://127.0.0.1:{silent_port}/cam"},
    ]
    webhook = {"url": receiver.url, "timeout_s": 2.0, "initial_backoff_s": 0.5, "max_backoff_s": 2.0}
    run = VigilRun(write_config(tmp_path, watchlist, cameras, webhook), tmp_path / "camera-faults.log")
    try:
        for name in ("killed5", "killed60", "frozen"):
            run.wait_for(f"camera {name}: connected to", STARTUP_S)
        _play_camera_faults(run, killed5, killed60, frozen, late, silent, silent_port, clip_relay, measurements)
        _check_password(run, locked, measurements)
        db = tmp_path / "data" / "events.sqlite3"
        assert _delivered_exactly(receiver, db, 30.0), (receiver.keys, stored_ids(db))
        code, took = run.stop()
        assert code == 0, run.tail()
        measurements.add(
            "cameras: alerts", delivered=len(receiver.keys), stored=len(stored_ids(db)), exit_s=round(took, 1)
        )
    finally:
        if run.process.poll() is None:
            run.stop(signal.SIGKILL)
        receiver.stop()
        silent.close()


def _play_camera_faults(run, killed5, killed60, frozen, late, silent, silent_port, clip_relay, measurements) -> None:
    t0 = run.mark("SIGKILL killed5 and killed60, SIGSTOP frozen")
    killed5.kill()
    killed60.kill()
    frozen.freeze()
    late.start()
    back_late = _back(run, "late", run.mark("late's server started"))
    measurements.add("down at start (closed port)", back_s=round(back_late, 2))
    time.sleep(max(0.0, t0 + 5.0 - time.monotonic()))
    killed5.start()
    back5 = _back(run, "killed5", run.mark("killed5's server restarted"))
    measurements.add("server killed, back after 5 s", back_s=round(back5, 2))
    stalled = run.wait_for(r"camera frozen: stalled: no good frame for 10\.0 s", 20.0, after=t0) - t0
    status = run.wait_for(r"vigil\.camera\.frozen: STALLED ", 5.0, after=t0) - t0
    assert stalled <= STALL_TIMEOUT_S + 1.0, stalled
    assert wait_until(lambda: "camera frozen STALLED" in run.health()["problems"], 4.0), run.health()
    time.sleep(max(0.0, t0 + 15.0 - time.monotonic()))
    frozen.thaw()
    thawed_back = _back(run, "frozen", run.mark("SIGCONT frozen"))
    measurements.add("server frozen 15 s (SIGSTOP), default timeouts", stall_detected_s=round(stalled, 2),
                     status_stalled_s=round(status, 2), back_after_thaw_s=round(thawed_back, 2))  # fmt: skip
    silent.close()
    relay = clip_relay(silent_port)
    back_silent = _back(run, "silent", run.mark("the project's relay serves the silent port"))
    measurements.add("down at start (port accepts, never answers), then the project's relay",
                     back_s=round(back_silent, 2))  # fmt: skip
    time.sleep(max(0.0, t0 + 60.0 - time.monotonic()))
    killed60.start()
    back60 = _back(run, "killed60", run.mark("killed60's server restarted"))
    measurements.add("server killed, back after 60 s", back_s=round(back60, 2))
    relay.stop()
    for name, back in (("late", back_late), ("killed5", back5), ("frozen", thawed_back), ("silent", back_silent),
                       ("killed60", back60)):  # fmt: skip
        assert back <= BACK_WITHIN_S, (name, back)


def _check_password(run: VigilRun, locked, measurements) -> None:
    run.wait_for(r"vigil\.camera\.locked: AUTH-FAILED .*authentication failed \(RTSP 401 Unauthorized\)", 10.0)
    failed_logins = locked.count(401)
    measurements.add("wrong password", answers_401=failed_logins, run_s=round(time.monotonic() - run.started, 1))
    assert failed_logins <= 4  # one attempt (check + FFmpeg): the next is 300 s away


@pytest.fixture
def clip_relay(shared_data):
    """Factory: the project's own relay (tests/rtsp_server.py) on a given port; stopped at teardown."""
    from rtsp_server import RtspTestServer

    started: list[RtspTestServer] = []

    def make(port: int) -> RtspTestServer:
        relay = RtspTestServer(shared_data("video", "short_hamilton_clip.mp4"), port=port)
        relay.start()
        started.append(relay)
        return relay

    yield make
    for relay in started:
        relay.stop()


# ---- alerts: the receiver, SIGTERM, kill -9 -----------------------------------------------------------------------
WEBHOOK = {"timeout_s": 2.0, "max_attempts": 3, "initial_backoff_s": 0.5, "max_backoff_s": 2.0}
MAX_ATTEMPTS_WINDOW_S = 0.5 + 1.0 + 2.0  # what 3 attempts took before a row was given up for good


def test_alert_faults(tmp_path, gst_servers, watchlist, measurements) -> None:
    camera = gst_servers()
    receiver = Receiver()
    webhook = {"url": receiver.url, **WEBHOOK}
    config = write_config(tmp_path, watchlist, [{"name": "door", "source": camera.url}], webhook, {"cooldown_s": 4.0})
    db = tmp_path / "data" / "events.sqlite3"
    runs: list[VigilRun] = []
    try:
        runs.append(VigilRun(config, tmp_path / "alerts-1.log"))
        assert wait_until(lambda: len(receiver.keys) >= 1, STARTUP_S), runs[0].tail()
        _receiver_faults(runs[0], receiver, db, measurements)
        _sigterm_while_hung(runs[0], receiver, db, measurements)
        runs.append(VigilRun(config, tmp_path / "alerts-2.log"))
        assert _delivered_exactly(receiver, db, STARTUP_S), runs[1].tail()
        measurements.add("restart after SIGTERM", delivered=len(receiver.keys), stored=len(stored_ids(db)))
        _kill_after_an_alert(runs[1], receiver, db, measurements)
        runs.append(VigilRun(config, tmp_path / "alerts-3.log"))
        runs[2].wait_for("camera door: connected to", STARTUP_S)
        assert _delivered_exactly(receiver, db, 30.0), runs[2].tail()
        code, _ = runs[2].stop()
        assert code == 0
        duplicates = sum(receiver.by_key.values()) - len(receiver.keys)
        measurements.add("alerts: whole run", delivered=len(receiver.keys), stored=len(stored_ids(db)),
                         outbox=len(stored_ids(db, "outbox")), duplicates=duplicates)  # fmt: skip
        assert receiver.keys == stored_ids(db) == stored_ids(db, "outbox")
    finally:
        for run in runs:
            if run.process.poll() is None:
                run.stop(signal.SIGKILL)
        receiver.stop()


def _new_alerts(db: Path, count: int, timeout_s: float) -> bool:
    before = len(stored_ids(db))
    return wait_until(lambda: len(stored_ids(db)) >= before + count, timeout_s, poll_s=0.2)


def _receiver_faults(run: VigilRun, receiver: Receiver, db: Path, measurements: Measurements) -> None:
    """Down (port closed) for 20 s: over 5 times what max_attempts allowed; then 500s; then hanging requests."""
    for fault, outage_s in (("down", 6 * MAX_ATTEMPTS_WINDOW_S), ("fail", 15.0), ("hang", 15.0)):
        began = time.monotonic()
        receiver.stop() if fault == "down" else receiver.set_mode(fault)
        assert _new_alerts(db, 2, 60.0), f"no alert during the {fault} outage: {run.tail()}"
        time.sleep(max(0.0, began + outage_s - time.monotonic()))
        health_during_outage = run.health()
        waiting = len(stored_ids(db) - receiver.keys)
        receiver.start() if fault == "down" else receiver.set_mode("ok")
        back = time.monotonic()
        assert _delivered_exactly(receiver, db, 30.0), (fault, receiver.keys, stored_ids(db))
        caught_up = time.monotonic() - back
        dead_seen = run.first(r"alerts webhook: receiver DOWN .* dead=[1-9]", after=began) is not None
        if dead_seen and fault == "down":  # given-up rows are in the API's health answer too, until re-sent
            health = health_during_outage
            assert health["outboxes"]["outbox"]["dead"] >= 1, health
            assert any("outbox deliveries given up" in problem for problem in health["problems"]), health
        measurements.add(f"receiver {fault} {time.monotonic() - began - caught_up:.0f} s", waiting=waiting,
                         caught_up_s=round(caught_up, 2), given_up_rows_shown=dead_seen,
                         delivered=len(receiver.keys), stored=len(stored_ids(db)))  # fmt: skip
        assert caught_up <= BACK_WITHIN_S, (fault, caught_up)
    assert run.first(r"alerts webhook: receiver DOWN") is not None  # the status line said so


def _sigterm_while_hung(run: VigilRun, receiver: Receiver, db: Path, measurements: Measurements) -> None:
    receiver.set_mode("hang")
    assert _new_alerts(db, 1, 60.0), run.tail()
    time.sleep(0.5)  # the worker is now in a POST that will not be answered
    code, took = run.stop(signal.SIGTERM, timeout_s=60.0)
    pending = len(stored_ids(db) - receiver.keys)
    receiver.set_mode("ok")
    measurements.add("SIGTERM with a hung webhook", exit_code=code, exit_s=round(took, 2), left_pending=pending)
    assert code == 0 and took <= WEBHOOK["timeout_s"] + 2.0 + 2.0 + 5.0, (code, took)
    assert integrity(db) == "ok"


def _kill_after_an_alert(run: VigilRun, receiver: Receiver, db: Path, measurements: Measurements) -> None:
    """The receiver holds its requests, so the alert is still in the outbox when the process dies."""
    receiver.set_mode("hang")
    alerted = run.wait_for(r"vigil\.alerts: ALERT ", 120.0, after=time.monotonic())
    code, _ = run.stop(signal.SIGKILL)
    killed_s = time.monotonic() - alerted
    alert_ids = set(re.findall(r"id=([0-9a-f]{32})", "\n".join(line for t, line in run.lines if t >= alerted)))
    pending = stored_ids(db) - receiver.keys
    receiver.set_mode("ok")
    measurements.add("kill -9 right after an alert", killed_s_after_alert=round(killed_s, 2),
                     undelivered_at_kill=len(pending), integrity=integrity(db))  # fmt: skip
    assert code == -signal.SIGKILL and integrity(db) == "ok"
    assert alert_ids and alert_ids <= stored_ids(db), "an alert logged before the kill is not in the database"
    assert alert_ids <= pending, "the alert was delivered before the kill: the restart has nothing to prove"
