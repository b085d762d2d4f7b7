"""vigil.track: the identity gate that splits a track whose box passed to another face."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.config import TrackerConfig
from vigil.track import FaceTracker, matches_track
from vigil.types import AlignedFace, Embedding, Face, FaceCrop

SAME, OTHER = np.array([1.0, 0.0, 0.0], np.float32), np.array([0.0, 1.0, 0.0], np.float32)


def embedding(vector: np.ndarray, quality: float = 0.8) -> Embedding:
    face = Face(np.array([10, 10, 70, 82], np.float32), 0.9, np.zeros((5, 2), np.float32))
    return Embedding(AlignedFace(face, np.zeros((4, 4, 3), np.uint8), quality), vector)


def tracked(tracker: FaceTracker):
    face = Face(np.array([10, 10, 70, 82], np.float32), 0.9, np.zeros((5, 2), np.float32))
    return tracker.update([face], 0, 0.0)[0].track


@pytest.mark.parametrize(
    ("sequence", "switch_hits", "folded", "split_at"),
    [
        ("SSSS", 3, "TTTT", None),
        ("SSOSS", 3, "TTFTT", None),  # one odd frame (blur, a turned head): held out, then forgotten
        ("SOOSOO", 3, "TFFTFF", None),  # never three in a row
        ("SSOOOO", 3, "TTFFTT", 4),  # the third odd embedding in a row starts a new track from the three
        ("SOOO", 0, "TTTT", None),  # gate off: everything is folded into the one track
        ("SO", 1, "TT", 1),
    ],
)
def test_fold_holds_out_then_splits(sequence, switch_hits, folded, split_at) -> None:
    tracker = FaceTracker("cam", TrackerConfig(identity_switch_hits=switch_hits))
    track = tracked(tracker)
    results = [tracker.fold(track, embedding(SAME if c == "S" else OTHER), min_cosine=0.5) for c in sequence]
    assert "".join("T" if r.folded else "F" for r in results) == folded
    splits = [i for i, r in enumerate(results) if r.replaced is not None]
    assert splits == ([] if split_at is None else [split_at])
    if split_at is not None:
        successor = results[split_at].track
        assert successor.track_id != track.track_id and results[split_at].replaced is track
        assert successor.hits == switch_hits + len(sequence) - split_at - 1  # the held-out ones, then the later ones
        assert float(successor.embedding @ OTHER) > 0.99
        assert tracker.active_tracks == [successor]  # the box now belongs to the new track
        assert all(r.track is successor for r in results[split_at:])  # later updates of the old track follow it


@pytest.mark.parametrize(
    ("vector", "min_cosine", "matches"), [(SAME, 0.5, True), (OTHER, 0.5, False), (OTHER, -0.1, True)]
)
def test_matches_track(vector, min_cosine, matches) -> None:
    tracker = FaceTracker("cam", TrackerConfig())
    track = tracked(tracker)
    assert matches_track(track, vector, min_cosine)  # a track without an embedding matches anything
    tracker.fold(track, embedding(SAME), min_cosine)
    assert matches_track(track, vector, min_cosine) is matches


def crop(frame_index: int, quality: float) -> FaceCrop:
    return FaceCrop(frame_index, frame_index / 30, quality, np.zeros(4, np.float32), np.zeros((2, 2, 3), np.uint8))


@pytest.mark.parametrize(
    ("sequence", "qualities", "best_frame"),
    [
        ("SSSSS", [0.3, 0.6, 0.9, 0.5, 0.4], 2),  # rises then falls: the peak stays
        ("SSSSS", [0.5, 0.5, 0.5, 0.5, 0.5], 0),  # a tie keeps the first
        ("SOOOS", [0.9, 0.2, 0.7, 0.4, 0.5], 2),  # split after three odd ones: the successor's best of its own faces
        ("SOSSS", [0.5, 0.9, 0.6, 0.4, 0.4], 2),  # a held-out face that is then forgotten is never the best
    ],
)
def test_best_face_is_the_highest_quality_crop_of_the_track(sequence, qualities, best_frame) -> None:
    tracker = FaceTracker("cam", TrackerConfig(identity_switch_hits=3))
    track = tracked(tracker)
    for index, (code, quality) in enumerate(zip(sequence, qualities)):
        vector = SAME if code == "S" else OTHER
        result = tracker.fold(track, embedding(vector, quality), 0.5, crop(index, quality))
        track = result.track if result.folded else track
    (current,) = tracker.active_tracks
    assert current.best_face is not None and current.best_face.frame_index == best_frame
