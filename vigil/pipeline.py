"""Wires the stages: frames -> faces -> tracks -> (scheduled) embeddings -> decisions -> events -> sinks.

``WatchPipeline.process(frames)`` is the whole per-batch step used by both ``vigil run`` (frames from several
cameras, batched) and ``vigil process`` (frames of a file, in order). It owns one tracker per camera and the embed
schedule's per-track state, and uses the rules engine and the sink it is given; it does no I/O of its own except
saving snapshots (:func:`vigil.alerts.save_snapshot`). Each camera's minimum face size and identity threshold come
from its settings (:mod:`vigil.camera_settings`). :func:`vigil.runtime.build_pipeline` builds it for every entry point.

Snapshots: while they are on, every embedded face is cut from its frame and offered to its track, which keeps the
best (:attr:`vigil.types.Track.best_face`); an event saves the track's best face up to that moment and records its
frame (``snapshot_frame_index``). With ``update_snapshot`` a better face arriving later, while the track lives,
overwrites the files of the track's earlier events (the records keep the frame of the face first saved).

Order within a batch: detect (one batch) -> track each frame (boxes only) -> embed the tracked faces that
``vigil.embed_schedule`` picks (one batch across frames and cameras) -> per frame, in order: fold each embedding
into its track, match the track against the gallery, let the rules decide.

The step has two halves, so that `vigil run` can run them in two threads (vigil/stages.py): :meth:`detect_and_track`
(detection, tracking, the embed schedule) and :meth:`recognise` (refine, align, embed, decide). ``process`` calls
one after the other. Each half touches the trackers, the schedule and the rules only under ``state_lock``, and the
models (detection; refine/align/embed) outside it, so the two halves overlap where the time goes. Batches go
through both halves in order, so each camera's decisions keep their frame order.

Per camera: ``detect_fps`` analyses at most that many frames a second. The frames in between are tracked, not
analysed: no detection, embedding or decision, but the camera's tracker advances one frame on each (its Kalman
filter steps, lost tracks age: :meth:`vigil.track.FaceTracker.predict`), and their result carries each confirmed
track's predicted box (``FrameResult.predicted``), so the live view boxes faces on every frame and a track outlives
a gap by the same number of camera frames as without ``detect_fps``; nothing is ever decided on a predicted box.
A two-source camera's frames carry their main-stream frame (``Frame.detail``): detection and tracking use the frame,
faces are cut from the main-stream frame (vigil/substream.py). With a recognition cascade (vigil/cascade.py), faces
that the fast member finds to be nobody on the watchlist get no full embedding.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from vigil.alerts import Sink, event_from_decision, face_crop, new_event_id, replace_snapshot, save_snapshot
from vigil.align import face_quality
from vigil.analyzer import FaceAnalyzer
from vigil.camera_settings import CameraSettingsTable, global_settings
from vigil.capture import RateLimiter
from vigil.cascade import RecognitionCascade
from vigil.config import CameraConfig, TrackerConfig
from vigil.embed_schedule import EmbedSchedule, TrackEmbedState, record_embed, should_embed
from vigil.rules import Gallery, RulesEngine, match_embedding
from vigil.substream import face_in_detail
from vigil.track import FaceTracker
from vigil.types import (
    Alert,
    Decision,
    Embedding,
    Event,
    Face,
    FaceCrop,
    Frame,
    Match,
    Person,
    PredictedBox,
    Track,
    TrackUpdate,
)


@dataclass
class PipelineCounters:
    frames: int = 0
    faces: int = 0  # detected faces
    embeddings: int = 0  # faces embedded (recognisable and picked by the embed schedule)
    embeddings_skipped: int = 0  # recognisable tracked faces the schedule did not embed
    embeddings_held_out: int = 0  # embeddings that did not match their track's face (not voted; see vigil.track)
    identity_switches: int = 0  # tracks split because their box passed to another face
    alerts: int = 0
    unknown_events: int = 0
    frames_not_analysed: int = 0  # passed over by their camera's detect_fps
    cascade_fast_only: int = 0  # faces the cascade's fast member found to be nobody (no full embedding)
    cascade_full: int = 0  # faces the cascade sent on to the whole ensemble
    snapshots_updated: int = 0  # event snapshots overwritten by a better face of their track (update_snapshot)
    track_seconds: float = 0.0
    decide_seconds: float = 0.0
    alerts_by_person: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FrameResult:
    """What one frame produced: the tracked faces (for drawing) and the alerts raised on it; on a frame its camera's
    ``detect_fps`` did not analyse, no faces or events but the confirmed tracks' predicted boxes."""

    frame: Frame
    updates: list[TrackUpdate]
    events: list[Event]
    analysed: bool = True  # False: passed over by its camera's detect_fps (not detected, nothing decided)
    decided_mono_s: float = 0.0  # time.monotonic() when its decisions were taken and its events emitted
    predicted: tuple[PredictedBox, ...] = ()  # frames not analysed: where the tracker puts each confirmed track


@dataclass(frozen=True)
class TrackedBatch:
    """A batch after detection and tracking: what :meth:`WatchPipeline.recognise` takes."""

    frames: list[Frame]
    analysed: list[bool]
    faces: list[list[Face]]  # detected faces per frame (frame pixels)
    updates: list[list[TrackUpdate]]  # tracked faces per frame
    wanted: list[tuple[int, int]]  # (frame, update) positions the embed schedule picked
    predicted: list[tuple[PredictedBox, ...]]  # per frame: the tracks' predicted boxes (frames not analysed)


@dataclass
class SavedSnapshot:
    """An event's snapshot file and the quality of the face it holds (for ``update_snapshot``)."""

    path: str
    quality: float


class WatchPipeline:
    """The per-batch step shared by `vigil run` and `vigil process`."""

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        gallery: Gallery,
        rules: RulesEngine,
        sink: Sink,
        cameras: dict[str, CameraConfig],
        tracker_cfg: TrackerConfig,
        snapshot_dir: Path | None,
        frame_rate: float = 30.0,
        logger: logging.Logger | None = None,
        embed_schedule: EmbedSchedule | None = None,
        cascade: RecognitionCascade | None = None,
        camera_settings: CameraSettingsTable | None = None,
        update_snapshot: bool = False,
    ) -> None:
        """``camera_settings``: each camera's minimum face size and match threshold (None: the rules' and the
        analyzer's for every camera); ``update_snapshot``: overwrite an event's snapshot when its track later shows
        a better face."""
        self.analyzer = analyzer
        self.gallery = gallery
        self.rules = rules
        self.sink = sink
        self.cameras = cameras
        self.tracker_cfg = tracker_cfg
        self.camera_settings = camera_settings or CameraSettingsTable(
            global_settings(rules.rules, analyzer.min_face_px)
        )
        self.update_snapshot = update_snapshot
        self.snapshot_dir = snapshot_dir
        self.frame_rate = frame_rate
        self.log = logger or logging.getLogger("vigil.pipeline")
        self.embed_schedule = embed_schedule or EmbedSchedule()
        self.trackers: dict[str, FaceTracker] = {}
        self.embed_states: dict[tuple[str, int], TrackEmbedState] = {}
        self.saved_snapshots: dict[tuple[str, int], list[SavedSnapshot]] = {}  # (camera, track id) -> its events'
        self.counters = PipelineCounters()
        self.cascade = cascade
        self.state_lock = threading.RLock()  # trackers, schedule, rules, gallery, counters (see the module docstring)
        self._cadences: dict[str, RateLimiter] = {}  # camera -> its detect_fps limiter
        self.default_detect_fps: float | None = None  # detect_fps of cameras the config does not list (vigil process)

    def identity_min_cosine(self, camera: str) -> float:
        """Below this cosine to its own track an embedding does not match it (vigil.track): the tracker's setting,
        else the camera's match threshold."""
        configured = self.tracker_cfg.identity_min_cosine
        return float(self.camera_settings.for_camera(camera).match_threshold if configured is None else configured)

    def recognisable(self, camera: str, face: Face) -> bool:
        """Whether ``face`` is wide enough to embed on ``camera`` (its ``min_face_px``)."""
        return face.width_px >= self.camera_settings.for_camera(camera).min_face_px

    def process(self, frames: list[Frame]) -> list[FrameResult]:
        """Detect on the batch, track frame by frame, embed the tracked faces the schedule asks for (one batch),
        then fold the embeddings into their tracks and decide, frame by frame, in order."""
        return self.recognise(self.detect_and_track(frames))

    def detect_and_track(self, frames: list[Frame]) -> TrackedBatch:
        """Detection (one batch over the frames their camera's ``detect_fps`` lets through), tracking (every frame,
        in order: the others advance their camera's tracker and get its predicted boxes) and the embed schedule."""
        analysed = [self._analyse(frame) for frame in frames]
        detected = iter(self.analyzer.detect([frame.image for frame, chosen in zip(frames, analysed) if chosen]))
        faces_per_frame = [next(detected) if chosen else [] for chosen in analysed]
        with self.state_lock:
            updates_per_frame: list[list[TrackUpdate]] = []
            predicted: list[tuple[PredictedBox, ...]] = []
            for frame, faces, chosen in zip(frames, faces_per_frame, analysed):
                updates_per_frame.append(self._track(frame, faces) if chosen else [])
                predicted.append(() if chosen else self._predict(frame))
            wanted = self._schedule(frames, updates_per_frame)
        return TrackedBatch(frames, analysed, faces_per_frame, updates_per_frame, wanted, predicted)

    def recognise(self, batch: TrackedBatch) -> list[FrameResult]:
        """Embed the scheduled faces (one batch), then fold, match and decide frame by frame, in order."""
        chosen, rejected = self._embed(batch)
        results = []
        with self.state_lock:
            for i, (frame, updates, faces, analysed, predicted) in enumerate(
                zip(batch.frames, batch.updates, batch.faces, batch.analysed, batch.predicted)
            ):
                updates = [replace(update, embedding=chosen.get((i, j))) for j, update in enumerate(updates)]
                skipped = {j for frame_index, j in rejected if frame_index == i}
                events = self._decide(frame, updates, skipped)
                results.append(FrameResult(frame, updates, events, analysed, time.monotonic(), predicted))
                self.counters.frames += 1
                self.counters.faces += len(faces)
                self.counters.frames_not_analysed += not analysed
        return results

    def set_people(self, people: list[Person], changed: set[str]) -> None:
        """Swap in a re-enrolled watchlist between batches (hot reload): the gallery is rebuilt, the rules keep
        every unchanged person's votes and forget those of the ``changed`` (new, re-enrolled or removed) ones."""
        with self.state_lock:
            self.gallery = Gallery.from_people(people)
            self.rules.set_people(people)
            self.rules.forget_people(changed)

    def _analyse(self, frame: Frame) -> bool:
        """Whether the frame's camera lets this frame be analysed (``detect_fps``, by the frame's video time: a
        file's own clock, a camera's seconds since it started)."""
        camera = self.cameras.get(frame.camera)
        fps = self.default_detect_fps if camera is None else camera.detect_fps
        if fps is None:
            return True
        cadence = self._cadences.get(frame.camera)
        if cadence is None:
            cadence = self._cadences[frame.camera] = RateLimiter(fps)
        return cadence.allow(frame.video_ts_s)

    def _track(self, frame: Frame, faces: list[Face]) -> list[TrackUpdate]:
        """An analysed frame: associate its faces with its camera's tracks."""
        start = time.perf_counter()
        tracker = self._camera_tracker(frame.camera)
        updates = tracker.update(faces, frame.index, frame.mono_ts_s)
        self._expire(tracker, frame)
        self.counters.track_seconds += time.perf_counter() - start
        return updates

    def _predict(self, frame: Frame) -> tuple[PredictedBox, ...]:
        """A frame not analysed: advance its camera's tracker one frame; the confirmed tracks' predicted boxes."""
        start = time.perf_counter()
        tracker = self._camera_tracker(frame.camera)
        predicted = tuple(tracker.predict())
        self._expire(tracker, frame)
        self.counters.track_seconds += time.perf_counter() - start
        return predicted

    def _camera_tracker(self, camera: str) -> FaceTracker:
        tracker = self.trackers.get(camera)
        if tracker is None:
            tracker = self.trackers[camera] = FaceTracker(camera, self.tracker_cfg, self.frame_rate)
        return tracker

    def _expire(self, tracker: FaceTracker, frame: Frame) -> None:
        """Tracks unseen for ``max_track_age_s`` by this frame's time end (checked on every frame, analysed or not)."""
        for track in tracker.expire(frame.mono_ts_s):
            self._end_track(frame.camera, track.track_id)

    def _schedule(self, frames: list[Frame], updates_per_frame: list[list[TrackUpdate]]) -> list[tuple[int, int]]:
        """(frame, update) positions of the faces to embed: recognisable ones (in the pixels they are cut from)
        that the embed schedule picks."""
        wanted = [
            (i, j)
            for i, (frame, updates) in enumerate(zip(frames, updates_per_frame))
            for j, update in enumerate(updates)
            if self.recognisable(frame.camera, face_in_detail(frame, update.face))
            and self._wants_embedding(frame, update)
        ]
        self.counters.embeddings += len(wanted)
        return wanted

    def _embed(self, batch: TrackedBatch) -> tuple[dict[tuple[int, int], Embedding], set[tuple[int, int]]]:
        """The scheduled faces' embeddings by position, and the positions the cascade found to be nobody."""
        frames, updates = batch.frames, batch.updates
        through = [key for key in batch.wanted if self._cascaded(frames[key[0]].camera)]
        direct = [key for key in batch.wanted if not self._cascaded(frames[key[0]].camera)]
        chosen: dict[tuple[int, int], Embedding] = {}
        if direct:
            items = [(frames[i].face_image, face_in_detail(frames[i], updates[i][j].face)) for i, j in direct]
            chosen.update(zip(direct, self.analyzer.embed_faces(items)))
        if not through or self.cascade is None:
            return chosen, set()
        items = [(frames[i].face_image, face_in_detail(frames[i], updates[i][j].face)) for i, j in through]
        aligned = self.analyzer.align_faces(items)
        start = time.perf_counter()
        embeddings = self.cascade.embed(aligned, self.gallery)
        self.analyzer.times.add("embed", time.perf_counter() - start)
        self.analyzer.times.faces += len(aligned)
        full = {key: e for key, e in zip(through, embeddings) if e is not None}
        rejected = {key for key, e in zip(through, embeddings) if e is None}
        with self.state_lock:
            self.counters.cascade_full += len(full)
            self.counters.cascade_fast_only += len(rejected)
        return chosen | full, rejected

    def _cascaded(self, camera: str) -> bool:
        """Whether ``camera``'s faces go through the recognition cascade: its reject cosine is calibrated at the
        global match threshold, so a camera whose own threshold is lower embeds every face with the whole ensemble."""
        if self.cascade is None:
            return False
        return self.camera_settings.for_camera(camera).match_threshold >= self.camera_settings.default.match_threshold

    def _wants_embedding(self, frame: Frame, update: TrackUpdate) -> bool:
        state = self.embed_states.setdefault((frame.camera, update.track.track_id), TrackEmbedState())
        quality = face_quality(face_in_detail(frame, update.face), frame.face_image.shape)
        if not should_embed(self.embed_schedule, state, frame.index, quality):
            self.counters.embeddings_skipped += 1
            return False
        record_embed(state, frame.index, quality)
        return True

    def _decide(self, frame: Frame, updates: list[TrackUpdate], rejected: set[int] | None = None) -> list[Event]:
        """Fold, match and decide each embedded face of one frame; ``rejected``: positions of the faces the
        cascade found to be nobody (see :meth:`_decide_rejected`)."""
        start = time.perf_counter()
        camera = self.cameras.get(frame.camera) or CameraConfig(name=frame.camera, source=frame.camera)
        events: list[Event] = []
        now_wall = datetime.now().astimezone()
        for j, update in enumerate(updates):
            if rejected and j in rejected:
                events.extend(self._decide_rejected(camera, frame, update, now_wall))
                continue
            if update.embedding is None:
                continue  # too small to recognise, or not scheduled: tracked, not voted
            crop = self._crop(frame, update.face, update.embedding)
            track = self._fold(frame.camera, update.track, update.embedding, crop)
            if track is None or track.embedding is None:
                continue  # held out (does not match its track), or the weighted sum cancelled to zero
            if self.update_snapshot:
                self._refresh_snapshots(track)
            match = match_embedding(track.embedding, self.gallery)
            decisions = self.rules.decide(
                camera,
                track,
                match,
                frame.image.shape,
                frame.mono_ts_s,
                now_wall,
                update.embedding.aligned.quality,
                box=update.face.box,
            )
            events.extend(self._to_event(decision, frame, update, track) for decision in decisions)
        self.counters.decide_seconds += time.perf_counter() - start
        for event in events:
            self._count(event)
            self.sink.emit(event)
        return events

    def _decide_rejected(
        self, camera: CameraConfig, frame: Frame, update: TrackUpdate, now_wall: datetime
    ) -> list[Event]:
        """A face the cascade's fast member found to be nobody on the watchlist. Person votes come only from the
        whole ensemble: while its track has no ensemble embedding yet, the face votes for nobody (so a stranger's
        track can still raise an unknown-face event, with score 0); once it has one, the face does not vote (its
        aggregate did not change, and the fast member's word alone never counts for or against a person)."""
        track = self.trackers[frame.camera].current(update.track)
        if track.embedding is not None:
            return []
        decisions = self.rules.decide(
            camera, track, Match(None, 0.0, 0.0), frame.image.shape, frame.mono_ts_s, now_wall, box=update.face.box
        )
        return [self._to_event(decision, frame, update, track) for decision in decisions]

    def _crop(self, frame: Frame, face: Face, embedding: Embedding) -> FaceCrop | None:
        """This face cut from its frame (the main stream's, for a two-source camera) for its track's best face;
        None while snapshots are off (no copy made)."""
        return (
            None
            if self.snapshot_dir is None
            else face_crop(frame, face_in_detail(frame, face), embedding.aligned.quality)
        )

    def _fold(self, camera: str, track: Track, embedding: Embedding, crop: FaceCrop | None) -> Track | None:
        """The track to decide on after folding ``embedding`` in; None when it was held out."""
        fold = self.trackers[camera].fold(track, embedding, self.identity_min_cosine(camera), crop)
        if fold.replaced is not None:
            self.counters.identity_switches += 1
            self._end_track(camera, fold.replaced.track_id)
            self.log.debug(
                "camera %s: track %d changed identity: new track %d",
                camera,
                fold.replaced.track_id,
                fold.track.track_id,
            )
        elif not fold.folded:
            self.counters.embeddings_held_out += 1
        return fold.track if fold.folded else None

    def _end_track(self, camera: str, track_id: int) -> None:
        """A track ended (expired, or split off on an identity switch): its rules and embed-schedule state go."""
        self.rules.forget(camera, track_id)
        self.embed_states.pop((camera, track_id), None)
        self.saved_snapshots.pop((camera, track_id), None)

    def _to_event(self, decision: Decision, frame: Frame, update: TrackUpdate, track: Track) -> Event:
        """The event record, with the track's best face so far saved as its snapshot (snapshots on)."""
        event_id = new_event_id()
        snapshot, snapshot_frame_index = None, None
        if self.snapshot_dir is not None:
            best = track.best_face or face_crop(frame, face_in_detail(frame, update.face), 0.0)
            snapshot = save_snapshot(self.snapshot_dir, event_id, best.image)
            if snapshot is not None:
                snapshot_frame_index = best.frame_index
                key = (track.camera, track.track_id)
                self.saved_snapshots.setdefault(key, []).append(SavedSnapshot(snapshot, best.quality))
        return event_from_decision(
            decision,
            bbox=update.face.box,
            frame_index=frame.index,
            video_ts_s=frame.video_ts_s,
            snapshot=snapshot,
            snapshot_frame_index=snapshot_frame_index,
            event_id=event_id,
        )

    def _refresh_snapshots(self, track: Track) -> None:
        """``update_snapshot``: overwrite the snapshots of the track's events whose face is worse than its best."""
        best = track.best_face
        for saved in self.saved_snapshots.get((track.camera, track.track_id), []):
            if best is not None and best.quality > saved.quality and replace_snapshot(saved.path, best.image):
                saved.quality = best.quality
                self.counters.snapshots_updated += 1

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
