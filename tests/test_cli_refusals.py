"""Inputs that must stop a command at once: one line naming the file and field, a non-zero exit, nothing written.

Issue 26: a watchlist that enrols nobody started `vigil run` anyway (defect 1); `data_dir` naming a file gave a
traceback (defect 6); `vigil doctor --config missing.yaml` said "all checks passed" (defect 7). None of these cases
loads a model: each is refused before.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vigil.cli import main
from vigil.config import VigilConfig
from vigil.errors import ConfigError
from vigil.runtime import refuse_empty_watchlist
from vigil.watchlist import Watchlist, load_watchlist


def tiny_video(path: Path, frames: int = 5) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    return path


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A folder with a camera file, a watchlist whose photos are all missing, and an empty one."""
    tiny_video(tmp_path / "cam.avi")
    (tmp_path / "nobody.yaml").write_text(
        "people:\n  - {id: a, name: A, photos: [gone.jpg]}\n  - {id: b, name: B, photos: [empty.jpg]}\n"
    )
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "none.yaml").write_text("people: []\n")
    (tmp_path / "a-file").write_text("not a folder\n")
    return tmp_path


def _config(place: Path, extra: str = "") -> Path:
    path = place / "config.yaml"
    path.write_text(f"data_dir: data\ncameras:\n  - {{name: cam, source: cam.avi}}\n{extra}", encoding="utf-8")
    return path


CASES = [
    # name, argv (formatted with {d} = the folder), exit code, the one line on stderr must contain
    ("run: nobody enrollable", "run --config {d}/config.yaml --watchlist {d}/nobody.yaml", 2,
     "nobody.yaml: no one could be enrolled: none of the 2 people has a usable photo"),
    ("run: empty watchlist", "run --config {d}/config.yaml --watchlist {d}/none.yaml", 2,
     "none.yaml: people: the watchlist lists no one"),
    ("process: nobody enrollable", "process {d}/cam.avi --watchlist {d}/nobody.yaml --data-dir {d}/data", 2,
     "nobody.yaml: no one could be enrolled"),
    ("enroll: nobody enrollable", "enroll {d}/nobody.yaml --config {d}/config.yaml", 1,
     "nobody.yaml: 2 of 2 people have no usable photo and are not watched: a, b"),
    ("run: data_dir is a file", "run --config {d}/config.yaml", 2,
     "config.yaml: data_dir: {d}/a-file exists and is not a folder"),
    ("enroll: data_dir is a file", "enroll {d}/none.yaml --config {d}/config.yaml", 2, "data_dir: {d}/a-file exists"),
    ("process: --data-dir is a file", "process {d}/cam.avi --watchlist {d}/none.yaml --data-dir {d}/a-file", 2,
     "--data-dir: {d}/a-file exists and is not a folder"),
    ("outbox: data_dir is a file", "outbox status --config {d}/config.yaml", 2, "data_dir: {d}/a-file exists"),
    ("process: --events is a folder", "process {d}/cam.avi --watchlist {d}/nobody.yaml --events {d}", 2,
     "--events: {d} is a folder"),
    ("process: a video that is not one", "process {d}/nobody.yaml --watchlist {d}/none.yaml", 2,
     "nobody.yaml: cannot open video"),
    ("doctor: missing config", "doctor --config {d}/missing.yaml", 2, "missing.yaml: config file not found"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "argv", "code", "message"), CASES, ids=[c[0] for c in CASES])
def test_refused_at_once_with_one_line_and_nothing_written(place, capfd, name, argv, code, message) -> None:
    if "data_dir is a file" in name:
        _config(place).write_text(_config(place).read_text().replace("data_dir: data", "data_dir: a-file"))
    else:
        _config(place)
    before = sorted(p.relative_to(place) for p in place.rglob("*"))
    assert main(argv.format(d=place).split()) == code
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("vigil: error:")]
    assert len(err) == 1 and message.format(d=place) in err[0], err
    assert sorted(p.relative_to(place) for p in place.rglob("*")) == before, "something was written"


@pytest.mark.parametrize(
    ("people", "unenrolled", "allow", "refused"),
    [
        (2, 2, False, "no one could be enrolled"),
        (2, 1, False, None),
        (2, 2, True, None),
        (0, 0, False, "lists no one"),
        (0, 0, True, None),
    ],
)
def test_refuse_empty_watchlist(tmp_path, people: int, unenrolled: int, allow: bool, refused: str | None) -> None:
    entries = "".join(f"  - {{id: p{i}, name: P, photos: [p{i}.jpg]}}\n" for i in range(people))
    (tmp_path / "w.yaml").write_text("people:\n" + entries if people else "people: []\n")
    watchlist: Watchlist = load_watchlist(tmp_path / "w.yaml")
    ids = [f"p{i}" for i in range(unenrolled)]
    config = VigilConfig(allow_empty_watchlist=allow)
    if refused is None:
        refuse_empty_watchlist(config, watchlist, ids)
    else:
        with pytest.raises(ConfigError, match=refused):
            refuse_empty_watchlist(config, watchlist, ids)
