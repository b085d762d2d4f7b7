"""What `vigil run`'s pipeline thread publishes for the server after each batch (see vigil/live.py).

:class:`LivePublisher` turns the pipeline's results into snapshots: each camera's latest frame with its tracked faces
(named once their track raised an alert), every event, per-stage latencies (the analyzer's and pipeline's own timers,
differenced per batch), frame-to-alert latency, camera statuses and pipeline counters (every ``status_every_s``),
and between batches runs the watchlist reloader. It only copies references and small values: the cost per batch is
a few dictionary writes, and nothing it does waits for a reader.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict
from typing import Protocol

import numpy as np

from vigil.alerts import utc_timestamp
from vigil.capture import UP, CameraStats
from vigil.live import CameraStatus, LiveFace, LiveFrame, LiveHub
from vigil.pipeline import FrameResult, WatchPipeline
from vigil.redact import mask_url
from vigil.types import Alert
from vigil.watchlist_reload import WatchlistReloader

MAX_LABELS = 2048  # (camera, track) -> person labels kept for drawing (oldest forgotten first)


class StatsSource(Protocol):
    def stats(self) -> CameraStats: ...


class StageCounters(Protocol):
    def to_json(self) -> dict: ...


def detail_counters(sources: Sequence[StatsSource]) -> dict[str, dict]:
    """Each two-source camera's pairing counters (vigil/substream.py), by camera name."""
    return {
        source.stats().name: detail_stats().to_json()
        for source in sources
        if (detail_stats := getattr(source, "detail_stats", None)) is not None
    }


def camera_status(stats: CameraStats) -> CameraStatus:
    return CameraStatus(
        name=stats.name,
        up=stats.state == UP,
        state=stats.state,
        frames_late=stats.frames_late,
        fps=stats.fps,
        frames_read=stats.frames_read,
        frames_dropped=stats.frames_dropped,
        frames_skipped=stats.frames_skipped,
        reconnects=stats.reconnects,
        stalls=stats.stalls,
        last_error=mask_url(stats.last_error),
    )


class LivePublisher:
    def __init__(self, hub: LiveHub, pipeline: WatchPipeline, reloader: WatchlistReloader | None = None) -> None:
        self.hub = hub
        self.pipeline = pipeline
        self.reloader = reloader
        self._labels: OrderedDict[tuple[str, int], tuple[str, str, str]] = OrderedDict()
        self._stage_totals = self._stage_seconds()

    def after_batch(self, results: Sequence[FrameResult], batch_seconds: float) -> None:
        now_mono = time.monotonic()
        for result in results:
            if result.analysed and result.decided_mono_s:
                self.hub.frame_to_decision.observe(result.decided_mono_s - result.frame.mono_ts_s)
            for event in result.events:
                if isinstance(event, Alert):
                    self._label(event.camera, event.track_id, (event.person_id, event.person_name, event.list.value))
                self.hub.publish_event(event.to_json())
                self.hub.frame_to_alert.observe(now_mono - result.frame.mono_ts_s)
        latest: dict[str, FrameResult] = {result.frame.camera: result for result in results}
        stamp = utc_timestamp()
        for camera, result in latest.items():
            faces = tuple(self._face(camera, update.face.box, update.track.track_id) for update in result.updates)
            faces += tuple(self._face(camera, box.box, box.track.track_id, predicted=True) for box in result.predicted)
            self.hub.publish_frame(LiveFrame(camera, result.frame.index, stamp, result.frame.image, faces))
        totals = self._stage_seconds()
        for stage, seconds in totals.items():
            self.hub.observe_stage(stage, seconds - self._stage_totals.get(stage, 0.0))
        self._stage_totals = totals
        self.hub.observe_stage("batch", batch_seconds)

    def between_batches(self) -> None:
        if self.reloader is not None:
            self.reloader.step(self.pipeline)

    def publish_status(
        self, statuses: Sequence[CameraStatus], stages: StageCounters | None = None, details: dict | None = None
    ) -> list[CameraStatus]:
        """The cameras' statuses and the pipeline's counters to the hub, with (when given) the overlapped stages'
        queue counters and two-source cameras' pairing counters (vigil/substream.py, :func:`detail_counters`);
        returns the statuses as the hub keeps them (with ``since``)."""
        self.hub.publish_statuses(statuses, utc_timestamp())
        with self.pipeline.state_lock:  # the recognition thread updates them
            counters = asdict(self.pipeline.counters)
        if stages is not None:
            counters["stages"] = stages.to_json()
        if details:
            counters["detail_frames"] = details
        self.hub.publish_counters(counters)
        kept = {status.name: status for status in self.hub.statuses()}
        return [kept.get(status.name, status) for status in statuses]

    def _face(self, camera: str, box_xyxy: np.ndarray, track_id: int, predicted: bool = False) -> LiveFace:
        """A face box to draw (detected, or ``predicted`` on a frame not analysed), named once its track alerted."""
        x1, y1, x2, y2 = (float(v) for v in box_xyxy[:4])
        box = (x1, y1, x2, y2)
        label = self._labels.get((camera, track_id))
        if label is None:
            return LiveFace(box, track_id, predicted=predicted)
        return LiveFace(box, track_id, *label, predicted=predicted)

    def _label(self, camera: str, track_id: int, label: tuple[str, str, str]) -> None:
        self._labels[(camera, track_id)] = label
        self._labels.move_to_end((camera, track_id))
        while len(self._labels) > MAX_LABELS:
            self._labels.popitem(last=False)

    def _stage_seconds(self) -> dict[str, float]:
        seconds = dict(self.pipeline.analyzer.times.seconds)
        seconds["track"] = self.pipeline.counters.track_seconds
        seconds["decide"] = self.pipeline.counters.decide_seconds
        return seconds
