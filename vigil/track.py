"""Per-camera face tracking (Ultralytics' ByteTrack) and per-track embedding aggregation.

Each camera gets its own ``FaceTracker``. ByteTrack associates this frame's face boxes with existing tracks; each
track accumulates a quality-weighted sum of its unit embeddings (quality = face size, detector score, frontality from
``AlignedFace.quality``), so the track's embedding gets better as the person comes closer or turns to the camera.

Identity switches: ByteTrack follows boxes, not faces, so a track can pass from one person to another (people
crossing, a scene cut in edited video). Its aggregate embedding would then keep naming the first person while the
second is in view: measured on the Hamilton clip, where Obama's face continued Lin-Manuel Miranda's track and was never
matched. :meth:`FaceTracker.fold` therefore holds out an embedding whose cosine to the track's own face is below
``identity_min_cosine`` (the recognizer's match threshold: the track would not be accepted as the same person), and
after ``identity_switch_hits`` such embeddings in a row gives the box a new track that starts from them.

Best face: each folded embedding may come with its face cut from the frame (:class:`vigil.types.FaceCrop`); the
track keeps the one of highest quality (:attr:`vigil.types.Track.best_face`), and the pipeline saves it as the
snapshot of the track's events. Held-out embeddings keep their crops, so a split-off track starts with its own.

Frames not analysed (a camera's ``detect_fps``): :meth:`FaceTracker.predict` advances the tracker by one frame
without a detection. ByteTrack's clock is its frame counter: each ``update`` counts one frame and moves every
confirmed and lost track's Kalman state one step before it associates. ``predict`` does exactly that step (count the
frame, ``multi_predict`` the same pool, drop the lost tracks older than ``track_buffer_frames``) and associates
nothing, so on a camera analysed every k-th frame the filter still steps once per frame: the next ``update`` steps
only its own frame (nothing is predicted twice) and associates its faces against where the tracks are on that
frame. Velocities stay in pixels per camera frame, and a lost track is dropped after ``track_buffer_frames`` camera
frames, the same wall time as without ``detect_fps``. The alternative, a tracker at ``frame_rate = detect_fps``
stepped only on analysed frames, would need the buffer rescaled per camera, a fractional Kalman step to draw the
frames in between, and would change again whenever the cadence's token bucket let an extra frame through; one step
per frame keeps ByteTrack's own semantics. ``predict`` returns each confirmed track's box on that frame
(:class:`vigil.types.PredictedBox`) for the live view; a lost track (not matched on the last analysed frame) is not
shown. The clock counts the frames the pipeline is given: a frame dropped in a camera's latest-frame queue is not
counted, with or without ``detect_fps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from vigil.config import TrackerConfig
from vigil.types import Embedding, Face, FaceCrop, PredictedBox, Track, TrackUpdate


class _Detections:
    """The minimal Results-like view ByteTrack reads: ``conf``, ``xywh``, ``cls``, boolean indexing."""

    def __init__(self, boxes_xyxy: np.ndarray, scores: np.ndarray) -> None:
        self.xyxy = boxes_xyxy.astype(np.float32).reshape(-1, 4)
        self.conf = scores.astype(np.float32).reshape(-1)
        self.cls = np.zeros(len(self.conf), dtype=np.float32)
        xy = (self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        self.xywh = np.concatenate([xy, wh], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index) -> _Detections:
        return _Detections(self.xyxy[index], self.conf[index])


def embedding_weight(quality: float) -> float:
    """How much one frame's embedding counts in its track's aggregate: quality squared favours the best frames."""
    return max(float(quality), 1e-3) ** 2


@dataclass(frozen=True)
class Fold:
    """What :meth:`FaceTracker.fold` did with one embedding."""

    track: Track  # the track the embedding now belongs to (a new one after a split)
    folded: bool  # False: held out (it does not match its track; not voted)
    replaced: Track | None = None  # the track that was split off, when this embedding completed a switch


def matches_track(track: Track, vector: np.ndarray, min_cosine: float) -> bool:
    """Whether an embedding matches its track's own face (True while the track has no embedding yet)."""
    aggregate = track.embedding
    return aggregate is None or float(np.dot(aggregate, vector)) >= min_cosine


class FaceTracker:
    """ByteTrack on face boxes for one camera, plus the aggregated ``Track`` state per track id."""

    def __init__(self, camera: str, cfg: TrackerConfig, frame_rate: float = 30.0) -> None:
        from ultralytics.trackers.byte_tracker import BYTETracker

        args = SimpleNamespace(
            track_high_thresh=cfg.track_high_thresh,
            track_low_thresh=cfg.track_low_thresh,
            new_track_thresh=cfg.new_track_thresh,
            track_buffer=cfg.track_buffer_frames,
            match_thresh=cfg.match_thresh,
            fuse_score=True,
        )
        self.camera = camera
        self.cfg = cfg
        self._tracker = BYTETracker(args)
        self._tracks: dict[int, Track] = {}  # by ByteTrack id
        self._last_id = 0  # vigil's track ids: one per ByteTrack track, and a new one after each identity switch
        self._successors: dict[int, Track] = {}  # split-off track id -> the track that replaced it

    def update(self, faces: list[Face], frame_index: int, mono_ts_s: float) -> list[TrackUpdate]:
        """Associate this frame's faces with tracks; returns the tracks that got a face in this frame.

        Tracking uses boxes only; embeddings are folded in afterwards with :meth:`fold`.
        """
        if faces:
            boxes = np.stack([face.box for face in faces])
            scores = np.array([face.score for face in faces], dtype=np.float32)
        else:
            boxes, scores = np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        rows = self._tracker.update(_Detections(boxes, scores))
        updates = []
        for row in rows:
            track_id, det_index = int(row[4]), int(row[7])
            if not 0 <= det_index < len(faces):
                continue
            face = faces[det_index]
            updates.append(TrackUpdate(self._touch(track_id, face, frame_index, mono_ts_s), face))
        return updates

    def predict(self) -> list[PredictedBox]:
        """A frame not analysed: advance every track one frame without associating (see the module docstring);
        returns the boxes of the confirmed tracks that were matched on the last analysed frame, where the motion
        model puts them on this frame."""
        tracker = self._tracker
        tracker.frame_id += 1
        pool = [t for t in tracker.tracked_stracks if t.is_activated] + tracker.lost_stracks  # update()'s pool
        tracker.multi_predict(pool)
        stale = [t for t in tracker.lost_stracks if tracker.frame_id - t.end_frame > tracker.max_frames_lost]
        for strack in stale:
            strack.mark_removed()
        tracker.lost_stracks = [t for t in tracker.lost_stracks if t not in stale]
        return [
            PredictedBox(self._tracks[strack.track_id], strack.xyxy.astype(np.float32))
            for strack in tracker.tracked_stracks
            if strack.is_activated and strack.track_id in self._tracks
        ]

    def _touch(self, box_id: int, face: Face, frame_index: int, mono_ts_s: float) -> Track:
        track = self._tracks.get(box_id)
        if track is None:
            track = self._tracks[box_id] = self._new_track(face, frame_index, mono_ts_s)
        track.box = face.box
        track.last_frame_index = frame_index
        track.last_mono_ts_s = mono_ts_s
        return track

    def _new_track(self, face: Face, frame_index: int, mono_ts_s: float) -> Track:
        self._last_id += 1
        return Track(self.camera, self._last_id, face.box, frame_index, frame_index, mono_ts_s)

    def fold(self, track: Track, embedding: Embedding, min_cosine: float, crop: FaceCrop | None = None) -> Fold:
        """Fold a new embedding into ``track``, hold it out, or split the track (see the module docstring).

        ``track`` may have been split after its update was made (the pipeline tracks a batch of frames before it
        folds their embeddings): the embedding then goes to the track that replaced it. ``crop``: this face cut from
        its frame; it becomes the track's :attr:`~vigil.types.Track.best_face` when its quality is the best so far.
        """
        track = self.current(track)
        required = self.cfg.identity_switch_hits
        if required == 0 or matches_track(track, embedding.vector, min_cosine):
            track.held_out.clear()  # a passing mismatch (a blurred or turned frame): forgotten, not folded
            self._add_embedding(track, embedding, crop)
            return Fold(track, folded=True)
        track.held_out.append((embedding, crop))
        if len(track.held_out) < required:
            return Fold(track, folded=False)
        box_id = next((key for key, value in self._tracks.items() if value is track), None)
        successor = self._new_track(embedding.aligned.face, track.last_frame_index, track.last_mono_ts_s)
        for held, held_crop in track.held_out:
            self._add_embedding(successor, held, held_crop)
        track.held_out.clear()
        if box_id is not None:
            self._tracks[box_id] = successor
        self._successors[track.track_id] = successor
        return Fold(successor, folded=True, replaced=track)

    def current(self, track: Track) -> Track:
        """``track``, or the track that replaced it after an identity switch (see :meth:`fold`)."""
        while track.track_id in self._successors:
            track = self._successors[track.track_id]
        return track

    def expire(self, now_mono_s: float) -> list[Track]:
        """Remove and return tracks not seen for ``max_track_age_s``."""
        stale = {key: t for key, t in self._tracks.items() if now_mono_s - t.last_mono_ts_s > self.cfg.max_track_age_s}
        for key in stale:
            del self._tracks[key]
        gone = {t.track_id for t in stale.values()}
        self._successors = {old: new for old, new in self._successors.items() if new.track_id not in gone}
        return list(stale.values())

    @property
    def active_tracks(self) -> list[Track]:
        return list(self._tracks.values())

    @staticmethod
    def _add_embedding(track: Track, embedding: Embedding, crop: FaceCrop | None) -> None:
        """Fold one frame's embedding into the track: weighted sum, hit count, best face for the snapshot."""
        weight = embedding_weight(embedding.aligned.quality)
        vector = embedding.vector.astype(np.float32)
        track.embedding_sum = vector * weight if track.embedding_sum is None else track.embedding_sum + vector * weight
        track.weight_sum += weight
        track.hits += 1
        if is_better_face(crop, track.best_face):
            track.best_face = crop


def is_better_face(candidate: FaceCrop | None, best: FaceCrop | None) -> bool:
    """Whether ``candidate`` should replace ``best`` as a track's best face: strictly higher quality (the earlier
    face wins a tie, so a steady track keeps the snapshot it alerted with)."""
    return candidate is not None and (best is None or candidate.quality > best.quality)
