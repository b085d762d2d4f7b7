"""Alignment geometry (Umeyama similarity, warping onto the template) and the face-quality score."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vigil.align import Aligner, align_face, estimate_similarity, face_quality
from vigil.types import Face

# Roughly the 150x150 dlib-chip template (the exact one comes from models/manifest.yaml).
TEMPLATE = np.array([[45.6, 45.2], [102.7, 45.0], [73.5, 75.3], [51.2, 101.3], [99.1, 100.6]])
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize(
    "angle, scale, tx, ty",
    [(0, 1, 0, 0), (30, 0.5, 10, -20), (-75, 3.2, 400, 120), (179, 0.05, -3, 7), (12, 1.7, 0.25, 0.75)],
)
def test_similarity_recovers_known_transform(angle, scale, tx, ty):
    src = np.random.default_rng(1).uniform(0, 200, size=(5, 2))
    truth = similarity(angle, scale, tx, ty)
    np.testing.assert_allclose(estimate_similarity(src, apply(truth, src)), truth, atol=1e-9)


def test_similarity_never_reflects():
    src = np.random.default_rng(2).uniform(0, 100, size=(5, 2))
    mirrored = src * np.array([-1.0, 1.0])
    matrix = estimate_similarity(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_similarity_is_least_squares_under_noise():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 100, size=(5, 2))
    truth = similarity(20, 1.3, 5, 5)
    dst = apply(truth, src) + rng.normal(0, 0.5, size=(5, 2))
    best = np.sum((apply(estimate_similarity(src, dst), src) - dst) ** 2)
    assert best <= np.sum((apply(truth, src) - dst) ** 2) + 1e-9


@pytest.mark.parametrize(
    "src, dst",
    [(np.zeros((5, 2)), np.ones((5, 2))), (np.ones((5, 3)), np.ones((5, 3))), (np.ones((5, 2)), np.ones((4, 2)))],
)
def test_similarity_rejects_degenerate_input(src, dst):
    with pytest.raises(ValueError):
        estimate_similarity(src, dst)


def dotted_image(landmarks: np.ndarray, size: tuple[int, int], radius: int) -> np.ndarray:
    image = np.full((size[1], size[0], 3), 40, np.uint8)
    for (x, y), colour in zip(landmarks, COLOURS):
        cv2.circle(image, (int(round(x)), int(round(y))), radius, colour, -1, lineType=cv2.LINE_AA)
    return image


def dot_centres(chip: np.ndarray) -> np.ndarray:
    """Centroid of each colour's pixels (weighted by closeness to the colour)."""
    centres = []
    ys, xs = np.mgrid[0 : chip.shape[0], 0 : chip.shape[1]]
    for colour in COLOURS:
        distance = np.linalg.norm(chip.astype(float) - np.array(colour, float), axis=2)
        weight = np.clip(1 - distance / 120, 0, 1)
        centres.append([(weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()])
    return np.array(centres)


@pytest.mark.parametrize(
    "angle, scale, image_size",
    [
        (0, 1.0, (200, 200)),
        (25, 0.6, (160, 120)),  # upsampling into the chip
        (-40, 2.0, (400, 380)),
        (10, 4.0, (800, 700)),  # shrinks 4x: goes through the anti-aliasing path
    ],
)
def test_alignment_puts_landmarks_on_template(angle, scale, image_size):
    # place the template into the image with a known similarity, then align back
    centre = np.array(image_size, float) / 2
    to_image = similarity(angle, scale, 0, 0)
    to_image[:, 2] = centre - apply(to_image, np.array([[75.0, 75.0]]))[0]
    landmarks = apply(to_image, TEMPLATE)
    image = dotted_image(landmarks, image_size, radius=max(2, int(3 * scale)))
    chip = align_face(image, landmarks, TEMPLATE, 150)
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    np.testing.assert_allclose(dot_centres(chip), TEMPLATE, atol=1.0)


@pytest.mark.parametrize("border, corner", [("constant", 0), ("replicate", 40)])
def test_border_mode(border, corner):
    landmarks = TEMPLATE * 0.2 - 8  # face at the top-left edge: the chip's corner lies outside the image
    image = np.full((60, 60, 3), 40, np.uint8)
    chip = align_face(image, landmarks, TEMPLATE, 150, border=border)
    assert int(chip[0, 0, 0]) == corner and int(chip[-1, -1, 0]) == 40


def make_face(width: float = 100, score: float = 0.9, nose_dx: float = 0.0, x0: float = 100) -> Face:
    scale = width / 150
    landmarks = (TEMPLATE - 75) * scale + np.array([x0 + width / 2, 200])
    landmarks[2, 0] += nose_dx * width
    box = np.array([x0, 200 - width / 2, x0 + width, 200 + width / 2], np.float32)
    return Face(box=box, score=score, landmarks=landmarks.astype(np.float32))


FRAME = (480, 640, 3)


@pytest.mark.parametrize(
    "better, worse",
    [
        (make_face(width=90), make_face(width=40)),
        (make_face(width=40), make_face(width=14)),
        (make_face(nose_dx=0.0), make_face(nose_dx=0.15)),
        (make_face(nose_dx=0.1), make_face(nose_dx=0.3)),
        (make_face(score=0.95), make_face(score=0.4)),
        (make_face(x0=100), make_face(x0=-60)),  # partly outside the frame
    ],
)
def test_quality_ordering(better, worse):
    assert face_quality(better, FRAME) > face_quality(worse, FRAME)


@pytest.mark.parametrize("face", [make_face(width=500), make_face(width=1), make_face(nose_dx=5), make_face(score=3)])
def test_quality_in_unit_range(face):
    assert 0.0 <= face_quality(face, FRAME) <= 1.0


def test_aligner_returns_aligned_face():
    face = make_face(width=120)
    image = dotted_image(face.landmarks, (640, 480), radius=3)
    aligned = Aligner(TEMPLATE, 150).align(image, face)
    assert aligned.chip.shape == (150, 150, 3)
    assert aligned.face is face and 0 < aligned.quality <= 1
    np.testing.assert_allclose(dot_centres(aligned.chip), TEMPLATE, atol=1.0)


@pytest.mark.parametrize(
    "template, size, border",
    [(np.zeros((4, 2)), 150, "replicate"), (TEMPLATE, 0, "replicate"), (TEMPLATE, 150, "wrap")],
)
def test_aligner_rejects_bad_settings(template, size, border):
    with pytest.raises(ValueError):
        Aligner(template, size, border)
