"""Per-camera overrides of the match threshold, margin, minimum face size and unknown-face setting: the effective
table, what `vigil doctor` prints, and two cameras through the real factory where only one alerts."""

from __future__ import annotations

import json

import pytest

from tests.test_pipeline import PEOPLE, ScriptedAnalyzer, frames_showing
from tests.test_runtime import models_with
from vigil.alerts import AlertDispatcher, JsonlSink
from vigil.camera_settings import CameraSettings, camera_settings_table, format_camera_settings
from vigil.cli import main
from vigil.config import VigilConfig
from vigil.runtime import build_rules, effective_rules, new_watch_pipeline
from vigil.watchlist import EnrollmentResult

CALIBRATED = {"match_threshold": 0.93, "match_threshold_flip_average": 0.95}


def config_with(cameras: list[dict], rules: dict | None = None, min_face_px: int = 20) -> VigilConfig:
    return VigilConfig.model_validate(
        {"cameras": cameras, "rules": rules or {}, "detector": {"min_face_px": min_face_px}}
    )


def camera(name: str, **overrides) -> dict:
    return {"name": name, "source": f"{name}.mp4", "overrides": overrides}


# (case, cameras, global rules, expected effective settings per camera, with the overridden keys)
TABLE = [
    (
        "no overrides: the calibrated threshold and the globals",
        [camera("door")],
        {},
        {"door": CameraSettings(0.95, 0.05, 20, False)},
    ),
    (
        "a configured global threshold beats the calibration",
        [camera("door")],
        {"match_threshold": 0.8, "margin": 0.1, "unknown_events": True},
        {"door": CameraSettings(0.8, 0.1, 20, True)},
    ),
    (
        "one camera overrides everything, the other nothing",
        [camera("door"), camera("carpark", match_threshold=0.97, margin=0.2, min_face_px=12, unknown_events=True)],
        {},
        {
            "door": CameraSettings(0.95, 0.05, 20, False),
            "carpark": CameraSettings(
                0.97, 0.2, 12, True, frozenset({"match_threshold", "margin", "min_face_px", "unknown_events"})
            ),
        },
    ),
    (
        "a partial override keeps the other globals",
        [camera("lobby", min_face_px=40)],
        {"match_threshold": 0.7},
        {"lobby": CameraSettings(0.7, 0.05, 40, False, frozenset({"min_face_px"}))},
    ),
    (
        "false is an override, not unset",
        [camera("gate", unknown_events=False)],
        {"unknown_events": True},
        {"gate": CameraSettings(0.95, 0.05, 20, False, frozenset({"unknown_events"}))},
    ),
]


@pytest.mark.parametrize("case, cameras, rules, expected", TABLE, ids=[c[0] for c in TABLE])
def test_effective_settings_per_camera(case, cameras, rules, expected):
    config = config_with(cameras, rules)
    table = camera_settings_table(config.cameras, effective_rules(config, models_with(CALIBRATED)), 20)
    assert dict(table.cameras) == expected
    assert table.for_camera("not-configured") == table.default  # e.g. `vigil process` names frames after the file
    assert table.default.overridden == frozenset()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"match_threshold": 1.5}, "cameras[0].overrides.match_threshold: Input should be less than or equal to 1"),
        ({"margin": -0.1}, "cameras[0].overrides.margin"),
        ({"min_face_px": 2}, "cameras[0].overrides.min_face_px: Input should be greater than or equal to 4"),
        ({"min_face_px": 2000}, "cameras[0].overrides.min_face_px"),
        ({"unknown_events": "sometimes"}, "cameras[0].overrides.unknown_events"),
        ({"treshold": 0.5}, "cameras[0].overrides.treshold: unknown key"),
        ({"cooldown_s": 5}, "cameras[0].overrides.cooldown_s: unknown key"),  # only the four settings
    ],
)
def test_overrides_are_validated_like_the_globals(tmp_path, overrides, message):
    from vigil.config import load_config
    from vigil.errors import ConfigError

    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"cameras": [camera("door", **overrides)]}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "\n" not in str(info.value) and message in str(info.value)


def test_the_table_as_doctor_prints_it_marks_each_override():
    config = config_with([camera("door"), camera("carpark", match_threshold=0.97, min_face_px=12)])
    lines = format_camera_settings(
        camera_settings_table(config.cameras, effective_rules(config, models_with(CALIBRATED)), 20)
    )
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert lines[0].split() == ["camera", "match_threshold", "margin", "min_face_px", "unknown_events"]
    assert rows == {
        "(global)": ["0.9500", "0.0500", "20", "off"],
        "door": ["0.9500", "0.0500", "20", "off"],
        "carpark": ["0.9700*", "0.0500", "12*", "off"],
    }


def test_doctor_prints_the_effective_settings_of_each_camera(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    cameras = [camera("door"), camera("carpark", match_threshold=0.9, unknown_events=True)]
    (tmp_path / "junk.mp4").write_bytes(b"not a video")  # fails fast: only the settings table matters here
    for item in cameras:
        item["source"] = str(tmp_path / "junk.mp4")  # (a missing file is refused when the config loads)
        item["open_timeout_s"] = item["read_timeout_s"] = 1
    path.write_text(json.dumps({"cameras": cameras, "rules": {"match_threshold": 0.8}}), encoding="utf-8")
    main(["doctor", "--config", str(path)])
    out = capsys.readouterr().out
    assert "global match_threshold from rules.match_threshold" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  ")}
    assert rows["door"] == ["0.8000", "0.0500", "20", "off"]
    assert rows["carpark"] == ["0.9000*", "0.0500", "20", "on*"]


# ---------------------------------------------------------------------------------------------------------------------
# Two cameras through the real factory (build_rules, new_watch_pipeline) with a scripted analyzer

# The scripted analyzer gives ann's face a cosine of 0.995 to her enrolled face, a margin of 0.995 over the others,
# 60 px wide; a stranger (code 9) matches nobody.
LENIENT = {"match_threshold": 0.5}
TWO_CAMERAS = [
    # (case, global rules, carpark's overrides, what both cameras show, events per camera)
    ("a stricter threshold on one camera", LENIENT, {"match_threshold": 0.999}, [1] * 8, {"door": 2, "carpark": 0}),
    ("a larger minimum face size on one camera", LENIENT, {"min_face_px": 80}, [1] * 8, {"door": 2, "carpark": 0}),
    (
        "a looser threshold where the global is too strict",
        {"match_threshold": 0.999},
        {"match_threshold": 0.9},
        [1] * 8,
        {"door": 0, "carpark": 2},
    ),
    ("a margin no match can reach", LENIENT, {"margin": 1.0}, [1] * 8, {"door": 2, "carpark": 0}),
    ("unknown-face events on one camera only", LENIENT, {"unknown_events": True}, [9] * 8, {"door": 0, "carpark": 1}),
]


@pytest.mark.parametrize("case, rules, overrides, codes, expected", TWO_CAMERAS, ids=[c[0] for c in TWO_CAMERAS])
def test_one_camera_alerts_and_the_other_does_not(tmp_path, case, rules, overrides, codes, expected):
    config = config_with([camera("door"), camera("carpark", **overrides)], {**rules, "min_hits": 2, "confirm_hits": 4})
    enrollment = EnrollmentResult(list(PEOPLE), [], 0, 0)
    gallery, rules, settings = build_rules(config, enrollment, models_with(CALIBRATED))
    events_path = tmp_path / "events.jsonl"
    pipeline = new_watch_pipeline(
        config, ScriptedAnalyzer(), gallery, rules, AlertDispatcher([JsonlSink(events_path)]), settings
    )
    door, carpark = frames_showing(codes, "door"), frames_showing(codes, "carpark")
    for start in range(0, len(codes), 2):  # batches that mix both cameras, as `vigil run` makes them
        pipeline.process(door[start : start + 2] + carpark[start : start + 2])
    pipeline.close()
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert {name: sum(e["camera"] == name for e in events) for name in ("door", "carpark")} == expected
    if "min_face_px" in overrides:
        assert pipeline.counters.embeddings == len(codes)  # carpark's faces were tracked, never embedded
