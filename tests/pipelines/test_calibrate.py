"""Threshold calibration on impostor pairs (pipelines/recognizer/calibrate.py): pure parts with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.recognizer.calibrate import at_threshold, cross_pair_scores, pair_scores, threshold_at_far


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


def test_cross_pair_scores_never_pairs_a_photo_with_its_own_degraded_copy():
    gallery = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)  # a/1, a/2, b/1
    probes = np.array([[0.8, 0.6], [0, 1], [0.6, 0.8]], np.float32)  # degraded a/1, a/2, b/1
    ids, images = np.array(["a", "a", "b"]), np.array(["a/1", "a/2", "b/1"])
    genuine, impostor = cross_pair_scores(gallery, ids, images, probes, ids, images)
    # genuine: (a/1 clean, a/2 degraded) = 0.0 and (a/2 clean, a/1 degraded) = 0.6; a photo vs its own copy excluded
    assert sorted(genuine.tolist()) == pytest.approx([0.0, 0.6])
    # impostor: a/1, a/2 clean vs b/1 degraded; b/1 clean vs a/1, a/2 degraded
    assert sorted(impostor.tolist()) == pytest.approx(sorted([0.6, 0.8, 0.96, 0.8]))


@pytest.mark.parametrize(
    "threshold, tar, far, passing",
    [
        (0.5, 2 / 3, 0.25, 1),
        (0.95, 1 / 3, 0.0, 0),
        (0.0, 1.0, 1.0, 4),
    ],
)
def test_at_threshold(threshold, tar, far, passing):
    genuine, impostor = np.array([0.4, 0.9, 0.99]), np.array([0.0, 0.1, 0.2, 0.7])
    row = at_threshold(genuine, impostor, threshold)
    assert (
        row["tar"] == pytest.approx(round(tar, 4))
        and row["far"] == pytest.approx(far)
        and row["impostors_passing"] == passing
    )
