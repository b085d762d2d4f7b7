"""Threshold calibration on impostor pairs (pipelines/recognizer/calibrate.py): pure parts with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.recognizer.calibrate import pair_scores, threshold_at_far


@pytest.mark.parametrize(
    "impostor, far, expected_above",
    [
        (np.linspace(0, 1, 1000), 1e-2, 10),  # 10 of 1000 impostors may pass
        (np.linspace(0, 1, 1000), 1e-3, 1),
        (np.linspace(0, 1, 1000), 1e-4, 0),  # fewer than one allowed: above the best impostor
        (np.array([0.5] * 10), 0.5, 0),  # ties cannot be split: none pass
    ],
)
def test_threshold_at_far(impostor, far, expected_above):
    t = threshold_at_far(impostor, far)
    assert int((impostor >= t).sum()) == expected_above
    assert (impostor >= t).mean() <= far


def test_pair_scores_splits_genuine_and_impostor():
    vectors = np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8]], np.float32)
    genuine, impostor = pair_scores(vectors, np.array(["a", "a", "b", "c"]))
    assert sorted(genuine.tolist()) == [1.0]
    assert np.sort(impostor) == pytest.approx([0.0, 0.0, 0.6, 0.6, 0.8])
