"""The wired pipeline (tracker, rules, sinks) with a fake face analyzer: which alerts come out, with which fields."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vigil.alerts import AlertDispatcher, JsonlSink
from vigil.config import RulesConfig, TrackerConfig
from vigil.embed_schedule import EmbedSchedule
from vigil.pipeline import WatchPipeline
from vigil.rules import Gallery, RulesEngine
from vigil.types import AlignedFace, Embedding, Face, Frame, ListKind, Person

DIM = 8
# A frontal face's five points inside a 60 x 72 box (eyes, nose, mouth corners), offset by the box corner
FRONTAL_LANDMARKS = np.array([[18, 28], [42, 28], [30, 42], [20, 56], [40, 56]], np.float32)


def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def basis(i: int) -> np.ndarray:
    vector = np.zeros(DIM, np.float32)
    vector[i] = 1.0
    return vector


PEOPLE = [
    Person("ann", "Ann A", ListKind.DENY, None, basis(0), basis(0)[None]),
    Person("bob", "Bob B", ListKind.VIP, None, basis(1), basis(1)[None]),
    Person("cat", "Cat C", ListKind.ALLOW, None, basis(2), basis(2)[None]),
]


class ScriptedAnalyzer:
    """Each frame's image carries the identity to show in pixel (0, 0): 0 none, 1 ann, 2 bob, 3 cat, 9 stranger;
    pixel (0, 1) is the face's detector score in percent (default 90), pixel (0, 3) the embedded face's quality in
    percent (default 80)."""

    min_face_px = 20  # the global minimum face size (a camera may have its own)

    def __init__(self, width_px: float = 60.0) -> None:
        self.width_px = width_px
        self.embedded_frames: list[int] = []

    def detect(self, images):
        out = []
        for image in images:
            if int(image[0, 0, 0]) == 0:
                out.append([])
                continue
            box = np.array([100, 50, 100 + self.width_px, 50 + self.width_px * 1.2], np.float32)
            score = int(image[0, 1, 0]) / 100 if image[0, 1, 0] else 0.9
            out.append([Face(box, score, FRONTAL_LANDMARKS + box[:2])])
        return out

    def embed_faces(self, items):
        embeddings = []
        for image, face in items:
            code = int(image[0, 0, 0])
            self.embedded_frames.append(int(image[0, 2, 0]))
            quality = int(image[0, 3, 0]) / 100 if image[0, 3, 0] else 0.8
            vector = unit(basis(code - 1) + 0.1 * basis(5)) if code != 9 else unit(basis(6) + basis(7))
            embeddings.append(Embedding(AlignedFace(face, np.zeros((8, 8, 3), np.uint8), quality), vector))
        return embeddings


SHADE_STEP = 20  # frame i paints its face box grey level 20 * (i + 1): the snapshot tells which frame it came from


def frames_showing(
    codes: list[int], camera: str = "cam", scores: list[int] | None = None, qualities: list[int] | None = None
) -> list[Frame]:
    frames = []
    for index, code in enumerate(codes):
        image = np.zeros((240, 320, 3), np.uint8)
        image[50:110, 100:160] = min(SHADE_STEP * (index + 1), 255)
        image[0, 0, 0] = code
        image[0, 1, 0] = scores[index] if scores else 0
        image[0, 2, 0] = index
        image[0, 3, 0] = qualities[index] if qualities else 0
        frames.append(Frame(camera, index, index / 30.0, index / 30.0, image))
    return frames


def run_pipeline(
    tmp_path,
    codes,
    rules=None,
    width_px=60.0,
    schedule=None,
    scores=None,
    tracker=None,
    qualities=None,
    update_snapshot=False,
):
    rules = rules or RulesConfig(match_threshold=0.5, margin=0.05, min_hits=2, confirm_hits=4, cooldown_s=60)
    events_path = tmp_path / "events.jsonl"
    dispatcher = AlertDispatcher([JsonlSink(events_path)])
    pipeline = WatchPipeline(
        ScriptedAnalyzer(width_px),
        Gallery.from_people(PEOPLE),
        RulesEngine(rules, PEOPLE),
        dispatcher,
        {},
        tracker or TrackerConfig(),
        tmp_path / "data",
        embed_schedule=schedule or EmbedSchedule(),
        update_snapshot=update_snapshot,
    )
    frames = frames_showing(codes, "cam", scores, qualities)
    for start in range(0, len(codes), 4):
        pipeline.process(frames[start : start + 4])
    pipeline.close()
    return [json.loads(line) for line in events_path.read_text().splitlines()], pipeline


CASES = [
    ("watchlisted person: provisional then confirmed", [1] * 8, [("ann", "provisional", 1), ("ann", "confirmed", 3)]),
    ("vip alerts with its label", [2] * 8, [("bob", "provisional", 1), ("bob", "confirmed", 3)]),
    ("allow list never alerts", [3] * 8, []),
    ("stranger never alerts", [9] * 20, []),
    ("one frame is not enough", [1, 0, 0, 0, 0, 0, 0, 0], []),
    # the same box shows ann, then bob (a scene cut, people crossing): after 3 embeddings that do not match ann's
    # track, the box gets a new track and bob is alerted on it (with identity_switch_hits: 0 he never is: below)
    (
        "a track that passes to another face is split",
        [1] * 8 + [2] * 8,
        [("ann", "provisional", 1), ("ann", "confirmed", 3), ("bob", "provisional", 11), ("bob", "confirmed", 13)],
    ),
]


@pytest.mark.parametrize("case, codes, expected", CASES, ids=[c[0] for c in CASES])
def test_alerts_from_scripted_frames(tmp_path, case, codes, expected):
    events, _ = run_pipeline(tmp_path, codes)
    assert [(e["person_id"], e["stage"], e["frame_index"]) for e in events] == expected


@pytest.mark.parametrize(
    ("switch_hits", "expected_tracks", "switches", "held_out"), [(3, {1: "ann", 2: "bob"}, 1, 2), (0, {1: "ann"}, 0, 0)]
)
def test_identity_switch_gate(tmp_path, switch_hits, expected_tracks, switches, held_out):
    events, pipeline = run_pipeline(
        tmp_path, [1] * 8 + [2] * 8, tracker=TrackerConfig(identity_switch_hits=switch_hits)
    )
    assert {e["track_id"]: e["person_id"] for e in events} == expected_tracks
    assert (pipeline.counters.identity_switches, pipeline.counters.embeddings_held_out) == (switches, held_out)
    assert pipeline.rules.active_tracks == len(
        pipeline.trackers["cam"].active_tracks
    )  # the split-off track is forgotten


def test_alert_record_has_every_field_and_a_snapshot(tmp_path):
    events, pipeline = run_pipeline(tmp_path, [2] * 6)
    required = {
        "type",
        "stage",
        "person_id",
        "person_name",
        "list",
        "camera",
        "track_id",
        "score",
        "margin",
        "ts",
        "video_ts_s",
        "frame_index",
        "bbox",
        "snapshot",
        "id",
    }
    for event in events:
        assert required <= set(event)
        assert event["type"] == "alert" and event["label"] == "vip" and event["list"] == "vip"
        assert event["ts"].endswith("Z") and event["camera"] == "cam"
        assert len(event["bbox"]) == 4 and event["score"] > 0.9
        assert (tmp_path / "data").exists() and event["snapshot"].endswith(".jpg")
    assert len({e["id"] for e in events}) == len(events)
    assert pipeline.counters.frames == 6


def test_faces_below_min_size_are_tracked_but_never_alerted(tmp_path):
    events, pipeline = run_pipeline(tmp_path, [1] * 8, width_px=12.0)
    assert events == []
    assert pipeline.counters.faces == 8


SCHEDULE_CASES = [
    ("every frame when the interval is 1", EmbedSchedule(0, 1, 0.1), None, list(range(12))),
    ("first hits every frame, then every 4th frame", EmbedSchedule(3, 4, 0.1), None, [0, 1, 2, 6, 10]),
    ("a clearly better face is embedded at once", EmbedSchedule(3, 4, 0.1), [55] * 4 + [95] * 8, [0, 1, 2, 4, 8]),
    ("a slightly better face waits for the interval", EmbedSchedule(3, 4, 0.1), [85] * 4 + [90] * 8, [0, 1, 2, 6, 10]),
]


@pytest.mark.parametrize("case, schedule, scores, expected", SCHEDULE_CASES, ids=[c[0] for c in SCHEDULE_CASES])
def test_embed_schedule_picks_which_frames_of_a_track_are_embedded(tmp_path, case, schedule, scores, expected):
    _, pipeline = run_pipeline(tmp_path, [9] * 12, schedule=schedule, scores=scores)
    assert pipeline.analyzer.embedded_frames == expected
    assert pipeline.counters.embeddings == len(expected)
    assert pipeline.counters.embeddings_skipped == 12 - len(expected)


def test_scheduled_embedding_still_alerts_in_the_same_frames(tmp_path):
    every_frame, _ = run_pipeline(tmp_path / "a", [1] * 40, schedule=EmbedSchedule(0, 1, 0.1))
    scheduled, _ = run_pipeline(tmp_path / "b", [1] * 40, schedule=EmbedSchedule(5, 10, 0.1))
    stages = [(e["stage"], e["frame_index"]) for e in scheduled]
    assert stages == [(e["stage"], e["frame_index"]) for e in every_frame] == [("provisional", 1), ("confirmed", 3)]


# ---------------------------------------------------------------------------------------------------------------------
# Best face per track: the snapshot is the clearest face the track has shown up to the event


def snapshot_frame(path: str) -> int:
    """Which frame a snapshot was cut from, read back from the grey level of its centre (see SHADE_STEP)."""
    import cv2

    image = cv2.imread(path)
    shade = int(image[image.shape[0] // 2, image.shape[1] // 2, 0])
    return round(shade / SHADE_STEP) - 1


BEST_FACE_CASES = [
    # quality per frame (percent); ann is provisional on frame 1, confirmed on frame 5 (confirm_hits 6)
    ("rises then falls: the peak", [30, 50, 70, 95, 60, 40], {"provisional": 1, "confirmed": 3}),
    ("falls from the start: the first", [90, 70, 50, 40, 30, 20], {"provisional": 0, "confirmed": 0}),
    ("rises to the end: the deciding frame", [10, 20, 30, 40, 50, 60], {"provisional": 1, "confirmed": 5}),
    ("a tie keeps the earlier face", [40, 80, 80, 80, 80, 80], {"provisional": 1, "confirmed": 1}),
]


@pytest.mark.parametrize("case, qualities, expected", BEST_FACE_CASES, ids=[c[0] for c in BEST_FACE_CASES])
def test_the_snapshot_is_the_best_face_of_the_track_so_far(tmp_path, case, qualities, expected):
    rules = RulesConfig(match_threshold=0.5, margin=0.05, min_hits=2, confirm_hits=6, cooldown_s=60)
    events, _ = run_pipeline(tmp_path, [1] * 6, rules=rules, qualities=qualities)
    assert {e["stage"]: e["frame_index"] for e in events} == {"provisional": 1, "confirmed": 5}
    assert {e["stage"]: e["snapshot_frame_index"] for e in events} == expected
    assert {e["stage"]: snapshot_frame(e["snapshot"]) for e in events} == expected  # the file holds that face


def test_an_unknown_face_event_stores_its_best_face_too(tmp_path):
    rules = RulesConfig(match_threshold=0.5, margin=0.05, min_hits=2, confirm_hits=4, unknown_events=True)
    events, _ = run_pipeline(tmp_path, [9] * 5, rules=rules, qualities=[20, 90, 40, 30, 30])
    assert [(e["type"], e["frame_index"], e["snapshot_frame_index"]) for e in events] == [("unknown", 3, 1)]
    assert snapshot_frame(events[0]["snapshot"]) == 1


@pytest.mark.parametrize(("update", "provisional_face", "updated"), [(False, 1, 0), (True, 2, 1)])
def test_update_snapshot_replaces_the_file_when_the_track_shows_a_better_face(
    tmp_path, update, provisional_face, updated
):
    # provisional on frame 1 (best so far: frame 1); frame 2 is clearer; confirmed on frame 3 with frame 2's face
    events, pipeline = run_pipeline(tmp_path, [1] * 6, qualities=[30, 50, 90, 70, 60, 60], update_snapshot=update)
    by_stage = {e["stage"]: e for e in events}
    assert by_stage["provisional"]["snapshot_frame_index"] == 1  # the record names the face saved with the alert
    assert snapshot_frame(by_stage["provisional"]["snapshot"]) == provisional_face
    assert snapshot_frame(by_stage["confirmed"]["snapshot"]) == by_stage["confirmed"]["snapshot_frame_index"] == 2
    assert pipeline.counters.snapshots_updated == updated


def test_without_snapshots_no_face_is_cut_and_none_is_recorded(tmp_path):
    rules = RulesConfig(match_threshold=0.5, margin=0.05, min_hits=2, confirm_hits=4)
    events_path = tmp_path / "events.jsonl"
    pipeline = WatchPipeline(
        ScriptedAnalyzer(),
        Gallery.from_people(PEOPLE),
        RulesEngine(rules, PEOPLE),
        AlertDispatcher([JsonlSink(events_path)]),
        {},
        TrackerConfig(),
        None,
    )
    pipeline.process(frames_showing([1] * 4))
    pipeline.close()
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert [(e["snapshot"], e["snapshot_frame_index"]) for e in events] == [(None, None), (None, None)]
    assert all(track.best_face is None for track in pipeline.trackers["cam"].active_tracks)
