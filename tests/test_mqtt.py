"""The MQTT sink against a real broker (Debian's mosquitto on a free loopback port, stopped by its pid): every topic
and payload, the last will, a broker down at start and restarted mid-run (every event counted), refused credentials
and TLS mistakes (one clear line each, the rest of vigil running), and the camera status the run loop publishes."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.test_alerts import make_alert, make_unknown
from vigil.alerts import AlertDispatcher, JsonlSink, MqttSink, open_database, read_jsonl
from vigil.alerts.mqtt import OUTBOX_TABLE, MqttTopics, event_messages
from vigil.bench.mosquitto import BrokerTls, LocalMosquitto, find_mosquitto, free_port
from vigil.bench.mqtt import TopicRecorder
from vigil.capture import DOWN, UP, CameraStats
from vigil.commands.run import PUBLISH_INTERVAL_S, StatusReporter, log_outbox
from vigil.config import AlertsConfig, MqttSinkConfig
from vigil.errors import VigilError
from vigil.live import CameraStatus
from vigil.types import AlertStage

pytestmark = pytest.mark.skipif(
    find_mosquitto() is None, reason="mosquitto is not installed (apt-get install mosquitto)"
)

WAIT_S = 60.0  # generous: the test machine is shared and loaded
REPO = Path(__file__).resolve().parent.parent


def subscribe(port: int, client_id: str = "test-subscriber", persistent: bool = False) -> TopicRecorder:
    """A subscriber on ``vigil/#`` (QoS 1) at the local broker; ``persistent``: its session outlives a disconnect."""
    return TopicRecorder("127.0.0.1", port, client_id=client_id, persistent=persistent, timeout_s=WAIT_S)


def mqtt_config(port: int, **overrides) -> MqttSinkConfig:
    values = {
        "host": "127.0.0.1",
        "port": port,
        "client_id": "vigil-test",
        "reconnect_initial_backoff_s": 1,
        "reconnect_max_backoff_s": 1,
        "publish_timeout_s": 10.0,
        **overrides,
    }
    return MqttSinkConfig.model_validate(values)


def new_sink(tmp_path: Path, config: MqttSinkConfig) -> MqttSink:
    return MqttSink(tmp_path / "events.sqlite3", config, poll_interval_s=0.05)


def mqtt_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "vigil.alerts" and r.levelno >= logging.WARNING]


def attempts_made(db_path: Path) -> int:
    conn = open_database(db_path)
    try:
        return int(conn.execute(f"SELECT COALESCE(SUM(attempts), 0) FROM {OUTBOX_TABLE}").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def broker(tmp_path):
    with LocalMosquitto(tmp_path / "broker") as running:
        yield running


def test_topic_names_under_a_prefix():
    topics = MqttTopics("site/a")
    assert (topics.events, topics.available) == ("site/a/events", "site/a/available")
    assert (topics.alert("door", "jdoe"), topics.status("door")) == ("site/a/door/alert/jdoe", "site/a/door/status")


@pytest.mark.parametrize(
    "event, topics",
    [
        (make_alert(1), ["vigil/events", "vigil/cam1/alert/jdoe"]),  # confirmed
        (make_alert(2, camera="gate", person_id="ann"), ["vigil/events", "vigil/gate/alert/ann"]),
        (make_unknown(3), ["vigil/events"]),
    ],
)
def test_which_topics_an_event_goes_to(event, topics):
    payload = json.dumps(event.to_json())
    assert [topic for topic, body in event_messages(MqttTopics(), payload) if body == payload] == topics


def test_a_provisional_alert_goes_to_events_only():
    from dataclasses import replace

    payload = json.dumps(replace(make_alert(4), stage=AlertStage.PROVISIONAL).to_json())
    assert [topic for topic, _ in event_messages(MqttTopics(), payload)] == ["vigil/events"]


def test_every_topic_and_payload_through_the_configured_sinks(tmp_path, broker):
    subscriber = subscribe(broker.port)
    alerts = AlertsConfig(console=False, sqlite=True, mqtt=mqtt_config(broker.port))
    dispatcher = AlertDispatcher.from_config(alerts, tmp_path, poll_interval_s=0.05)
    from dataclasses import replace

    provisional = replace(make_alert(1), stage=AlertStage.PROVISIONAL)
    events = [provisional, make_alert(2), make_unknown(3)]
    for event in events:
        dispatcher.emit(event)
    password = "rtsp://admin:hunter2@10.0.0.5/live"
    dispatcher.publish_camera_status(
        [CameraStatus("cam1", True, fps=12.5, frames_read=90), CameraStatus("cam2", False, last_error=password)]
    )
    assert subscriber.wait_for(lambda s: len(s.on("vigil/events")) == 3 and s.on("vigil/cam2/status"))
    assert [json.loads(m.payload) for m in subscriber.on("vigil/events")] == [e.to_json() for e in events]
    assert [json.loads(m.payload)["id"] for m in subscriber.on("vigil/cam1/alert/jdoe")] == [make_alert(2).id]
    statuses = {m.topic: json.loads(m.payload) for m in subscriber.messages if m.topic.endswith("/status")}
    assert statuses["vigil/cam1/status"]["state"] == "up" and statuses["vigil/cam1/status"]["fps"] == 12.5
    assert statuses["vigil/cam2/status"]["state"] == "down"
    assert statuses["vigil/cam2/status"]["last_error"] == "rtsp://admin:***@10.0.0.5/live"
    late = subscribe(broker.port, "late-subscriber")  # joins afterwards: gets the retained topics only
    assert late.wait_for(lambda s: len(s.messages) >= 3)
    assert {m.topic: (m.payload, m.retain) for m in late.messages} == {
        "vigil/available": ("online", True),
        "vigil/cam1/status": (subscriber.on("vigil/cam1/status")[0].payload, True),
        "vigil/cam2/status": (subscriber.on("vigil/cam2/status")[0].payload, True),
    }
    dispatcher.close()
    assert subscriber.wait_for(lambda s: [m.payload for m in s.on("vigil/available")][-1:] == ["offline"])
    late.close()
    subscriber.close()


LAST_WILL_SCRIPT = """
import sys, time
from vigil.alerts import MqttSink
from vigil.config import MqttSinkConfig
sink = MqttSink(sys.argv[1], MqttSinkConfig(host="127.0.0.1", port=int(sys.argv[2]), client_id="vigil-doomed"))
assert sink.connection.wait_connected(60)
print("connected", flush=True)
time.sleep(120)
"""


def test_the_broker_publishes_offline_when_vigil_dies(tmp_path, broker):
    subscriber = subscribe(broker.port)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", LAST_WILL_SCRIPT, str(tmp_path / "events.sqlite3"), str(broker.port)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "connected"
        assert subscriber.wait_for(lambda s: [m.payload for m in s.on("vigil/available")] == ["online"])
        os.kill(process.pid, signal.SIGKILL)  # no clean disconnect: the broker sends the last will
        assert subscriber.wait_for(lambda s: [m.payload for m in s.on("vigil/available")] == ["online", "offline"])
    finally:
        process.kill()
        process.wait(timeout=30)
    subscriber.close()


def test_broker_down_at_start_then_up_delivers_every_alert(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="vigil.alerts")
    broker = LocalMosquitto(tmp_path / "broker", persistent=True).start()
    subscriber = subscribe(broker.port, persistent=True)  # its session outlives the broker's restart
    broker.stop()
    sink = new_sink(tmp_path, mqtt_config(broker.port))
    alerts = [make_alert(i) for i in range(50)]
    for alert in alerts:
        sink.emit(alert)
    time.sleep(2.0)  # a few connection attempts fail meanwhile
    attempts = attempts_made(tmp_path / "events.sqlite3")
    assert sink.outbox.counts() == {"pending": 50, "delivered": 0, "dead": 0} and attempts == 0  # no attempt burnt
    broker.start()
    try:
        assert sink.outbox.wait_until_delivered(WAIT_S), sink.outbox.counts()
        assert subscriber.wait_for(lambda s: set(s.event_ids()) >= {a.id for a in alerts})
        assert sink.outbox.counts() == {"pending": 0, "delivered": 50, "dead": 0}
        assert sorted(set(subscriber.event_ids())) == sorted(a.id for a in alerts)  # every one, none lost
        refused = [line for line in mqtt_warnings(caplog) if "connection refused" in line]
        assert len(refused) == 1  # one line for the outage, not one per attempt
    finally:
        sink.close()
        subscriber.close()
        broker.stop()


def test_broker_restarted_mid_run_loses_nothing(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="vigil.alerts")
    broker = LocalMosquitto(tmp_path / "broker", persistent=True).start()
    subscriber = subscribe(broker.port, persistent=True)
    sink = new_sink(tmp_path, mqtt_config(broker.port))
    try:
        assert sink.connection.wait_connected(WAIT_S)
        sent = [make_alert(i) for i in range(60)]
        for alert in sent[:20]:
            sink.emit(alert)
        assert sink.outbox.wait_until_delivered(WAIT_S)
        broker.stop()
        for alert in sent[20:40]:  # while the broker is down
            sink.emit(alert)
        time.sleep(1.0)
        broker.start()
        for alert in sent[40:]:  # while it comes back
            sink.emit(alert)
        assert sink.outbox.wait_until_delivered(WAIT_S), sink.outbox.counts()
        assert subscriber.wait_for(lambda s: set(s.event_ids()) >= {a.id for a in sent})
        assert sink.outbox.counts() == {"pending": 0, "delivered": 60, "dead": 0}
        duplicates = len(subscriber.event_ids()) - len(set(subscriber.event_ids()))
        assert duplicates <= 1  # at least once: at most the one in flight when the broker went away
        assert any("reconnected to" in r.getMessage() for r in caplog.records)
    finally:
        sink.close()
        subscriber.close()
        broker.stop()


@pytest.mark.parametrize(
    "credentials, delivered",
    [
        ({"username": "vigil", "password": "right-one"}, True),
        ({"username": "vigil", "password_env": "VIGIL_TEST_MQTT_PASSWORD"}, True),
        ({"username": "vigil", "password": "wrong-one"}, False),
        ({}, False),  # anonymous, where the broker wants a user
    ],
)
def test_credentials_refused_give_one_clear_line_and_the_rest_keeps_running(
    tmp_path, caplog, monkeypatch, credentials, delivered
):
    caplog.set_level(logging.DEBUG, logger="vigil.alerts")
    monkeypatch.setenv("VIGIL_TEST_MQTT_PASSWORD", "right-one")
    with LocalMosquitto(tmp_path / "broker", users={"vigil": "right-one"}) as broker:
        sink = new_sink(tmp_path, mqtt_config(broker.port, **credentials))
        dispatcher = AlertDispatcher([sink, JsonlSink(tmp_path / "events.jsonl")])
        try:
            assert sink.connection.wait_connected(3.0 if not delivered else WAIT_S) is delivered
            time.sleep(2.5)  # more connection attempts
            dispatcher.emit(make_alert(1))
            assert [e["id"] for e in read_jsonl(tmp_path / "events.jsonl")] == [make_alert(1).id]  # the rest runs
            assert sink.outbox.wait_until_delivered(WAIT_S if delivered else 1.0) is delivered
        finally:
            dispatcher.close()
    warnings = mqtt_warnings(caplog)
    refusals = [line for line in warnings if "refused the credentials" in line]
    assert len(refusals) == (0 if delivered else 1), warnings
    if refusals:
        assert "check alerts.mqtt.username and password" in refusals[0]
    assert not any("right-one" in r.getMessage() or "wrong-one" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------------------------------
# TLS


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key), cwd=folder)
    openssl(
        "req", "-x509", "-new", "-key", str(key), "-subj", f"/CN={name}", "-days", "2", "-out", str(cert), cwd=folder
    )
    return cert, key


def make_server_cert(folder: Path, ca: tuple[Path, Path], name: str, san: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (folder / f"{name}{suffix}" for suffix in (".key", ".csr", ".pem", ".ext"))
    ext.write_text(f"subjectAltName={san}\n", encoding="utf-8")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key), cwd=folder)
    openssl("req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr), cwd=folder)
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(cert), cwd=folder,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    folder = tmp_path_factory.mktemp("certs")
    ca = make_ca(folder, "test-ca")
    other_ca = make_ca(folder, "other-ca")
    good = make_server_cert(folder, ca, "broker", "IP:127.0.0.1,DNS:localhost")
    misnamed = make_server_cert(folder, ca, "elsewhere", "DNS:broker.invalid")
    garbage = folder / "garbage.pem"
    garbage.write_text("not a certificate\n", encoding="utf-8")
    return {"ca": ca[0], "other_ca": other_ca[0], "good": good, "misnamed": misnamed, "garbage": garbage}


TLS_CASES = [
    # (case, broker's certificate or None for a plain listener, the sink's tls section, the one line expected)
    ("the right CA", "good", {"ca_file": "ca"}, None),
    ("a CA that did not sign the broker", "good", {"ca_file": "other_ca"}, "certificate is not trusted"),
    ("a certificate for another name", "misnamed", {"ca_file": "ca"}, "check_hostname"),
    ("TLS to a plain port", None, {"ca_file": "ca"}, "is port"),
    (
        "plain text to a TLS port",
        "good",
        None,
        "closed the connection before answering (a TLS port? set alerts.mqtt.tls",
    ),
]


@pytest.mark.parametrize("case, server, tls, expected", TLS_CASES, ids=[c[0] for c in TLS_CASES])
def test_tls_works_or_gives_one_clear_line(tmp_path, caplog, certificates, case, server, tls, expected):
    caplog.set_level(logging.DEBUG, logger="vigil.alerts")
    broker_tls = None
    if server is not None:
        cert, key = certificates[server]
        broker_tls = BrokerTls(certificates["ca"], cert, key)
    sink_tls = None if tls is None else {key: str(certificates[value]) for key, value in tls.items()}
    with LocalMosquitto(tmp_path / "broker", tls=broker_tls) as broker:
        sink = new_sink(tmp_path, mqtt_config(broker.port, tls=sink_tls))
        try:
            connected = sink.connection.wait_connected(WAIT_S if expected is None else 4.0)
            sink.emit(make_alert(1))
            assert sink.outbox.wait_until_delivered(WAIT_S if expected is None else 0.5) is (expected is None)
        finally:
            sink.close()
    assert connected is (expected is None)
    warnings = mqtt_warnings(caplog)
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and expected in warnings[0], warnings


@pytest.mark.parametrize(
    "tls, message",
    [
        ({"ca_file": "missing.pem"}, "alerts.mqtt.tls.ca_file: {dir}/missing.pem: file not found"),
        ({"ca_file": "garbage"}, "alerts.mqtt.tls.ca_file: {garbage}: not a usable PEM CA file"),
        (
            {"client_cert": {"cert_file": "good-cert", "key_file": "missing.key"}},
            "alerts.mqtt.tls.client_cert.key_file: {dir}/missing.key: file not found",
        ),
        (
            {"client_cert": {"cert_file": "garbage", "key_file": "good-key"}},
            "alerts.mqtt.tls.client_cert: {garbage} with {key}: not a usable PEM certificate and key",
        ),
    ],
)
def test_a_tls_setting_that_cannot_work_stops_the_start_with_one_line(tmp_path, certificates, tls, message):
    names = {
        "garbage": str(certificates["garbage"]),
        "good-cert": str(certificates["good"][0]),
        "good-key": str(certificates["good"][1]),
    }

    def resolve(value):
        if isinstance(value, dict):
            return {key: resolve(item) for key, item in value.items()}
        return names.get(value, str(tmp_path / value))

    alerts = AlertsConfig(console=False, sqlite=True, mqtt=mqtt_config(free_port(), tls=resolve(tls)))
    with pytest.raises(VigilError) as info:
        AlertDispatcher.from_config(alerts, tmp_path / "data")
    text = str(info.value)
    assert "\n" not in text
    assert message.format(dir=tmp_path, garbage=certificates["garbage"], key=certificates["good"][1]) in text


# ---------------------------------------------------------------------------------------------------------------------
# Camera status from the run loop (fake clock, fake sources)


class FakeCamera:
    def __init__(self, name: str, up: bool = True) -> None:
        self.name, self.up = name, up

    def stats(self) -> CameraStats:
        return CameraStats(self.name, connected=self.up, state=UP if self.up else DOWN, fps=10.0)


class RecordingStatusSink:
    name = "recording"

    def __init__(self) -> None:
        self.published: list[tuple[float, dict[str, bool]]] = []
        self.now = 0.0

    def publish_camera_status(self, statuses) -> None:
        self.published.append((self.now, {s.name: s.up for s in statuses}))


def test_status_is_published_at_start_on_change_and_every_interval():
    door, gate = FakeCamera("door"), FakeCamera("gate", up=False)
    sink = RecordingStatusSink()
    reporter = StatusReporter([door, gate], sink, None, interval_s=10.0, now_s=0.0)
    for step in range(0, 251):  # 25 s in steps of 0.1 s
        sink.now = step / 10
        if step == 32:
            gate.up = True  # the gate camera comes up at 3.2 s
        if step == 151:
            door.up = False  # the door camera goes down at 15.1 s
        reporter.step(sink.now)
    moments = [(round(t, 1), states) for t, states in sink.published]
    assert moments == [
        (0.0, {"door": True, "gate": False}),  # at start
        (4.0, {"door": True, "gate": True}),  # within PUBLISH_INTERVAL_S of the change
        (10.0, {"door": True, "gate": True}),  # every status interval
        (16.0, {"door": False, "gate": True}),
        (20.0, {"door": False, "gate": True}),
    ]
    assert PUBLISH_INTERVAL_S == 1.0


def test_with_the_api_hub_the_sink_gets_the_statuses_as_the_hub_keeps_them():
    from tests.test_live import FakePipeline
    from vigil.live import LiveHub
    from vigil.live_publish import LivePublisher

    hub, sink, gate = LiveHub(), RecordingStatusSink(), FakeCamera("gate", up=False)
    received = []
    sink.publish_camera_status = received.append
    reporter = StatusReporter([gate], sink, LivePublisher(hub, FakePipeline()), interval_s=10.0, now_s=0.0)
    reporter.step(0.0)
    gate.up = True
    reporter.step(1.0)
    assert [[(s.name, s.up) for s in statuses] for statuses in received] == [[("gate", False)], [("gate", True)]]
    assert all(statuses[0].since for statuses in received)  # the hub's "since" reaches the sink
    assert [(s.name, s.up) for s in hub.statuses()] == [("gate", True)]


def test_a_sink_without_camera_status_gets_none_and_the_reporter_does_not_poll():
    class Counting(FakeCamera):
        calls = 0

        def stats(self) -> CameraStats:
            Counting.calls += 1
            return super().stats()

    reporter = StatusReporter([Counting("door")], JsonlSink.__new__(JsonlSink), None, interval_s=10.0, now_s=0.0)
    for step in range(0, 101):
        reporter.step(step / 10)
    assert reporter.sink is None and Counting.calls == 1  # only the status line at 10 s


def test_the_dispatcher_gives_status_to_the_sinks_that_take_it_and_survives_a_failing_one(caplog):
    from vigil.alerts import ConsoleSink

    class Broken(RecordingStatusSink):
        name = "broken"

        def publish_camera_status(self, statuses) -> None:
            raise RuntimeError("boom")

    working = RecordingStatusSink()
    AlertDispatcher([Broken(), ConsoleSink(), working]).publish_camera_status([CameraStatus("door", True)])
    assert [states for _, states in working.published] == [{"door": True}]
    assert any("broken failed to publish camera status: boom" in r.getMessage() for r in caplog.records)


def test_bench_mqtt_counts_every_event_and_reports_latency(tmp_path, capsys):
    from vigil.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "mqtt", "--json", str(out), "--events", "200", "--rate", "0", "--rounds", "0"]) == 0
    delivery = json.loads(out.read_text())["delivery"]
    assert (delivery["events"], delivery["received"], delivery["lost"]) == (200, 200, 0)
    assert delivery["outbox"] == {"pending": 0, "delivered": 200, "dead": 0}
    assert delivery["emit_to_receive_ms"]["n"] == 200 and delivery["emit_to_receive_ms"]["p95"] > 0


def test_the_run_loop_publishes_each_cameras_status_to_the_broker(tmp_path, broker, shared_data):
    """`vigil run`'s loop with real capture sources (a file played as a camera, and an RTSP camera nobody serves):
    their state reaches the retained status topics."""
    from vigil.capture import CameraSource
    from vigil.commands.run import serve
    from vigil.config import CameraConfig, VigilConfig

    class NoFacesPipeline:
        def __init__(self, sink) -> None:
            self.sink = sink

        def process(self, frames) -> list:
            return []

    clip = shared_data("video", "short_hamilton_clip.mp4")
    dead = f"rtsp://127.0.0.1:{free_port()}/live"
    sources = [
        CameraSource(CameraConfig(name="door", source=str(clip)), seed=0),
        CameraSource(CameraConfig(name="gate", source=dead, open_timeout_s=1, read_timeout_s=1), seed=0),
    ]
    subscriber = subscribe(broker.port)
    sink = new_sink(tmp_path, mqtt_config(broker.port))
    stop = threading.Event()
    config = VigilConfig(status_interval_s=0.5)  # statuses re-sent every 0.5 s, not only when a camera goes up/down
    loop = threading.Thread(target=serve, args=(NoFacesPipeline(AlertDispatcher([sink])), sources, config, stop))
    for source in sources:
        source.start()
    loop.start()
    try:

        def latest(s, camera: str) -> dict:
            messages = s.on(f"vigil/{camera}/status")
            return json.loads(messages[-1].payload) if messages else {}

        assert subscriber.wait_for(lambda s: latest(s, "door").get("state") == "up")
        assert subscriber.wait_for(lambda s: latest(s, "gate").get("state") == "down")
        # "up" is published as the file opens, maybe before its first frame: the count comes with a later status
        assert subscriber.wait_for(lambda s: latest(s, "door").get("frames_read", 0) > 0)
    finally:
        stop.set()
        loop.join(timeout=10)
        for source in sources:
            source.stop(timeout_s=2.0)
        sink.close()
        subscriber.close()


def test_the_service_counts_the_mqtt_outbox_apart_from_the_webhooks(tmp_path):
    from vigil.store.db import Database
    from vigil.store.events import EventStore

    sink = MqttSink(tmp_path / "events.sqlite3", mqtt_config(free_port()), start=False)  # never connects
    for index in range(3):
        sink.emit(make_alert(index))
    sink.close()
    db = Database.in_data_dir(tmp_path)
    try:
        events = EventStore(db)
        assert events.outbox_counts("mqtt_outbox") == {"pending": 3, "delivered": 0, "dead": 0}
        assert events.outbox_counts() == {"pending": 0, "delivered": 0, "dead": 0}  # no webhook configured
        assert events.outbox_counts_by_table() == {"mqtt_outbox": {"pending": 3, "delivered": 0, "dead": 0}}
        with pytest.raises(ValueError, match="unknown outbox table"):
            events.outbox_counts("alerts; DROP TABLE alerts")
    finally:
        db.close()


def test_mqtt_events_given_up_in_an_earlier_run_are_published_at_the_next_start(tmp_path, broker, caplog):
    """Issue 26, defect 2 for the MQTT outbox: rows given up (max_attempts publishes failed while connected) were
    never published again; now every start queues them again. While the broker cannot be reached, the run's status
    line says so."""
    caplog.set_level(logging.INFO, logger="vigil.run")
    db_path = tmp_path / "events.sqlite3"
    first = MqttSink(db_path, mqtt_config(free_port()), poll_interval_s=0.05)  # a port no broker listens on
    alerts = [make_alert(index) for index in range(3)]
    for alert in alerts:
        first.emit(alert)
    time.sleep(0.3)
    (status,) = AlertDispatcher([first]).outbox_statuses()
    assert (status.channel, status.pending, status.dead) == ("mqtt", 3, 0) and status.receiver_down_s is not None
    log_outbox(status)
    assert "alerts mqtt: receiver DOWN for" in caplog.text
    first.close()
    conn = open_database(db_path)
    with conn:  # as max_attempts failed publishes would leave them
        conn.execute(f"UPDATE {OUTBOX_TABLE} SET attempts = 20, dead_at = created_at + 60")
    conn.close()
    subscriber = subscribe(broker.port)
    second = new_sink(tmp_path, mqtt_config(broker.port))
    try:
        assert subscriber.wait_for(lambda s: set(s.event_ids()) >= {a.id for a in alerts}), subscriber.event_ids()
        assert second.outbox.wait_until_delivered(WAIT_S)
        assert second.outbox.counts() == {"pending": 0, "delivered": 3, "dead": 0}
    finally:
        second.close()
        subscriber.close()


def test_health_names_given_up_mqtt_rows_and_a_stalled_camera(tmp_path):
    from types import SimpleNamespace

    from vigil.alerts import utc_timestamp
    from vigil.live import LiveHub
    from vigil.server.context import ServiceInfo
    from vigil.server.routes.health import health_json
    from vigil.store.db import Database
    from vigil.store.events import EventStore

    sink = MqttSink(tmp_path / "events.sqlite3", mqtt_config(free_port()), start=False)  # never connects
    alerts = [make_alert(index) for index in range(2)]
    for alert in alerts:
        sink.emit(alert)
    sink.close()
    conn = open_database(tmp_path / "events.sqlite3")
    with conn:
        conn.execute(f"UPDATE {OUTBOX_TABLE} SET dead_at = created_at WHERE id = ?", (alerts[0].id,))
    conn.close()
    hub = LiveHub()
    hub.publish_statuses([CameraStatus("door", False, state="STALLED")], utc_timestamp())
    db = Database.in_data_dir(tmp_path)
    try:
        health = health_json(SimpleNamespace(hub=hub, events=EventStore(db), info=ServiceInfo(sinks=("mqtt",))))
    finally:
        db.close()
    assert health["status"] == "degraded"
    assert health["problems"] == ["camera door STALLED", "1 mqtt_outbox deliveries given up (vigil outbox retry)"]
    assert health["outboxes"] == {"mqtt_outbox": {"pending": 1, "delivered": 0, "dead": 1}}
    assert health["mqtt_outbox"] == health["outboxes"]["mqtt_outbox"]
