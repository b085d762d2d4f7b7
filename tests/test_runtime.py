"""The match threshold comes from the config when set, else from the recognizer's calibration in the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.config import RecognizerConfig, RulesConfig, VigilConfig
from vigil.errors import ConfigError
from vigil.models import ModelSpec
from vigil.runtime import LoadedModels, effective_rules


def models_with(extra: dict) -> LoadedModels:
    def spec(kind):
        return ModelSpec("m", kind, Path("m.onnx"), None, (150, 150), "onnx", extra=extra)

    return LoadedModels(detector=spec("detector"), recognizer=spec("recognizer"))


BOTH = {"match_threshold": 0.93, "match_threshold_flip_average": 0.95}
CASES = [
    ("config wins", 0.7, True, BOTH, 0.7),
    ("config wins without flip", 0.7, False, BOTH, 0.7),
    ("calibrated, flip-averaged", None, True, BOTH, 0.95),
    ("calibrated, single chip", None, False, BOTH, 0.93),
]


@pytest.mark.parametrize("case, configured, flip, extra, expected", CASES, ids=[c[0] for c in CASES])
def test_effective_threshold(case, configured, flip, extra, expected):
    config = VigilConfig(rules=RulesConfig(match_threshold=configured), recognizer=RecognizerConfig(flip_average=flip))
    assert effective_rules(config, models_with(extra)).match_threshold == pytest.approx(expected)


@pytest.mark.parametrize(
    "flip, extra, message",
    [
        (True, {}, "no calibrated flip-averaged"),
        (True, {"match_threshold": 0.93}, "no calibrated flip-averaged"),  # never borrows the other mode's value
        (False, {"match_threshold_flip_average": 0.95}, "no calibrated single-chip"),
    ],
)
def test_no_threshold_for_the_mode_is_a_config_error(flip, extra, message):
    config = VigilConfig(recognizer=RecognizerConfig(flip_average=flip))
    with pytest.raises(ConfigError, match=f"rules.match_threshold.*{message}"):
        effective_rules(config, models_with(extra))
