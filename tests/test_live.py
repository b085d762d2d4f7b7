"""vigil/live.py and the run loop's publisher: bounded feeds that count drops, status changes, latest frames with
tracked faces named once alerted, events and latencies; the publisher never waits for a reader."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from vigil.analyzer import StageTimes
from vigil.capture import CameraStats
from vigil.live import CameraStatus, Feed, LatencyHistogram, LiveHub
from vigil.live_publish import LivePublisher, camera_status
from vigil.pipeline import FrameResult, PipelineCounters
from vigil.types import Alert, AlertStage, Face, Frame, ListKind, PredictedBox, Track


def test_a_slow_subscriber_loses_its_oldest_items_and_the_publisher_never_waits():
    feed = Feed()
    slow, fast = feed.subscribe(maxsize=3), feed.subscribe(maxsize=100)
    for i in range(10):
        feed.publish(i)
    assert slow.drain() == ([7, 8, 9], 7) and fast.drain() == (list(range(10)), 0)
    assert feed.dropped == 7 and slow.drain() == ([], 0)
    slow.close()
    assert feed.subscribers == 1


def test_status_changes_go_to_the_feed_with_since():
    hub = LiveHub()
    subscription = hub.feed.subscribe(10)
    hub.publish_statuses([CameraStatus("a", True), CameraStatus("b", False)], "t0")
    hub.publish_statuses([CameraStatus("a", True, fps=5.0), CameraStatus("b", False)], "t1")  # no change
    hub.publish_statuses([CameraStatus("a", False, last_error="read failed"), CameraStatus("b", False)], "t2")
    items, _ = subscription.drain()
    assert [(kind, s.name, s.up, s.since) for kind, s in items] == [
        ("camera", "a", True, "t0"),
        ("camera", "b", False, "t0"),
        ("camera", "a", False, "t2"),
    ]
    assert {s.name: s.since for s in hub.statuses()} == {"a": "t2", "b": "t0"}


def test_histogram_is_cumulative():
    histogram = LatencyHistogram((0.1, 1.0))
    for seconds in (0.05, 0.5, 0.5, 3.0):
        histogram.observe(seconds)
    buckets, total, count = histogram.snapshot()
    assert buckets == [(0.1, 1), (1.0, 3), (float("inf"), 4)] and count == 4 and abs(total - 4.05) < 1e-9


def test_camera_status_masks_credentials():
    stats = CameraStats("lobby", connected=False, last_error="rtsp://admin:s3cret@10.0.0.5/live: cannot open")
    assert "s3cret" not in camera_status(stats).last_error


@dataclass
class FakeAnalyzer:
    times: StageTimes = field(default_factory=StageTimes)


@dataclass
class FakePipeline:
    analyzer: FakeAnalyzer = field(default_factory=FakeAnalyzer)
    counters: PipelineCounters = field(default_factory=PipelineCounters)
    state_lock: threading.RLock = field(default_factory=threading.RLock)


@dataclass(frozen=True)
class Update:
    face: Face
    track: Track


def result(index: int, track_id: int, events=()) -> FrameResult:
    box = np.array([10, 10, 50, 50], np.float32)
    face = Face(box, 0.9, np.zeros((5, 2), np.float32))
    track = Track("cam", track_id, box, 0, index, 0.0)
    frame = Frame("cam", index, 0.0, 0.0, np.zeros((60, 60, 3), np.uint8))
    return FrameResult(frame, [Update(face, track)], list(events))


def test_publisher_names_a_track_once_it_alerted_and_records_latencies():
    hub, pipeline = LiveHub(), FakePipeline()
    publisher = LivePublisher(hub, pipeline)
    subscription = hub.feed.subscribe(10)
    publisher.after_batch([result(1, 7)], 0.02)
    assert hub.latest_frame("cam").faces[0].person_id is None
    alert = Alert(
        "e" * 32,
        AlertStage.CONFIRMED,
        "ann",
        "Ann",
        ListKind.DENY,
        "cam",
        7,
        0.9,
        0.2,
        "t",
        0.0,
        2,
        (10, 10, 50, 50),
        None,
        "watchlist",
    )
    pipeline.analyzer.times.add("detect", 0.5)
    publisher.after_batch([result(2, 7, [alert])], 0.6)
    latest = hub.latest_frame("cam")
    assert latest.index == 2 and (latest.faces[0].person_id, latest.faces[0].person_name) == ("ann", "Ann")
    assert subscription.drain()[0] == [("event", alert.to_json())]
    assert hub.frame_to_alert.snapshot()[2] == 1
    detect = hub.stage_latency["detect"].snapshot()
    assert detect[2] == 2 and abs(detect[1] - 0.5) < 1e-9  # per-batch differences of the analyzer's running total
    publisher.publish_status([])
    assert hub.counters()["frames"] == 0


def test_a_frame_not_analysed_shows_its_predicted_boxes_named_like_the_detected_ones():
    hub, pipeline = LiveHub(), FakePipeline()
    publisher = LivePublisher(hub, pipeline)
    publisher._label("cam", 7, ("ann", "Ann", "deny"))
    track = Track("cam", 7, np.array([10, 10, 50, 50], np.float32), 0, 1, 0.0)
    frame = Frame("cam", 2, 0.0, 0.0, np.zeros((60, 60, 3), np.uint8))
    predicted = (PredictedBox(track, np.array([14, 12, 54, 52], np.float32)),)
    publisher.after_batch([FrameResult(frame, [], [], analysed=False, predicted=predicted)], 0.01)
    (face,) = hub.latest_frame("cam").faces
    assert face.box == (14.0, 12.0, 54.0, 52.0) and face.predicted and face.person_name == "Ann"
    assert face.to_json()["predicted"] is True
    publisher.after_batch([result(3, 7)], 0.01)
    assert not hub.latest_frame("cam").faces[0].predicted  # a detected face
