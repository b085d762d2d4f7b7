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
    image_to_chip = np.hstack([scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]), np.array(shift)[:, None]])
    points = template_in_image(image_to_chip, TEMPLATE)
    assert np.allclose(points @ image_to_chip[:, :2].T + image_to_chip[:, 2], TEMPLATE, atol=1e-3)
    if (scale, angle_deg) != (1.0, 0.0):
        assert not np.allclose(points, TEMPLATE, atol=1.0)


SYMMETRIC_112 = np.array([[35.0, 50.0], [76.0, 50.0], [55.5, 70.0], [40.0, 90.0], [71.0, 90.0]])


@pytest.mark.parametrize("scale, shift_y", [(1.0, 0.0), (2.0, -20.0), (0.5, 10.0)])  # identity, two scale+shift changes
def test_remap_template_follows_the_reference_similarity(scale, shift_y):
    """to_reference = scale * from_reference + shift (a similarity that keeps the mirror axis x = 55.5): points
    3 px below the from_reference land 3 * scale px below the to_reference."""
    from pipelines.recognizer.template import remap_template

    shift = np.array([55.5 * (1 - scale), shift_y])
    from_reference = (SYMMETRIC_112 - shift) / scale
    points = from_reference + np.array([0.0, 3.0])
    got = remap_template(points, from_reference, SYMMETRIC_112, 112)
    np.testing.assert_allclose(got, SYMMETRIC_112 + np.array([0.0, 3.0 * scale]), atol=1e-6)
