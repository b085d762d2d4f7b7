"""Landmark refinement: crop geometry, mirror averaging, the analyzer's use of it, and the shipped model on LFW."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.analyzer import FaceAnalyzer
from vigil.refine import LandmarkRefiner, RefiningAligner, crop_transform, points_to_frame, unmirror_points
from vigil.types import AlignedFace, Face

SYMMETRIC = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.38, 0.7], [0.62, 0.7]], np.float32)


def face(box, landmarks=None, score=0.9) -> Face:
    return Face(
        box=np.asarray(box, np.float32),
        score=score,
        landmarks=np.zeros((5, 2), np.float32) if landmarks is None else landmarks,
    )


@pytest.mark.parametrize(
    "box, crop_px, context",
    [
        ((10, 20, 110, 140), 96, 1.4),  # taller than wide: the side is the height
        ((0, 0, 30, 30), 64, 1.0),
        ((200.5, 50.25, 260.5, 100.25), 128, 2.0),
    ],
)
def test_crop_transform_centres_the_box_and_scales_its_longer_side(box, crop_px, context):
    m = crop_transform(np.array(box), crop_px, context)
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    assert np.allclose(m[:, :2] @ centre + m[:, 2], [crop_px / 2, crop_px / 2])
    side = max(box[2] - box[0], box[3] - box[1])
    assert m[0, 0] == pytest.approx(crop_px / (context * side))
    points = np.array([[box[0], box[1]], [box[2], box[3]], centre])
    assert np.allclose(points_to_frame(points @ m[:, :2].T + m[:, 2], m), points, atol=1e-4)


@pytest.mark.parametrize(
    "points, width, expected",
    [
        # a left-right symmetric face reads the same in its mirror image
        (SYMMETRIC * 100, 100, SYMMETRIC * 100),
        # image-left eye at x=30 in the mirror is the image-right eye at x=70 in the original
        ([[30, 40], [60, 40], [50, 55], [35, 70], [65, 70]], 100, [[40, 40], [70, 40], [50, 55], [35, 70], [65, 70]]),
    ],
)
def test_unmirror_points_swaps_sides_and_reflects_x(points, width, expected):
    assert np.allclose(unmirror_points(np.array(points, np.float32), width), expected)


class FixedModel:
    """Answers the same crop-unit points for every crop (and counts what it was shown)."""

    def __init__(self, points, crop_px=96):
        self.points = np.asarray(points, np.float32)
        self.crop_px = crop_px
        self.crops_seen = 0

    def predict(self, crops):
        self.crops_seen += len(crops)
        return np.repeat(self.points[None], len(crops), axis=0)


@pytest.mark.parametrize(
    "mirror, points, expected_crop_units",
    [
        (False, SYMMETRIC, SYMMETRIC),
        (True, SYMMETRIC, SYMMETRIC),
        # a model that always puts the nose right of centre: the mirror's reading cancels it
        (True, [[0.35, 0.4], [0.65, 0.4], [0.6, 0.55], [0.38, 0.7], [0.62, 0.7]], SYMMETRIC),
        (
            False,
            [[0.35, 0.4], [0.65, 0.4], [0.6, 0.55], [0.38, 0.7], [0.62, 0.7]],
            [[0.35, 0.4], [0.65, 0.4], [0.6, 0.55], [0.38, 0.7], [0.62, 0.7]],
        ),
    ],
)
def test_refiner_maps_model_points_back_to_the_frame(mirror, points, expected_crop_units):
    image = np.zeros((240, 320, 3), np.uint8)
    original = face((100, 60, 160, 140), score=0.77)
    model = FixedModel(points)
    refiner = LandmarkRefiner(model, context=1.5, mirror=mirror)
    (refined,) = refiner.refine([(image, original)])
    m = crop_transform(original.box, 96, 1.5)
    assert np.allclose(refined.landmarks, points_to_frame(np.asarray(expected_crop_units) * 96, m), atol=1e-3)
    assert np.array_equal(refined.box, original.box) and refined.score == original.score
    assert model.crops_seen == (2 if mirror else 1)


def test_refiner_on_nothing_runs_no_model():
    model = FixedModel(SYMMETRIC)
    assert LandmarkRefiner(model, context=1.4).refine([]) == []
    assert model.crops_seen == 0


def test_refiner_rejects_a_context_below_one():
    with pytest.raises(ValueError):
        LandmarkRefiner(FixedModel(SYMMETRIC), context=0.8)


class RecordingAligner:
    template = np.zeros((5, 2), np.float32)
    chip_size = 8

    def __init__(self):
        self.faces = []

    def align(self, image, f):
        self.faces.append(f)
        return AlignedFace(face=f, chip=np.zeros((8, 8, 3), np.uint8), quality=1.0)


class OnesEmbedder:
    def embed(self, chips):
        return np.ones((len(chips), 4), np.float32) / 2


@pytest.mark.parametrize("with_refiner", [False, True])
def test_analyzer_aligns_refined_faces_only_when_a_refiner_is_set(with_refiner):
    image = np.zeros((200, 200, 3), np.uint8)
    detected = face((50, 50, 110, 120), landmarks=np.full((5, 2), 7.0, np.float32))
    aligner = RecordingAligner()
    refiner = LandmarkRefiner(FixedModel(SYMMETRIC), context=1.4) if with_refiner else None
    analyzer = FaceAnalyzer(detector=None, aligner=aligner, embedder=OnesEmbedder(), min_face_px=10, refiner=refiner)
    analyzer.embed_faces([(image, detected)])
    got = aligner.faces[0].landmarks
    if with_refiner:
        expected = points_to_frame(SYMMETRIC * 96, crop_transform(detected.box, 96, 1.4))
        assert np.allclose(got, expected, atol=1e-3) and analyzer.times.seconds["refine"] > 0
    else:
        assert np.array_equal(got, detected.landmarks) and analyzer.times.seconds["refine"] == 0


def test_refining_aligner_refines_then_aligns():
    inner = RecordingAligner()
    aligner = RefiningAligner(inner, LandmarkRefiner(FixedModel(SYMMETRIC), context=1.4))
    detected = face((20, 20, 80, 90))
    aligner.align(np.zeros((120, 120, 3), np.uint8), detected)
    assert np.allclose(
        inner.faces[0].landmarks, points_to_frame(SYMMETRIC * 96, crop_transform(detected.box, 96, 1.4)), atol=1e-3
    )
    assert aligner.chip_size == inner.chip_size


@pytest.mark.parametrize("detected, refined_expected", [(True, True), (False, False)])
def test_eval_face_source_refines_detected_faces_but_not_the_fixed_fallback(detected, refined_expected):
    from vigil.eval.face_source import FaceSource, centre_face

    image = np.zeros((250, 250, 3), np.uint8)
    found = face((90, 90, 160, 170), landmarks=np.full((5, 2), 120.0, np.float32))
    inner = RecordingAligner()
    aligner = RefiningAligner(inner, LandmarkRefiner(FixedModel(SYMMETRIC), context=1.4))
    source = FaceSource(lambda images: [[found] if detected else [] for _ in images], aligner, fallback="centre")
    source.chips([image])
    unrefined_points = found.landmarks if detected else centre_face(image.shape).landmarks
    assert (not np.allclose(inner.faces[0].landmarks, unrefined_points)) is refined_expected
