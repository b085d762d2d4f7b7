"""LFW protocol maths on synthetic scores with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vigil.errors import VigilError
from vigil.eval import verification as v


def _folded(scores_same: np.ndarray, scores_diff: np.ndarray, folds: int = 10):
    """Scores/labels/folds laid out like LFW: each fold = n same then n different."""
    n = scores_same.size // folds
    scores, labels, fold_ids = [], [], []
    for k in range(folds):
        scores += [scores_same[k * n : (k + 1) * n], scores_diff[k * n : (k + 1) * n]]
        labels += [np.ones(n, bool), np.zeros(n, bool)]
        fold_ids += [np.full(2 * n, k)]
    return np.concatenate(scores), np.concatenate(labels), np.concatenate(fold_ids)


def test_separable_scores_give_perfect_accuracy_and_auc():
    rng = np.random.default_rng(0)
    scores, labels, folds = _folded(rng.uniform(0.6, 1.0, 3000), rng.uniform(-0.2, 0.4, 3000))
    result = v.kfold_accuracy(scores, labels, folds)
    assert result.mean == 1.0 and result.std == 0.0
    assert v.roc_curve(scores, labels).auc == pytest.approx(1.0)
    assert v.tar_at_far(scores, labels, 1e-3).tar == 1.0
    assert np.all((result.fold_thresholds > 0.4) & (result.fold_thresholds < 0.6))


def test_identical_distributions_give_chance():
    rng = np.random.default_rng(1)
    scores, labels, folds = _folded(rng.normal(0, 1, 3000), rng.normal(0, 1, 3000))
    assert 0.45 < v.kfold_accuracy(scores, labels, folds).mean < 0.56
    assert v.roc_curve(scores, labels).auc == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize(
    "scores, labels, threshold, accuracy",
    [
        # genuine 0.9, 0.7, 0.2 ; impostor 0.5, 0.4, 0.1 -> best cut between 0.5 and 0.7: 5/6 correct
        ([0.9, 0.7, 0.2, 0.5, 0.4, 0.1], [1, 1, 1, 0, 0, 0], 0.6, 5 / 6),
        # a tie in accuracy (cut at 0.15 or 0.6, both 4/5) resolves to the lowest threshold
        ([0.9, 0.7, 0.2, 0.5, 0.1], [1, 1, 1, 0, 0], 0.15, 0.8),
        # all genuine -> accept everything (threshold below the minimum)
        ([0.3, 0.4], [1, 1], -0.7, 1.0),
        # all impostor -> reject everything (threshold above the maximum)
        ([0.3, 0.4], [0, 0], 1.4, 1.0),
        # inverted: genuine below impostors -> the best is a trivial threshold, 50 %
        ([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], -0.9, 0.5),
    ],
)
def test_best_threshold_hand_computed(scores, labels, threshold, accuracy):
    got_threshold, got_accuracy = v.best_threshold(scores, labels)
    assert got_threshold == pytest.approx(threshold)
    assert got_accuracy == pytest.approx(accuracy)


def test_fold_threshold_is_not_fitted_on_the_test_fold():
    # Fold 0 holds 75 impostors at 0.8 (genuine all 0.9). Fitted on folds 1..9 (which separate anywhere in
    # 0.2..0.9) the lowest best threshold is 0.55, so fold 0 is tested at 0.55 and loses its 75 impostors;
    # had fold 0 been used for fitting, 0.85 would have been chosen and fold 0 would score 1.0.
    same = np.tile([0.9, 0.95], 1500)
    diff = np.tile([0.1, 0.2], 1500)
    diff[:150] = np.where(np.arange(150) % 2 == 0, 0.8, 0.1)  # fold 0: 75 impostors at 0.8
    same[:150] = 0.9
    scores, labels, folds = _folded(same, diff)
    result = v.kfold_accuracy(scores, labels, folds)
    assert result.fold_accuracies[0] == pytest.approx((600 - 75) / 600)
    assert np.all(result.fold_accuracies[1:] == 1.0)
    assert result.fold_thresholds[0] < 0.8  # chosen without seeing fold 0's 0.8 impostors
    assert result.std == pytest.approx(np.std(result.fold_accuracies))


@pytest.mark.parametrize(
    "target_far, impostors, allowed, threshold",
    [
        (1e-3, np.arange(3000) / 3000.0, 3, 2996 / 3000.0),  # LFW sizes: 3 false accepts allowed
        (0.0, np.arange(10) / 10.0, 0, 0.9),  # nothing above the top impostor
        (0.25, np.arange(8) / 8.0, 2, 5 / 8.0),
    ],
)
def test_tar_at_far_order_statistic(target_far, impostors, allowed, threshold):
    genuine = np.linspace(0.0, 1.2, 101)
    scores = np.r_[genuine, impostors]
    labels = np.r_[np.ones(genuine.size, bool), np.zeros(impostors.size, bool)]
    result = v.tar_at_far(scores, labels, target_far)
    assert result.false_accepts_allowed == allowed
    assert result.threshold == pytest.approx(threshold)
    assert result.far <= target_far + 1e-12
    assert result.far * impostors.size == pytest.approx(allowed)
    assert result.tar == pytest.approx(np.mean(genuine > threshold))


def test_roc_hand_computed_with_ties():
    # genuine: 0.9, 0.5 ; impostor: 0.5, 0.1 -> tie at 0.5 is one diagonal step
    roc = v.roc_curve([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    np.testing.assert_allclose(roc.far, [0, 0, 0.5, 1.0])
    np.testing.assert_allclose(roc.tar, [0, 0.5, 1.0, 1.0])
    # P(genuine > impostor) with ties counted half: (1 + 1 + 0.5 + 1) / 4
    assert roc.auc == pytest.approx(0.875)
    assert roc.thresholds[0] == np.inf and roc.thresholds[-1] == -np.inf


def test_cosine_scores():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[1.0, 0.0], [3.0, 0.0]])
    np.testing.assert_allclose(v.cosine_scores(a, b), [1.0, 0.0])


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    return path


def test_parse_lfw_pairs_layout(tmp_path):
    text = "2\t1\nAl\t1\t2\nBo\t1\tCy\t3\nDi\t2\t4\nEd\t5\tFo\t10\n"
    pairs = v.parse_lfw_pairs(_write(tmp_path, text))
    assert [(p.same, p.fold) for p in pairs] == [(True, 0), (False, 0), (True, 1), (False, 1)]
    assert pairs[0].path1 == "Al/Al_0001.jpg" and pairs[0].path2 == "Al/Al_0002.jpg"
    assert pairs[3].path2 == "Fo/Fo_0010.jpg"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "line 1"),
        ("ten 300\n", "line 1"),
        ("1\t1\nAl\t1\nBo\t1\tCy\t3\n", "line 2"),  # same row with two fields
        ("1\t1\nAl\t1\t2\nBo\t1\tCy\n", "line 3"),  # different row with three fields
        ("1\t1\nAl\tx\t2\nBo\t1\tCy\t3\n", "line 2"),  # non-numeric image number
        ("1\t1\nAl\t1\t2\n", "expected 2 pair rows"),
    ],
)
def test_parse_lfw_pairs_bad_rows_name_file_and_line(tmp_path, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(VigilError) as info:
        v.parse_lfw_pairs(path)
    message = str(info.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_real_lfw_pairs_file_if_present():
    from vigil.paths import data_path, missing_data_reason

    if missing_data_reason("lfw", "pairs.txt"):
        pytest.skip(missing_data_reason("lfw", "pairs.txt"))
    pairs = v.parse_lfw_pairs(data_path("lfw", "pairs.txt"))
    assert len(pairs) == 6000 and sum(p.same for p in pairs) == 3000
    assert np.bincount([p.fold for p in pairs]).tolist() == [600] * 10
