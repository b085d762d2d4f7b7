"""The match threshold comes from the config when set, else from the recognizer's calibration in the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.config import RecognizerConfig, RulesConfig, VigilConfig
from vigil.errors import ConfigError
from vigil.models import ModelSpec
from vigil.runtime import LoadedModels, effective_rules, enrolment_cache_key


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


TEMPLATE_A = [[45.5, 45.1], [102.6, 45.1], [73.5, 75.7], [51.6, 101.7], [98.9, 101.1]]
TEMPLATE_B = [[44.5, 45.8], [104.5, 45.8], [74.5, 81.4], [49.4, 105.1], [99.6, 105.1]]


def _models(
    template, recognizer_sha="r1", detector_sha="d1", member_templates=(), landmarks_sha: str | None = "l1"
) -> LoadedModels:
    def spec(kind, sha, template=template):
        return ModelSpec("m", kind, Path("m.onnx"), sha, (150, 150), "onnx", alignment_template=template)

    return LoadedModels(
        detector=spec("detector", detector_sha),
        recognizer=spec("recognizer", recognizer_sha),
        recognizer_members=tuple(spec("recognizer", "x", t) for t in member_templates),
        landmarks=None if landmarks_sha is None else spec("landmarks", landmarks_sha, None),
    )


@pytest.mark.parametrize(
    "other, flip, same_key",
    [
        (_models(TEMPLATE_A), True, True),
        (_models(TEMPLATE_B), True, False),  # a new alignment template re-embeds the watchlist photos
        (_models(TEMPLATE_A), False, False),  # so does the flip mode
        (_models(TEMPLATE_A, recognizer_sha="r2"), True, False),
        (_models(TEMPLATE_A, detector_sha="d2"), True, False),
        (_models(TEMPLATE_A, member_templates=[TEMPLATE_A]), True, False),  # an ensemble of the same file name
        (_models(TEMPLATE_A, landmarks_sha="l2"), True, False),  # another landmark refiner
        (_models(TEMPLATE_A, landmarks_sha=None), True, False),  # refinement switched off
    ],
)
def test_enrolment_cache_key_changes_with_whatever_changes_an_embedding(other, flip, same_key):
    base = enrolment_cache_key(VigilConfig(), _models(TEMPLATE_A))
    key = enrolment_cache_key(VigilConfig(recognizer=RecognizerConfig(flip_average=flip)), other)
    assert (key == base) is same_key


@pytest.mark.parametrize(
    "members, same_key",
    [([TEMPLATE_A, TEMPLATE_B], True), ([TEMPLATE_A, TEMPLATE_A], False), ([TEMPLATE_B, TEMPLATE_A], False)],
)
def test_an_ensemble_members_template_is_part_of_the_enrolment_key(members, same_key):
    """The ensemble file pins its members' checksums, not their templates: a member re-aligned in the manifest
    (same weights, same ensemble file) must still re-embed the watchlist photos."""
    base = enrolment_cache_key(VigilConfig(), _models(TEMPLATE_A, member_templates=[TEMPLATE_A, TEMPLATE_B]))
    assert (enrolment_cache_key(VigilConfig(), _models(TEMPLATE_A, member_templates=members)) == base) is same_key


@pytest.mark.parametrize("refine, expected_name", [(True, "vigil-landmarks-96"), (False, None)])
def test_resolve_models_loads_the_landmark_refiner_only_when_refinement_is_on(refine, expected_name):
    from vigil.config import DetectorConfig
    from vigil.runtime import resolve_models

    models = resolve_models(VigilConfig(detector=DetectorConfig(refine_landmarks=refine)))
    assert (models.landmarks.name if models.landmarks else None) == expected_name


def test_a_missing_landmark_model_is_one_clear_error(tmp_path):
    from vigil.config import DetectorConfig
    from vigil.errors import ModelError
    from vigil.runtime import build_refiner, resolve_models

    missing = tmp_path / "nope.onnx"
    config = VigilConfig(detector=DetectorConfig(landmark_model=missing))
    with pytest.raises(ModelError, match="nope.onnx: model file not found"):
        build_refiner(resolve_models(config), config)


def test_a_user_landmark_model_borrows_the_crop_geometry_not_the_checksum(tmp_path):
    import shutil

    from vigil.config import DetectorConfig
    from vigil.paths import models_dir
    from vigil.runtime import build_refiner, resolve_models

    own = tmp_path / "my-landmarks.onnx"
    shutil.copy(models_dir() / "landmarks" / "vigil-landmarks-96.onnx", own)
    config = VigilConfig(detector=DetectorConfig(landmark_model=own))
    models = resolve_models(config)
    assert models.landmarks.sha256 is None and models.landmarks.extra["crop_context"] == pytest.approx(1.4)
    assert build_refiner(models, config).crop_px == 96
