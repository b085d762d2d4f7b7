"""Frames a camera's detect_fps does not analyse are tracked: the tracker advances one frame on each (Kalman step,
lost tracks age) and their results carry the confirmed tracks' predicted boxes (vigil.track.FaceTracker.predict)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_pipeline import FRONTAL_LANDMARKS, PEOPLE, ScriptedAnalyzer
from vigil.alerts import AlertDispatcher, JsonlSink
from vigil.config import CameraConfig, RulesConfig, TrackerConfig
from vigil.pipeline import FrameResult, WatchPipeline
from vigil.rules import Gallery, RulesEngine
from vigil.track import FaceTracker
from vigil.types import Face, Frame

FPS = 30.0
WIDTH, HEIGHT = 60.0, 72.0
START = np.array([40.0, 50.0])
# the face's top-left corner moves this many pixels a frame (x, y): 6 px is a tenth of its width per frame
VELOCITY = np.array([6.0, 2.0])
# a predicted box's centre is within this many pixels of the face's true centre, once the track has been detected
# WARM_UP times (the Kalman filter starts with zero velocity and learns it from the detections)
TOLERANCE_PX = 3.0
WARM_UP = 5


def true_box(index: int, velocity: np.ndarray = VELOCITY) -> np.ndarray:
    x, y = START + velocity * index
    return np.array([x, y, x + WIDTH, y + HEIGHT], np.float32)


def face_at(box: np.ndarray) -> Face:
    return Face(box, 0.9, FRONTAL_LANDMARKS + box[:2])


def centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def run_tracker(every: int, frames: int, visible=lambda i: True, velocity=VELOCITY, cfg=None, analysed=None):
    """Frame by frame: every ``every``-th frame (or those ``analysed`` picks) is analysed (update with the face where
    it is, when visible), the others predicted. Returns per frame ('update' | 'predict', [(track id, box)])."""
    tracker = FaceTracker("cam", cfg or TrackerConfig())
    analysed = analysed or (lambda i: i % every == 0)
    out = []
    for index in range(frames):
        if analysed(index):
            faces = [face_at(true_box(index, velocity))] if visible(index) else []
            boxes = [(u.track.track_id, u.face.box) for u in tracker.update(faces, index, index / FPS)]
            out.append(("update", boxes))
        else:
            out.append(("predict", [(p.track.track_id, p.box) for p in tracker.predict()]))
    return out


@pytest.mark.parametrize("every", [2, 3, 5])
def test_predicted_boxes_follow_a_face_moving_at_constant_velocity(every):
    out = run_tracker(every, 60)
    ids = {track_id for _, boxes in out for track_id, _ in boxes}
    assert ids == {1}  # one track, its id kept across every gap
    warmed = WARM_UP * every
    for index, (kind, boxes) in enumerate(out):
        if kind == "predict" and index > 1:
            assert len(boxes) == 1, f"frame {index}: the confirmed track must be boxed on every frame"
        if kind == "predict" and index > warmed:
            (_, box) = boxes[0]
            error = float(np.linalg.norm(centre(box) - centre(true_box(index))))
            assert error <= TOLERANCE_PX, f"frame {index}: predicted {box}, truth {true_box(index)}"
            # and the box lies beyond the last detection, towards the next one (it moves, it is not held still)
            last = (index // every) * every
            assert centre(box)[0] > centre(true_box(last))[0] + VELOCITY[0] * (index - last) - TOLERANCE_PX


def test_the_next_update_associates_against_the_predicted_state():
    """A face moving 12 px a frame, detected on every frame up to 15 (the filter learns its velocity), then every
    5th: it is 60 px (its width) further at each detection. Stepped once per frame, the track is there to meet it;
    stepped once per analysed frame (the tracker before predict), it would be 48 px behind (IoU 0.11) and lost."""
    fast = np.array([12.0, 0.0])
    out = run_tracker(0, 61, velocity=fast, analysed=lambda i: i <= 15 or i % 5 == 0)
    updates = [boxes for kind, boxes in out if kind == "update"]
    assert all(len(boxes) == 1 for boxes in updates[2:])  # from the second detection on (confirmed)
    assert {track_id for boxes in updates for track_id, _ in boxes} == {1}


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize(
    ("back_at", "same_track"),
    [
        (39, True),  # 9 frames after its last detection (frame 30): within track_buffer_frames=9, found again
        (42, False),  # 12 frames: its lost track was dropped after 9 frames, a new one starts
        (45, False),
    ],
)
def test_a_lost_track_survives_the_same_number_of_camera_frames_with_detect_fps(every, back_at, same_track):
    """Without the predicted frames counting, a camera analysed every 3rd frame would keep a lost track 3x as long."""
    cfg = TrackerConfig(track_buffer_frames=9)
    still = np.zeros(2)
    frames = back_at + 2 * every + 1  # a new track is reported from its second detection on
    out = run_tracker(every, frames, visible=lambda i: i <= 30 or i >= back_at, velocity=still, cfg=cfg)
    first_id = out[0][1][0][0]
    returned = [boxes[0][0] for kind, boxes in out[back_at:] if kind == "update" and boxes]
    assert returned and (returned[0] == first_id) is same_track
    # lost from the first analysed frame that missed the face: not drawn on the frames in between
    missed = 30 + every
    assert all(not boxes for kind, boxes in out[missed:back_at])


class MovingAnalyzer(ScriptedAnalyzer):
    """ScriptedAnalyzer's faces (identity in pixel (0, 0), frame index in (0, 2)), moving at ``VELOCITY``."""

    def detect(self, images):
        out = []
        for image, faces in zip(images, super().detect(images)):
            index = int(image[0, 2, 0])
            out.append([face_at(true_box(index)) for _ in faces])
        return out


def pipeline_for(tmp_path, detect_fps: float | None, tracker: TrackerConfig | None = None) -> WatchPipeline:
    rules = RulesConfig(match_threshold=0.5, margin=0.05, min_hits=2, confirm_hits=4, cooldown_s=60)
    return WatchPipeline(
        MovingAnalyzer(),
        Gallery.from_people(PEOPLE),
        RulesEngine(rules, PEOPLE),
        AlertDispatcher([JsonlSink(tmp_path / "events.jsonl")]),
        {"cam": CameraConfig(name="cam", source="a.mp4", detect_fps=detect_fps)},
        tracker or TrackerConfig(),
        None,
        frame_rate=FPS,
    )


def frames_of(codes: list[int]) -> list[Frame]:
    frames = []
    for index, code in enumerate(codes):
        image = np.zeros((480, 960, 3), np.uint8)
        image[0, 0, 0], image[0, 2, 0] = code, index
        frames.append(Frame("cam", index, 1000.0 + index / FPS, index / FPS, image))
    return frames


def run(pipeline: WatchPipeline, codes: list[int], batch: int = 4) -> list[FrameResult]:
    frames = frames_of(codes)
    results = []
    for start in range(0, len(frames), batch):
        results += pipeline.process(frames[start : start + batch])
    return results


@pytest.mark.parametrize(("detect_fps", "analysed"), [(None, 36), (15.0, 18), (10.0, 12)])
def test_frames_not_analysed_get_predicted_boxes_and_no_decisions(tmp_path, detect_fps, analysed):
    pipeline = pipeline_for(tmp_path, detect_fps)
    results = run(pipeline, [1] * 36)
    analysed_frames = {r.frame.index for r in results if r.analysed}
    assert len(analysed_frames) == analysed
    assert pipeline.counters.frames == 36 and pipeline.counters.frames_not_analysed == 36 - analysed
    assert set(pipeline.analyzer.embedded_frames) <= analysed_frames  # nothing embedded on a predicted frame
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in events] == ["provisional", "confirmed"]  # ann, once each
    assert {e["frame_index"] for e in events} <= analysed_frames  # decisions only on analysed frames
    track_ids = set()
    for result in results:
        if result.analysed:
            assert result.predicted == ()
            track_ids |= {u.track.track_id for u in result.updates}
        else:
            assert result.updates == [] and result.events == []
            assert len(result.predicted) == 1  # the face is boxed on every frame in between
            track_ids |= {p.track.track_id for p in result.predicted}
    assert track_ids == {1}


@pytest.mark.parametrize("detect_fps", [None, 10.0])
def test_a_gone_face_ends_its_track_at_the_same_frame_with_or_without_detect_fps(tmp_path, detect_fps):
    """max_track_age_s is checked on every frame: the face's last detection is frame 27 (analysed in both), its track
    is 0.5 s old after frame 42, and ends on frame 43 (with detect_fps 10 the next analysed frame would be 45)."""
    pipeline = pipeline_for(tmp_path, detect_fps, TrackerConfig(max_track_age_s=0.5))
    codes = [1] * 28 + [0] * 22
    ended = None
    for frame in frames_of(codes):
        pipeline.process([frame])
        if ended is None and frame.index > 27 and not pipeline.trackers["cam"].active_tracks:
            ended = frame.index
    assert ended == 43
    assert not pipeline.embed_states  # the ended track's schedule state went with it
