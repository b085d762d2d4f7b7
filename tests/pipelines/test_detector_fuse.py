"""Teacher fusion and box utilities on hand-made boxes (pipelines/detector/fuse.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.detector.fuse import FusionParams, fuse_faces, iou_matrix, nms
from vigil.types import Face


def face(x1: float, y1: float, x2: float, y2: float, score: float) -> Face:
    """A face whose landmarks sit at fixed fractions of its box (so fused landmarks are predictable)."""
    w, h = x2 - x1, y2 - y1
    frac = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
    lms = np.array([x1, y1]) + frac * np.array([w, h])
    return Face(box=np.array([x1, y1, x2, y2], np.float32), score=score, landmarks=lms.astype(np.float32))


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([0, 0, 10, 10], [2, 2, 8, 8], 36 / 100),
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # degenerate boxes do not divide by zero
    ],
)
def test_iou_matrix(a, b, expected):
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


@pytest.mark.parametrize(
    "boxes, scores, thr, expected",
    [
        ([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], [0.9, 0.8, 0.7], 0.5, [0, 2]),
        ([[0, 0, 10, 10], [1, 1, 11, 11]], [0.5, 0.9], 0.5, [1]),
        ([[0, 0, 10, 10], [1, 1, 11, 11]], [0.5, 0.9], 0.9, [1, 0]),  # IoU 0.68 < 0.9: both kept
        ([], [], 0.5, []),
    ],
)
def test_nms(boxes, scores, thr, expected):
    assert nms(np.array(boxes, dtype=float).reshape(-1, 4), np.array(scores), thr).tolist() == expected


P = FusionParams(iou_thr=0.5, min_votes=2, solo_score=0.85, min_teacher_score=0.3)

FUSION_CASES = [
    # (description, per-teacher faces, expected fused boxes (rounded), expected scores)
    (
        "two teachers agree",
        {"a": [face(0, 0, 100, 100, 0.8)], "b": [face(0, 0, 100, 100, 0.6)]},
        [[0, 0, 100, 100]],
        [0.7],
    ),
    ("weighted box mean", {"a": [face(0, 0, 100, 100, 0.9)], "b": [face(10, 0, 110, 100, 0.3)]}, None, None),
    ("single unconfident teacher dropped", {"a": [face(0, 0, 100, 100, 0.6)], "b": []}, [], []),
    (
        "single very confident teacher kept at half score",
        {"a": [face(0, 0, 100, 100, 0.9)]},
        [[0, 0, 100, 100]],
        [0.45],
    ),
    (
        "no overlap: two solo unconfident faces dropped",
        {"a": [face(0, 0, 50, 50, 0.7)], "b": [face(200, 200, 250, 250, 0.7)]},
        [],
        [],
    ),
    ("one teacher cannot vote twice", {"a": [face(0, 0, 100, 100, 0.7), face(2, 2, 102, 102, 0.65)]}, [], []),
    ("below min teacher score ignored", {"a": [face(0, 0, 100, 100, 0.2)], "b": [face(0, 0, 100, 100, 0.25)]}, [], []),
    (
        "two faces, three teachers",
        {
            "a": [face(0, 0, 40, 40, 0.9), face(100, 100, 140, 140, 0.6)],
            "b": [face(2, 2, 42, 42, 0.9), face(101, 100, 141, 140, 0.6)],
            "c": [face(300, 300, 340, 340, 0.5)],
        },
        [[1, 1, 41, 41], [100.5, 100, 140.5, 140]],
        [0.9, 0.6],
    ),
]


@pytest.mark.parametrize("desc, per_teacher, boxes, scores", FUSION_CASES, ids=[c[0] for c in FUSION_CASES])
def test_fuse_faces(desc, per_teacher, boxes, scores):
    fused = fuse_faces(per_teacher, P)
    if boxes is None:  # the weighted-mean case: (0.9 * 0 + 0.3 * 10) / 1.2 = 2.5
        assert len(fused) == 1
        np.testing.assert_allclose(fused[0].box, [2.5, 0, 102.5, 100], atol=1e-4)
        return
    assert [np.round(f.box, 2).tolist() for f in fused] == boxes
    assert [f.score for f in fused] == pytest.approx(scores)


def test_fused_landmarks_are_score_weighted_means():
    a, b = face(0, 0, 100, 100, 0.6), face(20, 0, 120, 100, 0.4)
    fused = fuse_faces({"a": [a], "b": [b]}, FusionParams(iou_thr=0.3))
    assert len(fused) == 1
    expected = 0.6 * a.landmarks + 0.4 * b.landmarks
    np.testing.assert_allclose(fused[0].landmarks, expected, atol=1e-4)
    assert fused[0].landmarks.shape == (5, 2) and fused[0].landmarks.dtype == np.float32


@pytest.mark.parametrize(
    "per_teacher, kept, expected",
    [
        ({"a": [face(0, 0, 100, 100, 0.9)]}, [face(0, 0, 100, 100, 0.9)], []),  # kept: nothing unconfirmed
        ({"a": [face(200, 0, 240, 40, 0.6)]}, [face(0, 0, 100, 100, 0.9)], [[200, 0, 240, 40]]),
        ({"a": [face(200, 0, 240, 40, 0.35)]}, [], []),  # below min_score: ignored
        ({"a": [face(10, 10, 50, 50, 0.6)]}, [face(0, 0, 100, 100, 0.9)], []),  # inside a kept face
        ({"a": [face(200, 0, 240, 40, 0.6)], "b": [face(201, 0, 241, 40, 0.5)]}, [], [[200, 0, 240, 40]]),  # merged
    ],
)
def test_unconfirmed_boxes(per_teacher, kept, expected):
    from pipelines.detector.fuse import unconfirmed_boxes

    assert np.round(unconfirmed_boxes(per_teacher, kept, min_score=0.4)).tolist() == expected
