"""pipelines.recognizer.fusion_sweep: the fused score goes through the same LFW protocol as each model alone."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.recognizer.fusion_sweep import main, sweep
from vigil.eval.verification import VerificationPair

FOLDS, PER_FOLD = 10, 40


def _pairs_and_scores():
    """Each model misjudges a different quarter of the pairs (a score on the wrong side of 0.5): the mean of the
    two scores is right on every pair, each model alone on three quarters."""
    rng = np.random.default_rng(0)
    pairs, first, second = [], [], []
    for fold in range(FOLDS):
        for i in range(PER_FOLD):
            same = i % 2 == 0
            pairs.append(VerificationPair(f"a{fold}_{i}.jpg", f"b{fold}_{i}.jpg", same, fold))
            good = 0.7 + 0.1 * rng.random() if same else 0.3 - 0.1 * rng.random()
            bad = 0.45 if same else 0.55  # wrong side, but closer to 0.5 than the other model is right
            quarter = (i // 2) % 4
            first.append(bad if quarter == 0 else good)
            second.append(bad if quarter == 1 else good)
    return pairs, np.array(first), np.array(second)


@pytest.mark.parametrize(
    "weight, expected_accuracy",
    [(0.0, 87.5), (1.0, 87.5), (0.5, 100.0)],  # w = 0: the first model; w = 1: the second; halfway: both right
)
def test_fused_accuracy(weight, expected_accuracy):
    pairs, first, second = _pairs_and_scores()
    report = sweep(first, second, pairs, [weight])
    assert report["fused"][str(weight)]["accuracy_mean"] == pytest.approx(expected_accuracy, abs=0.01)
    assert report["first"]["accuracy_mean"] == pytest.approx(87.5, abs=0.01)
    assert len(report["impostor_std"]) == 2


def test_weight_outside_0_1_is_one_line_error(tmp_path, capsys):
    code = main(["--models", str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx"), "--weights", "1.5"])
    assert code == 2 and "--weights" in capsys.readouterr().err


@pytest.mark.parametrize(
    "first_std, second_std, expected",
    [(0.1, 0.1, 0.5), (0.05, 0.15, 0.25), (0.15, 0.05, 0.75), (0.0734, 0.1889, 0.28)],  # equal spreads: equal weights
)
def test_equal_weight_divides_each_score_by_its_spread(first_std, second_std, expected):
    from pipelines.recognizer.fusion_sweep import equal_weight

    w = equal_weight(first_std, second_std)
    assert w == pytest.approx(expected, abs=0.005)
    # the fused score (1 - w) cos_1 + w cos_2 is proportional to cos_1 / std_1 + cos_2 / std_2
    assert (1 - w) * first_std == pytest.approx(w * second_std, rel=0.03)
