"""Template derivation helper (pipelines/recognizer/template.py): which detection belongs to dlib's face box."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.recognizer.template import nearest_box_centre

BOX = np.array([100.0, 100.0, 200.0, 200.0])  # centre (150, 150), width 100


@pytest.mark.parametrize(
    "centres, expected",
    [
        ([[150, 150]], 0),
        ([[10, 10], [160, 140], [150, 190]], 1),  # nearest of several
        ([[150, 201]], None),  # 51 px away: more than half the box width
        ([[150, 199]], 0),
    ],
)
def test_nearest_box_centre(centres, expected):
    assert nearest_box_centre(np.array(centres, dtype=float), BOX) == expected


@pytest.mark.parametrize(
    "template",
    [
        [[44.404, 44.787], [104.445, 46.809], [73.551, 81.358], [47.587, 105.308], [97.727, 104.936]],
        [[45.51, 45.099], [102.587, 45.077], [73.507, 75.743], [51.582, 101.687], [98.925, 101.113]],
    ],
)
def test_symmetrized_template_is_its_own_mirror_image(template):
    from pipelines.recognizer.template import symmetrize

    sym = symmetrize(np.array(template))
    assert np.allclose(sym, symmetrize(sym))  # idempotent: already symmetric
    assert sym[2, 0] == pytest.approx(74.5)  # the nose on the chip's vertical axis (150 px chip)
    assert sym[0, 0] + sym[1, 0] == pytest.approx(149.0) and sym[0, 1] == pytest.approx(sym[1, 1])
    assert np.abs(sym - np.array(template)).max() < 3.0  # a small correction, not a different template


TEMPLATE = np.array([[44.48, 45.798], [104.52, 45.798], [74.5, 81.358], [49.43, 105.122], [99.57, 105.122]])


@pytest.mark.parametrize(
    ("scale", "angle_deg", "shift"),
    [(1.0, 0.0, (0.0, 0.0)), (0.6, 12.0, (-40.0, 15.0)), (2.5, -30.0, (100.0, -7.0)), (0.35, 180.0, (3.0, 3.0))],
)
def test_template_in_image_is_sent_onto_the_template(scale, angle_deg, shift):
    from pipelines.recognizer.eval_with_teacher import template_in_image

    a = np.deg2rad(angle_deg)
    image_to_chip = np.hstack(
        [scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]), np.array(shift)[:, None]]
    )
    points = template_in_image(image_to_chip, TEMPLATE)
    assert np.allclose(points @ image_to_chip[:, :2].T + image_to_chip[:, 2], TEMPLATE, atol=1e-3)
    if (scale, angle_deg) != (1.0, 0.0):
        assert not np.allclose(points, TEMPLATE, atol=1.0)


SYMMETRIC_112 = np.array([[35.0, 50.0], [76.0, 50.0], [55.5, 70.0], [40.0, 90.0], [71.0, 90.0]])
DLIB_150 = TEMPLATE  # the dlib member's (symmetric) template


def test_arcface_template_is_symmetric_and_close_to_arcface():
    from pipelines.recognizer.template import ARCFACE_112, arcface_template, symmetrize

    template = arcface_template()
    assert np.allclose(template, symmetrize(template, 112))
    assert template[2, 0] == pytest.approx(55.5)
    assert np.abs(template - ARCFACE_112).max() < 1.0


@pytest.mark.parametrize(
    ("template", "member_template", "member_size", "expected"),
    [
        (SYMMETRIC_112, SYMMETRIC_112, 112, (-0.5, -0.5, 111.5, 111.5)),  # the same chip
        (2 * SYMMETRIC_112 + 0.5, SYMMETRIC_112, 112, (-0.5, -0.5, 223.5, 223.5)),  # an exact 2x2 block per pixel
        (2 * SYMMETRIC_112 + 0.5 + [16, 5], SYMMETRIC_112, 112, (15.5, 4.5, 239.5, 228.5)),  # shifted
        (SYMMETRIC_112 + [10, 0], SYMMETRIC_112, 112, (9.5, -0.5, 121.5, 111.5)),
    ],
)
def test_member_box(template, member_template, member_size, expected):
    from pipelines.recognizer.template import member_box

    assert member_box(template, member_template, member_size) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("chip_size", [240, 256, 300])
def test_ensemble_chip_centres_every_member_inside_the_chip(chip_size):
    from pipelines.recognizer.template import ensemble_chip

    chip = ensemble_chip(SYMMETRIC_112, 2, chip_size, {"anchor": (SYMMETRIC_112, 112), "dlib": (DLIB_150, 150)})
    boxes = np.array(list(chip.member_boxes.values()))
    assert boxes[:, :2].min() >= -0.5 and boxes[:, 2:].max() <= chip_size - 0.5
    low, high = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
    assert np.all(np.abs((low + 0.5) - (chip_size - 0.5 - high)) <= 1.0)  # centred to a whole pixel
    x0, y0, x1, y1 = chip.member_boxes["anchor"]
    assert (
        (x1 - x0, y1 - y0) == pytest.approx((224.0, 224.0))
        and float(x0 + 0.5).is_integer()
        and float(y0 + 0.5).is_integer()
    )
    assert chip.template[2, 0] == pytest.approx((chip_size - 1) / 2)  # still symmetric about the chip's axis


def test_ensemble_chip_refuses_a_chip_too_small():
    from pipelines.recognizer.template import ensemble_chip

    with pytest.raises(ValueError, match="more than a 200 px chip"):
        ensemble_chip(SYMMETRIC_112, 2, 200, {"anchor": (SYMMETRIC_112, 112), "dlib": (DLIB_150, 150)})


class _FixedRefiner:
    """Stands in for the landmark refiner: moves every point by a known offset."""

    def refine(self, items):
        from vigil.types import Face

        return [Face(box=f.box, score=f.score, landmarks=f.landmarks + np.float32([2.0, -1.0])) for _, f in items]


@pytest.mark.parametrize("refine, offset", [(False, (0.0, 0.0)), (True, (2.0, -1.0))])
def test_vigil_landmarks_source_gives_the_detector_or_the_refined_points(monkeypatch, refine, offset):
    """`--landmarks vigil` takes the detector's points of the face nearest dlib's box; `--landmarks refined` the
    refiner's points for that same face (the runtime's), never another face's."""
    import vigil.eval.face_source as face_source
    from pipelines.recognizer.template import VigilLandmarks
    from vigil.types import Face

    points = np.array([[130, 130], [170, 130], [150, 150], [135, 170], [165, 170]], np.float32)
    near = Face(box=BOX.astype(np.float32), score=0.9, landmarks=points)
    far = Face(box=np.float32([400, 400, 500, 500]), score=0.99, landmarks=points + 300)
    monkeypatch.setattr(
        face_source, "build_detector", lambda detector: (lambda images: [[far, near] for _ in images], "fake")
    )
    source = VigilLandmarks(refine=False)
    source.refiner = _FixedRefiner() if refine else None
    got = source.landmarks_near(np.zeros((600, 600, 3), np.uint8), BOX)
    assert np.allclose(got, points + np.float32(offset))


def test_refined_landmarks_source_loads_the_shipped_refiner(monkeypatch):
    import vigil.eval.face_source as face_source
    from pipelines.recognizer.template import VigilLandmarks

    monkeypatch.setattr(face_source, "build_detector", lambda detector: (lambda images: [[] for _ in images], "fake"))
    source = VigilLandmarks(refine=True)
    assert source.refiner is not None and "vigil-landmarks-96.onnx@" in source.label
    assert source.landmarks_near(np.zeros((64, 64, 3), np.uint8), BOX) is None  # no face: nothing to refine
