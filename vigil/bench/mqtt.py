"""`vigil bench mqtt --json OUT [--events 10000] [--rate 100] [--broker HOST:PORT] [--rounds 2]`: the MQTT sink.

Part 1, delivery: ``--events`` events (alerts, half of them confirmed, as the rules make them) go through the real
:class:`~vigil.alerts.MqttSink` (its durable outbox in a temporary events database) to the broker at ``--qos``, at
``--rate`` events per second (0: all at once). A subscriber in the same process (same monotonic clock) records every
message on ``<prefix>/events``: the report counts the ids received, lost and duplicated, the latency from ``emit``
to the subscriber's receipt (p50, p95, p99, max), which is the sink's share of frame-to-MQTT latency, and how long
``emit`` itself takes: the only work the sink adds to the pipeline's thread (one SQLite transaction, fsync'ed).

Part 2, pipeline: the real pipeline (`vigil bench pipeline`'s ``measure``) runs ``--video`` with a null sink and
with the MQTT sink, alternately, ``--rounds`` times each, so both see the same machine load, in batches of
``--batch`` frames (default 1: `vigil run` takes one frame per camera per round, so with one camera a frame is
processed as soon as it is read; larger batches make frames wait for their batch); it reports frames/s
(wall clock, decoding included: the sink's work happens outside the stage timers) and the load average around each
run. Every event the pipeline raises in the MQTT runs is timed from its frame's read time to the subscriber's
receipt: the whole frame-to-MQTT latency, batching included, split into frame to decision (the pipeline: the frame
waits for its batch, then the batch is processed; taken when ``process`` returns) and decision to receipt (the sink).

Without ``--broker`` a local mosquitto is started on a free loopback port and stopped at the end
(:mod:`vigil.bench.mosquitto`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vigil.alerts import MqttSink, new_event_id, utc_timestamp
from vigil.bench.mosquitto import LocalMosquitto
from vigil.bench.pipeline import NullSink, bench_config, measure
from vigil.bench.report import save_report
from vigil.config import MqttSinkConfig, VigilConfig
from vigil.errors import VigilError
from vigil.paths import data_path, repo_root
from vigil.pipeline import FrameResult
from vigil.runtime import build_pipeline, build_rules, load_config_or_default, new_watch_pipeline
from vigil.types import Alert, AlertStage, ListKind

RECEIVE_WAIT_S = 120.0  # how long the report waits for the last messages to arrive


# ---- the subscriber ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Received:
    topic: str
    payload: str
    retain: bool
    mono_s: float  # time.monotonic() at receipt


class TopicRecorder:
    """A paho subscriber that records every message under ``topic`` with its receipt time (QoS 1).

    ``persistent``: a session the broker keeps while the subscriber is away (and, with a persistent broker, across
    its restarts), so nothing published meanwhile is missed. The tests use it too."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str = "vigil/#",
        client_id: str = "vigil-bench-subscriber",
        persistent: bool = False,
        timeout_s: float = 30.0,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[Received] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent, protocol=mqtt.MQTTv311
        )
        client.reconnect_delay_set(1, 1)
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.connect(host, port, keepalive=30)
        client.loop_start()
        self.client = client
        if not self._subscribed.wait(timeout_s):
            self.close()
            raise VigilError(f"mqtt: the subscriber could not subscribe at {host}:{port} within {timeout_s:g} s")

    def _on_message(self, client: object, userdata: object, message: Any) -> None:
        received = Received(message.topic, message.payload.decode(), bool(message.retain), time.monotonic())
        with self._changed:
            self.messages.append(received)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[TopicRecorder], bool], timeout_s: float = 60.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout=timeout_s)

    def on(self, topic: str) -> list[Received]:
        with self._changed:
            return [m for m in self.messages if m.topic == topic]

    def event_ids(self, topic: str = "vigil/events") -> list[str]:
        return [json.loads(m.payload)["id"] for m in self.on(topic)]

    def first_receipts(self, topic: str = "vigil/events") -> dict[str, float]:
        """Event id -> when it first arrived."""
        first: dict[str, float] = {}
        for message in self.on(topic):
            first.setdefault(json.loads(message.payload)["id"], message.mono_s)
        return first

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---- part 1: delivery ----------------------------------------------------------------------------------------------
def synthetic_alert(index: int) -> Alert:
    """An alert shaped like the rules' (every other one confirmed), with a fresh id."""
    stage = AlertStage.CONFIRMED if index % 2 else AlertStage.PROVISIONAL
    return Alert(
        id=new_event_id(),
        stage=stage,
        person_id=f"person-{index % 20}",
        person_name=f"Person {index % 20}",
        list=ListKind.DENY,
        camera="bench",
        track_id=index,
        score=0.8,
        margin=0.2,
        ts=utc_timestamp(),
        video_ts_s=index / 30.0,
        frame_index=index,
        bbox=(100.0, 50.0, 160.0, 122.0),
        snapshot=None,
        label="watchlist",
    )


def percentiles_ms(seconds: list[float]) -> dict[str, float | int | None]:
    if not seconds:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    values = np.asarray(seconds) * 1000.0
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "n": len(seconds),
        "p50": round(p50, 2),
        "p95": round(p95, 2),
        "p99": round(p99, 2),
        "max": round(values.max(), 2),
    }


def measure_delivery(sink: MqttSink, recorder: TopicRecorder, count: int, rate: float, topic: str) -> dict:
    """Emit ``count`` alerts at ``rate`` per second (0: at once) and account for every one at the subscriber."""
    emitted: dict[str, float] = {}
    emit_seconds: list[float] = []
    start = time.monotonic()
    for index in range(count):
        if rate > 0:
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        alert = synthetic_alert(index)
        emitted[alert.id] = time.monotonic()
        sink.emit(alert)
        emit_seconds.append(time.monotonic() - emitted[alert.id])
    emitted_s = time.monotonic() - start
    delivered = sink.outbox.wait_until_delivered(RECEIVE_WAIT_S)
    recorder.wait_for(lambda r: set(emitted) <= set(r.event_ids(topic)), RECEIVE_WAIT_S)
    firsts = recorder.first_receipts(topic)
    ids = [event_id for event_id in recorder.event_ids(topic) if event_id in emitted]
    received = [event_id for event_id in emitted if event_id in firsts]
    last_s = max((firsts[event_id] for event_id in received), default=start)
    return {
        "events": count,
        "rate_per_s": rate,
        "qos": sink.config.qos,
        "emit_seconds": round(emitted_s, 2),
        "received": len(received),
        "lost": count - len(received),
        "duplicates": len(ids) - len(set(ids)),
        "outbox": sink.outbox.counts(),
        "outbox_drained": delivered,
        "emit_call_ms": percentiles_ms(emit_seconds),
        "emit_to_receive_ms": percentiles_ms([firsts[event_id] - emitted[event_id] for event_id in received]),
        "throughput_per_s": round(len(received) / max(last_s - start, 1e-9), 1),
    }


# ---- part 2: the pipeline with and without the sink --------------------------------------------------------------
def measure_pipelines(args: argparse.Namespace, config: VigilConfig, sink: MqttSink, recorder: TopicRecorder) -> dict:
    """Alternate null-sink and MQTT-sink runs of the real pipeline; frames/s of each and frame-to-MQTT latency."""
    video = Path(args.video or data_path("video", "short_hamilton_clip.mp4"))
    watchlist = args.watchlist or repo_root() / "examples/hamilton/watchlist.yaml"
    runtime = build_pipeline(config, watchlist, sink=NullSink())
    runs: list[dict] = []
    latencies: dict[str, list[float]] = {"frame_to_receive": [], "frame_to_decision": [], "decision_to_receive": []}
    try:
        for round_index in range(args.rounds):
            for kind in ("null", "mqtt"):
                run_sink = sink if kind == "mqtt" else NullSink()
                gallery, rules, settings = build_rules(config, runtime.enrollment, runtime.models)  # fresh cooldowns
                pipeline = new_watch_pipeline(
                    config, runtime.analyzer, gallery, rules, run_sink, settings, runtime.cascade
                )
                runtime.analyzer.times = type(runtime.analyzer.times)()
                event_times: dict[str, tuple[float, float]] = {}  # event id -> (frame read, decided)

                def record(results: list[FrameResult], into: dict[str, tuple[float, float]] = event_times) -> None:
                    now = time.monotonic()
                    into.update((e.id, (result.frame.mono_ts_s, now)) for result in results for e in result.events)

                load_before = os.getloadavg()[0]
                report = measure(pipeline, video, args.height, args.batch, args.seconds, record)
                runs.append(_run_row(round_index, kind, report, load_before, len(event_times)))
                if kind == "mqtt":
                    _add_latencies(latencies, sink, recorder, event_times)
    finally:
        runtime.close()
    return {"batch": args.batch, "frame_height": args.height, **_pipeline_summary(video, runs, latencies)}


def _run_row(round_index: int, kind: str, report: dict, load_before: float, events: int) -> dict:
    return {
        "round": round_index,
        "sink": kind,
        "frames": report["frames"],
        "fps_wall": report["end_to_end_fps_with_decode"],
        "fps_stages": report["end_to_end_fps"],
        "events": events,
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
    }


def _add_latencies(
    latencies: dict[str, list[float]],
    sink: MqttSink,
    recorder: TopicRecorder,
    event_times: dict[str, tuple[float, float]],
) -> None:
    sink.outbox.wait_until_delivered(RECEIVE_WAIT_S)
    recorder.wait_for(lambda r: set(event_times) <= set(r.first_receipts()), RECEIVE_WAIT_S)
    firsts = recorder.first_receipts()
    for event_id, (frame_s, decided_s) in event_times.items():
        if event_id in firsts:
            latencies["frame_to_receive"].append(firsts[event_id] - frame_s)
            latencies["frame_to_decision"].append(decided_s - frame_s)
            latencies["decision_to_receive"].append(firsts[event_id] - decided_s)


def _pipeline_summary(video: Path, runs: list[dict], latencies: dict[str, list[float]]) -> dict:
    def mean_fps(kind: str) -> float:
        return round(float(np.mean([run["fps_wall"] for run in runs if run["sink"] == kind])), 2)

    null_fps, mqtt_fps = mean_fps("null"), mean_fps("mqtt")
    return {
        "video": str(video),
        "runs": runs,
        "fps_wall_null_sink": null_fps,
        "fps_wall_mqtt_sink": mqtt_fps,
        "fps_change_percent": round(100.0 * (mqtt_fps - null_fps) / null_fps, 1) if null_fps else None,
        **{f"{name}_ms": percentiles_ms(values) for name, values in latencies.items()},
    }


# ---- the command ---------------------------------------------------------------------------------------------------
def parse_broker(text: str) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); VigilError naming ``--broker`` otherwise."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise VigilError(f"--broker: expected HOST:PORT, got {text!r}")
    return host, int(port)


@contextmanager
def broker_for(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[str, int, str]]:
    """(host, port, description) of the broker to use: ``--broker``, or a local mosquitto started for the run."""
    if args.broker:
        host, port = parse_broker(args.broker)
        yield host, port, f"given: {args.broker}"
        return
    with LocalMosquitto(workdir / "broker") as broker:
        yield "127.0.0.1", broker.port, f"local mosquitto pid {broker.pid} on 127.0.0.1:{broker.port}"


def run_cli(args: argparse.Namespace) -> int:
    if args.events < 1 or args.rate < 0 or args.rounds < 0 or args.batch < 1:
        raise VigilError("--events must be >= 1, --rate >= 0, --rounds >= 0, --batch >= 1")
    config = bench_config(load_config_or_default(args.config), None)
    report: dict = {
        "command": "vigil bench mqtt",
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_1_5_15min_at_start": [round(v, 2) for v in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="vigil-bench-mqtt-") as tmp, broker_for(args, Path(tmp)) as broker:
        host, port, report["broker"] = broker
        sink_config = MqttSinkConfig(host=host, port=port, client_id=f"vigil-bench-{os.getpid()}", qos=args.qos)
        recorder = TopicRecorder(
            host, port, topic=f"{sink_config.topic_prefix}/#", client_id=f"vigil-bench-sub-{os.getpid()}"
        )
        sink = MqttSink(Path(tmp) / "events.sqlite3", sink_config)  # the outbox's defaults, as `vigil run` has them
        try:
            if not sink.connection.wait_connected(30.0):
                raise VigilError(f"mqtt: no connection to {host}:{port} within 30 s: {sink.connection.problem}")
            report["delivery"] = measure_delivery(
                sink, recorder, args.events, args.rate, f"{sink_config.topic_prefix}/events"
            )
            if args.rounds:
                report["pipeline"] = measure_pipelines(args, config, sink, recorder)
        finally:
            sink.close()
            recorder.close()
    report["load_1_5_15min_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(report, indent=2))
    save_report(report, args.json)
    return 0
