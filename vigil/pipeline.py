"""Wires the stages: frames -> faces + embeddings -> tracks -> decisions -> alerts -> sinks.

``WatchPipeline.process(frames)`` is the whole per-batch step used by both ``vigil run`` (frames from several
cameras, batched) and ``vigil process`` (frames of a file, in order). It owns one tracker per camera, the rules
engine and the sinks; it does no I/O of its own except saving snapshots through the alert factory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from vigil.analyzer import FaceAnalyzer
from vigil.config import CameraConfig, TrackerConfig
from vigil.alerts import Event, event_from_decision, new_event_id, save_snapshot
from vigil.rules import Decision, Gallery, RulesEngine, match_embedding
from vigil.track import FaceTracker, TrackUpdate
from vigil.types import Alert, Frame, Track

SNAPSHOT_MARGIN = 0.25  # fraction of the box size added around a face in its snapshot


class EventSink(Protocol):
    """Where events go (``vigil.alerts.AlertDispatcher`` fans out to the configured sinks)."""

    def emit(self, event: Event) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class PipelineCounters:
    frames: int = 0
    faces: int = 0
    alerts: int = 0
    unknown_events: int = 0
    track_seconds: float = 0.0
    decide_seconds: float = 0.0
    alerts_by_person: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FrameResult:
    """What one frame produced: the tracked faces (for drawing) and the alerts raised on it."""

    frame: Frame
    updates: list[TrackUpdate]
    events: list[Event]


def crop_with_margin(image: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    h, w = image.shape[:2]
    left, top = max(int(x1 - dx), 0), max(int(y1 - dy), 0)
    right, bottom = min(int(x2 + dx) + 1, w), min(int(y2 + dy) + 1, h)
    if right <= left or bottom <= top:
        return image
    return image[top:bottom, left:right]


class WatchPipeline:
    """The per-batch step shared by `vigil run` and `vigil process`."""

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        gallery: Gallery,
        rules: RulesEngine,
        sink: EventSink,
        cameras: dict[str, CameraConfig],
        tracker_cfg: TrackerConfig,
        snapshot_dir: Path | None,
        frame_rate: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.gallery = gallery
        self.rules = rules
        self.sink = sink
        self.cameras = cameras
        self.tracker_cfg = tracker_cfg
        self.snapshot_dir = snapshot_dir
        self.frame_rate = frame_rate
        self.log = logger or logging.getLogger("vigil.pipeline")
        self.trackers: dict[str, FaceTracker] = {}
        self.counters = PipelineCounters()

    def process(self, frames: list[Frame]) -> list[FrameResult]:
        """Run detect/align/embed on the batch, then track and decide frame by frame, in order."""
        observations = self.analyzer.observe([frame.image for frame in frames])
        results = []
        for frame, frame_observations in zip(frames, observations):
            start = time.perf_counter()
            tracker = self._tracker(frame.camera)
            updates = tracker.update(frame_observations, frame.index, frame.mono_ts_s)
            for track in tracker.expire(frame.mono_ts_s):
                self.rules.forget(frame.camera, track.track_id)
            self.counters.track_seconds += time.perf_counter() - start
            results.append(FrameResult(frame, updates, self._decide(frame, updates)))
            self.counters.frames += 1
            self.counters.faces += len(frame_observations)
        return results

    def _tracker(self, camera: str) -> FaceTracker:
        tracker = self.trackers.get(camera)
        if tracker is None:
            tracker = self.trackers[camera] = FaceTracker(camera, self.tracker_cfg, self.frame_rate)
        return tracker

    def _decide(self, frame: Frame, updates: list[TrackUpdate]) -> list[Event]:
        start = time.perf_counter()
        camera = self.cameras.get(frame.camera) or CameraConfig(name=frame.camera, source=frame.camera)
        events = []
        now_wall = datetime.now().astimezone()
        for update in updates:
            if update.observation.embedding is None or update.track.embedding is None:
                continue  # too small to recognise: tracked, not voted
            match = match_embedding(update.track.embedding, self.gallery)
            quality = update.observation.embedding.aligned.quality
            decisions = self.rules.decide(
                camera, update.track, match, frame.image.shape, frame.mono_ts_s, now_wall, quality
            )
            events.extend(self._to_event(decision, frame, update.track) for decision in decisions)
        self.counters.decide_seconds += time.perf_counter() - start
        for event in events:
            self._count(event)
            self.sink.emit(event)
        return events

    def _to_event(self, decision: Decision, frame: Frame, track: Track) -> Event:
        event_id = new_event_id()
        snapshot = None
        if self.snapshot_dir is not None:
            snapshot = save_snapshot(self.snapshot_dir, event_id, crop_with_margin(frame.image, track.box, SNAPSHOT_MARGIN))
        return event_from_decision(
            decision, bbox=track.box, frame_index=frame.index, video_ts_s=frame.video_ts_s,
            snapshot=snapshot, event_id=event_id,
        )  # fmt: skip

    def _count(self, event: Event) -> None:
        if not isinstance(event, Alert):
            self.counters.unknown_events += 1
            return
        self.counters.alerts += 1
        key = f"{event.person_id}:{event.stage.value}"
        self.counters.alerts_by_person[key] = self.counters.alerts_by_person.get(key, 0) + 1

    def close(self) -> None:
        """Flush and close the sinks (the dispatcher isolates a failing sink)."""
        self.sink.close()
