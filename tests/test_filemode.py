"""What vigil writes is readable by its own user only (issue 26, defect 10: snapshots, the events database and the
enrolment cache were created 0644)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from vigil.alerts import JsonlSink, MqttSink, SqliteSink, save_snapshot
from vigil.alerts.snapshots import replace_snapshot
from vigil.config import MqttSinkConfig
from vigil.filemode import file_creation_mode, readable_by_others
from vigil.types import UnknownEvent
from vigil.watchlist import EmbeddingCache

EVENT = UnknownEvent("e" * 32, "cam", 1, 0.2, "2026-11-23T09:00:00.000Z", 1.0, 5, (0, 0, 9, 9), None)


def _write_everything(root: Path) -> list[str]:
    """Every kind of file a run writes, under ``root``; the database is still open when the modes are read."""
    data = root / "data"
    store = SqliteSink(data / "events.sqlite3")
    store.emit(EVENT)
    snapshot = save_snapshot(data, EVENT.id, np.zeros((20, 20, 3), np.uint8))
    assert snapshot is not None and replace_snapshot(snapshot, np.ones((24, 24, 3), np.uint8))  # a better face
    mqtt = MqttSink(data / "mqtt-only.sqlite3", MqttSinkConfig(host="127.0.0.1", port=1), start=False)
    mqtt.emit(EVENT)  # its outbox, in a database of its own here
    mqtt.close()
    cache = EmbeddingCache(data / "enroll_cache.json", "key")
    cache.put("sha", np.ones(4, np.float32))
    cache.save()
    jsonl = JsonlSink(root / "out" / "events.jsonl")
    jsonl.emit(EVENT)
    jsonl.close()
    modes = [f"{p.relative_to(root)} {stat.S_IMODE(p.stat().st_mode):o}" for p in sorted(root.rglob("*"))]
    store.close()
    return modes


@pytest.mark.parametrize(("access", "file_mode", "dir_mode"), [("private", "600", "700"), ("group", "640", "750")])
def test_every_file_and_folder_vigil_creates_has_the_configured_mode(tmp_path, access, file_mode, dir_mode) -> None:
    previous = os.umask(0o022)  # a typical login umask, which made these files 0644
    try:
        with file_creation_mode(access):
            modes = _write_everything(tmp_path)
        assert os.umask(0o022) == 0o022, "the umask must be restored"
    finally:
        os.umask(previous)
    kinds = {line.split()[0]: line.split()[1] for line in modes}
    written = {"data/events.sqlite3", "data/events.sqlite3-wal", "data/mqtt-only.sqlite3", "data/enroll_cache.json"}
    assert written | {"out/events.jsonl"} <= set(kinds)
    for name, mode in kinds.items():
        expected = dir_mode if (tmp_path / name).is_dir() else file_mode
        assert mode == expected, f"{name}: {mode}, expected {expected}"


def test_a_world_readable_data_dir_is_noticed(tmp_path) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert readable_by_others(folder)
    folder.chmod(0o700)
    assert not readable_by_others(folder) and not readable_by_others(tmp_path / "missing")
