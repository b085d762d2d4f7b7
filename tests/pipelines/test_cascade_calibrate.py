"""pipelines.recognizer.cascade_calibrate: the reject cosine's rule, the cascade's operating point, the cache key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.recognizer.cascade_calibrate import choose_reject, embeddings_cache_file, operating_point
from vigil.errors import VigilError

# 200 genuine pairs the ensemble accepts (score 0.9), fast scores 0.500, 0.501, ... 0.699; 100 it rejects (0.5),
# fast scores 0.0-0.099: those never count towards the loss.
ACCEPTED_FAST = 0.5 + np.arange(200) / 1000
GENUINE_ENSEMBLE = np.concatenate([np.full(200, 0.9), np.full(100, 0.5)])
GENUINE_FAST = np.concatenate([ACCEPTED_FAST, np.arange(100) / 1000])


@pytest.mark.parametrize(
    "max_loss, reject, lost",
    [
        (0.0, 0.500, 0),  # no loss allowed: the lowest accepted fast score
        (0.005, 0.501, 1),  # floor(0.005 * 200) = 1 pair may fall below
        (0.01, 0.502, 2),
        (0.1, 0.520, 20),
    ],
)
def test_reject_loses_at_most_max_loss_of_the_accepted_pairs(max_loss, reject, lost):
    chosen = choose_reject(GENUINE_ENSEMBLE, GENUINE_FAST, threshold=0.76, max_loss=max_loss)
    assert chosen == pytest.approx(reject)
    assert int((chosen > ACCEPTED_FAST).sum()) == lost


def test_reject_needs_an_accepted_pair():
    with pytest.raises(VigilError, match="no genuine pair passes"):
        choose_reject(np.array([0.1, 0.2]), np.array([0.9, 0.9]), threshold=0.76, max_loss=0.005)


def test_the_cascade_only_removes_accepted_pairs():
    """A pair is accepted with the cascade only if the ensemble accepts it and its fast score reaches the reject."""
    genuine = (np.array([0.9, 0.9, 0.9, 0.5]), np.array([0.95, 0.80, 0.92, 0.99]))
    impostor = (np.array([0.8, 0.8, 0.1, 0.1]), np.array([0.95, 0.70, 0.99, 0.10]))
    point = operating_point(genuine, impostor, threshold=0.76, reject=0.9)
    assert (point["tar_full"], point["tar_cascade"], point["genuine_lost"]) == (0.75, 0.5, 1)
    assert (point["impostors_passing_full"], point["impostors_passing_cascade"]) == (2, 1)
    assert point["impostor_pairs_settled_by_fast_member"] == 0.5  # fast 0.70 and 0.10 stay below 0.9
    assert point["genuine_pairs_settled_by_fast_member"] == 0.25


@pytest.mark.parametrize(
    "changed",
    [
        {"detector_label": "vigil-face-n-cpu480@4cde103f1030/imgsz480"},
        {"recognizer_label": "dlib-scene-sface@69499dcfe609+lm031b8510"},  # single chip instead of flip
        {"people": 600},
        {"seed": 1},
    ],
)
def test_embeddings_cache_file_changes_with_what_made_the_embeddings(changed):
    key = {
        "recognizer_label": "dlib-scene-sface@69499dcfe609+flip+lm031b8510",
        "detector_label": "vigil-face-v5n-cctv@dd89fce803c9/imgsz640",
        "people": 1000,
        "seed": 0,
    }
    base = embeddings_cache_file(Path("emb"), **key)
    assert base.parent == Path("emb") and "/" not in base.name and base.suffix == ".npz"
    assert embeddings_cache_file(Path("emb"), **{**key, **changed}) != base
