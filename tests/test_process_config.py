"""`vigil process` and `vigil bench pipeline` change only what differs from the config: no sink or setting dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.bench.pipeline import bench_config
from vigil.commands.process import process_config
from vigil.config import AlertsConfig, CameraConfig, JsonlSinkConfig, MqttSinkConfig, VigilConfig, WebhookSinkConfig

# A value unlike the default for every field of AlertsConfig. A sink added to AlertsConfig makes
# test_every_alerts_field_has_an_example fail until it gets a line here, and then the tests below check that
# `vigil process` and the benchmark keep it.
NON_DEFAULT_ALERTS = {
    "console": False,
    "sqlite": True,
    "jsonl": JsonlSinkConfig(path=Path("/elsewhere/events.jsonl")),
    "webhook": WebhookSinkConfig(url="http://127.0.0.1:9/hook", max_attempts=3),
    "mqtt": MqttSinkConfig(host="127.0.0.1", topic_prefix="site-a"),
    "snapshots": False,
    "update_snapshot": True,
}
# what `vigil process` sets on purpose (a batch job reports to --events, not to the SQLite store)
PROCESS_CHANGES = {"sqlite", "jsonl"}


def test_every_alerts_field_has_an_example():
    assert set(NON_DEFAULT_ALERTS) == set(AlertsConfig.model_fields)
    defaults = AlertsConfig()
    for name, value in NON_DEFAULT_ALERTS.items():
        if name != "sqlite":  # sqlite's example is its default: `vigil process` must turn it off
            assert getattr(defaults, name) != value, name


def configured() -> VigilConfig:
    return VigilConfig(
        data_dir=Path("/data"),
        alerts=AlertsConfig(**NON_DEFAULT_ALERTS),
        cameras=[CameraConfig(name="door", source="rtsp://127.0.0.1/door")],
    )


@pytest.mark.parametrize("name", sorted(set(NON_DEFAULT_ALERTS) - PROCESS_CHANGES))
def test_process_keeps_every_other_sink_and_alert_setting(name):
    config = process_config(configured(), events=Path("out/e.jsonl"), data_dir=None)
    assert getattr(config.alerts, name) == NON_DEFAULT_ALERTS[name]


@pytest.mark.parametrize(
    "events, data_dir, expected_jsonl, expected_data_dir",
    [
        (Path("out/e.jsonl"), None, JsonlSinkConfig(path=Path("out/e.jsonl")), Path("/data")),
        (None, Path("/tmp/d"), None, Path("/tmp/d")),
    ],
)
def test_process_sets_only_its_own_fields(events, data_dir, expected_jsonl, expected_data_dir):
    source = configured()
    config = process_config(source, events=events, data_dir=data_dir)
    assert config.alerts.sqlite is False
    assert config.alerts.jsonl == expected_jsonl
    assert config.data_dir == expected_data_dir
    assert config.cameras == []
    assert (
        config.model_copy(update={"alerts": source.alerts, "data_dir": source.data_dir, "cameras": source.cameras})
        == source
    )


def test_bench_turns_off_snapshots_and_keeps_the_rest():
    source = configured()
    config = bench_config(source, detector_model=None)
    assert config.alerts == source.alerts.model_copy(update={"snapshots": False})
    assert config.cameras == []
    assert (
        config.detector == source.detector and config.recognizer == source.recognizer and config.rules == source.rules
    )
