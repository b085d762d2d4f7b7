"""Hand-over points between the pipeline thread and its readers (the HTTP server; later MQTT status topics).

The pipeline thread *publishes*: the latest frame of each camera with its tracked faces, each camera's status,
every event, per-stage latencies, the watchlist's state. Readers take *snapshots* (immutable values) under a short
lock and never call into a stage. Nothing here blocks the publisher: every buffer is bounded and counts what it
drops, and a reader's slowness only ever costs that reader.

The one request that goes the other way, "is this photo usable for enrolment?", is a bounded queue of futures
(:class:`PhotoCheckQueue`) that the pipeline thread serves between batches, with the same face stages it runs on
frames: the server never runs a model itself.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class LiveFace:
    """A tracked face on the latest frame; the person fields are set once the track raised an alert. ``predicted``:
    the frame was not analysed (its camera's ``detect_fps``) and the box is where the tracker puts the track."""

    box: tuple[float, float, float, float]
    track_id: int
    person_id: str | None = None
    person_name: str | None = None
    list: str | None = None
    predicted: bool = False

    def to_json(self) -> dict:
        return {
            "box": [round(v, 1) for v in self.box],
            "track_id": self.track_id,
            "person_id": self.person_id,
            "person_name": self.person_name,
            "list": self.list,
            "predicted": self.predicted,
        }


@dataclass(frozen=True)
class LiveFrame:
    camera: str
    index: int
    ts: str  # ISO-8601 UTC wall-clock time of publication
    image: np.ndarray  # the pipeline's own frame (BGR); never written to after capture
    faces: tuple[LiveFace, ...] = ()

    def to_json(self) -> dict:
        height, width = self.image.shape[:2]
        return {
            "index": self.index,
            "ts": self.ts,
            "width": int(width),
            "height": int(height),
            "faces": [face.to_json() for face in self.faces],
        }


@dataclass(frozen=True)
class CameraStatus:
    """A camera's state as readers see it (credentials already masked by the capture stage)."""

    name: str
    up: bool  # good frames are flowing
    fps: float = 0.0
    frames_read: int = 0
    frames_dropped: int = 0
    frames_skipped: int = 0
    reconnects: int = 0
    stalls: int = 0
    last_error: str = ""
    since: str = ""  # when it last went up or down (ISO-8601 UTC); "" before the first report
    state: str = ""  # vigil.capture.CameraStats.state: up, STALLED, AUTH-FAILED, DOWN ("": up or DOWN from ``up``)
    frames_late: int = 0  # frames dropped because they arrived too late (a burst after a freeze)

    @property
    def condition(self) -> str:
        return self.state or ("up" if self.up else "DOWN")

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "up": self.up,
            "state": self.condition,
            "frames_late": self.frames_late,
            "fps": round(self.fps, 2),
            "frames_read": self.frames_read,
            "frames_dropped": self.frames_dropped,
            "frames_skipped": self.frames_skipped,
            "reconnects": self.reconnects,
            "stalls": self.stalls,
            "last_error": self.last_error,
            "since": self.since,
        }


@dataclass(frozen=True)
class PhotoVerdict:
    """Whether a photo can be enrolled: ``code`` is ok | no_face | several_faces | too_small | unreadable."""

    code: str
    reason: str
    faces: int = 0

    @property
    def ok(self) -> bool:
        return self.code == "ok"

    def to_json(self) -> dict:
        return {"result": self.code, "reason": self.reason, "faces": self.faces}


@dataclass(frozen=True)
class WatchlistState:
    """What the running pipeline has enrolled, for health and the people API."""

    path: str = ""
    people: int = 0
    loaded_at: str = ""  # last successful (re)load
    error: str = ""  # the last failed reload's one line ("" once a reload succeeds)
    photo_results: dict[str, dict[str, str]] = field(default_factory=dict)  # person id -> photo -> "ok" | reason
    enrolled: frozenset[str] = frozenset()  # person ids in the running gallery


class Subscription:
    """One reader's bounded queue on a :class:`Feed`; ``notify`` is called (from the publisher's thread) on news."""

    def __init__(self, feed: Feed, maxsize: int, notify: Callable[[], None] | None) -> None:
        self._feed = feed
        self._items: deque = deque()
        self._maxsize = maxsize
        self._notify = notify
        self.dropped = 0

    def _put(self, item: object) -> None:
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
            self._feed.dropped += 1
        self._items.append(item)
        if self._notify is not None:
            self._notify()

    def drain(self) -> tuple[list, int]:
        """Everything queued, and how many were dropped since the last drain."""
        with self._feed._lock:
            items, dropped = list(self._items), self.dropped
            self._items.clear()
            self.dropped = 0
        return items, dropped

    def close(self) -> None:
        self._feed._unsubscribe(self)


class Feed:
    """Fan-out of items to subscribers; publishing never blocks (a full subscriber loses its oldest item)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        self.published = 0
        self.dropped = 0

    def subscribe(self, maxsize: int, notify: Callable[[], None] | None = None) -> Subscription:
        subscription = Subscription(self, maxsize, notify)
        with self._lock:
            self._subscribers.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def publish(self, item: object) -> None:
        with self._lock:
            self.published += 1
            for subscription in self._subscribers:
                subscription._put(item)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)


class LatencyHistogram:
    """Cumulative counts per upper bound (Prometheus' shape), sum and count; thread-safe."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.buckets = tuple(buckets)
        self._counts = [0] * (len(self.buckets) + 1)  # last: +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        slot = next((i for i, bound in enumerate(self.buckets) if seconds <= bound), len(self.buckets))
        with self._lock:
            self._counts[slot] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[tuple[float, int]], float, int]:
        """([(upper bound, cumulative count)...] ending with +Inf, sum, count)."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), counts):
            running += count
            cumulative.append((bound, running))
        return cumulative, total, running


@dataclass
class PhotoCheck:
    image: np.ndarray
    future: Future


class PhotoCheckQueue:
    """Bounded queue of photo checks for the pipeline thread; ``submit`` refuses (None) when full."""

    def __init__(self, maxsize: int = 8) -> None:
        self._items: deque[PhotoCheck] = deque()
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self.refused = 0

    def submit(self, image: np.ndarray) -> Future | None:
        future: Future = Future()
        with self._lock:
            if len(self._items) >= self._maxsize:
                self.refused += 1
                return None
            self._items.append(PhotoCheck(image, future))
        return future

    def take(self) -> list[PhotoCheck]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items


class LiveHub:
    """Everything the pipeline publishes for readers; one instance per `vigil run`."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._frames: dict[str, LiveFrame] = {}
        self._statuses: dict[str, CameraStatus] = {}
        self._counters: dict[str, Any] = {}
        self._clock = wall_clock
        self.feed = Feed()  # ("event", record dict) and ("camera", CameraStatus) items
        self.stage_latency: dict[str, LatencyHistogram] = {}
        self.frame_to_alert = LatencyHistogram(LATENCY_BUCKETS_S)
        self.frame_to_decision = LatencyHistogram(LATENCY_BUCKETS_S)  # every analysed frame, capture to decisions
        self.photo_checks = PhotoCheckQueue()
        self.watchlist = WatchlistState()
        self.reload_requested = threading.Event()
        self.started_mono_s = time.monotonic()
        self.closed = threading.Event()

    # ---- frames ----
    def publish_frame(self, frame: LiveFrame) -> None:
        with self._lock:
            self._frames[frame.camera] = frame

    def latest_frame(self, camera: str) -> LiveFrame | None:
        with self._lock:
            return self._frames.get(camera)

    # ---- camera status ----
    def publish_statuses(self, statuses: Sequence[CameraStatus], now_iso: str) -> list[CameraStatus]:
        """Store the cameras' statuses; those whose state changed (up, STALLED, ...) go to the feed (and are
        returned)."""
        changed = []
        with self._lock:
            for status in statuses:
                previous = self._statuses.get(status.name)
                if previous is None or previous.condition != status.condition:
                    status = replace(status, since=now_iso)
                    changed.append(status)
                else:
                    status = replace(status, since=previous.since)
                self._statuses[status.name] = status
        for status in changed:
            self.feed.publish(("camera", status))
        return changed

    def statuses(self) -> list[CameraStatus]:
        with self._lock:
            return list(self._statuses.values())

    # ---- events, counters, latencies ----
    def publish_event(self, record: dict) -> None:
        self.feed.publish(("event", record))

    def observe_stage(self, stage: str, seconds: float) -> None:
        histogram = self.stage_latency.get(stage)
        if histogram is None:
            histogram = self.stage_latency.setdefault(stage, LatencyHistogram())
        histogram.observe(seconds)

    def publish_counters(self, counters: dict[str, Any]) -> None:
        with self._lock:
            self._counters = dict(counters)

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._counters)

    def set_watchlist(self, state: WatchlistState) -> None:
        self.watchlist = state  # one reference swap: readers see the old or the new value
