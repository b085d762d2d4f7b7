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
