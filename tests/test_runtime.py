"""The match threshold comes from the config when set, else from the recognizer's calibration in the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.config import RulesConfig, VigilConfig
from vigil.errors import ConfigError
from vigil.models import ModelSpec
from vigil.runtime import LoadedModels, effective_rules


def models_with(extra: dict) -> LoadedModels:
    def spec(kind):
        return ModelSpec("m", kind, Path("m.onnx"), None, (150, 150), "onnx", extra=extra)

    return LoadedModels(detector=spec("detector"), recognizer=spec("recognizer"))


CASES = [
    ("config wins", 0.7, {"match_threshold": 0.93}, 0.7),
    ("calibrated default", None, {"match_threshold": 0.93}, 0.93),
]


@pytest.mark.parametrize("case, configured, extra, expected", CASES, ids=[c[0] for c in CASES])
def test_effective_threshold(case, configured, extra, expected):
    config = VigilConfig(rules=RulesConfig(match_threshold=configured))
    assert effective_rules(config, models_with(extra)).match_threshold == pytest.approx(expected)


def test_no_threshold_anywhere_is_a_config_error():
    with pytest.raises(ConfigError, match="rules.match_threshold"):
        effective_rules(VigilConfig(), models_with({}))
