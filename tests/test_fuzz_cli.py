"""Whole-command fuzz test (issue 26): generated malformed configs, watchlists and media files through the CLI.

Every case must end with a non-zero exit and exactly one ``vigil: error:`` line that names the file (and, for a
setting, its field), never a traceback, and must write nothing (the folder is compared before and after). The cases
are generated from a seed, so a failure is reproducible by its id. Each is refused before any model loads, so the
whole set runs in seconds in-process (``vigil.cli.main``, the console script's entry point); a few also run as a
real child process (``python -m vigil.cli``) to check the exit code and stderr of the real thing.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from vigil.cli import main

REPO = Path(__file__).resolve().parent.parent
SEED = 26


@dataclass(frozen=True)
class Case:
    """One malformed input: ``make(folder)`` writes it and returns the argv; ``names`` must appear in the error."""

    id: str
    make: Callable[[Path], list[str]]
    names: tuple[str, ...] = ()


# ---- a valid starting point ---------------------------------------------------------------------------------------
def _video(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 30 * i, np.uint8))
    writer.release()
    return path


def _base(folder: Path) -> None:
    """A camera file and a watchlist whose photo is missing: any config that validates still stops at the watchlist
    (no one to enrol), before the models load."""
    _video(folder / "cam.avi")
    (folder / "wl.yaml").write_text("people:\n  - {id: p, name: P, photos: [p.jpg]}\n", encoding="utf-8")


def base_config() -> dict:
    return {
        "data_dir": "data",
        "watchlist": "wl.yaml",
        "cameras": [{"name": "cam", "source": "cam.avi", "fps_cap": 5}],
        "reconnect": {"initial_backoff_s": 0.5, "max_backoff_s": 4.0},
        "detector": {"imgsz": 320, "conf_threshold": 0.35},
        "recognizer": {"batch_size": 8},
        "tracker": {"max_track_age_s": 5.0},
        "rules": {"cooldown_s": 60.0, "min_hits": 2, "confirm_hits": 5},
        "alerts": {"webhook": {"url": "http://127.0.0.1:9/hook"}},
    }


def _set(config: dict, path: tuple, value: object) -> dict:
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return config


# ---- configs ------------------------------------------------------------------------------------------------------
FIELDS = [
    ("data_dir",), ("watchlist",), ("cameras", 0, "name"), ("cameras", 0, "source"), ("cameras", 0, "fps_cap"),
    ("reconnect", "initial_backoff_s"), ("detector", "imgsz"), ("detector", "conf_threshold"),
    ("recognizer", "batch_size"), ("tracker", "max_track_age_s"), ("rules", "cooldown_s"), ("rules", "min_hits"),
    ("alerts", "webhook", "url"), ("cameras", 0, "max_frame_age_s"), ("cameras",), ("rules",),
]  # fmt: skip
BAD_VALUES = [-1, 10**12, "many", [1, 2], {"a": 1}, float("nan"), float("inf"), "", True, "rtps://x/y", "a b\nc"]
FILE_FIELDS = {("data_dir",), ("watchlist",), ("cameras", 0, "source")}  # any string may be a valid path


def config_cases(rng: random.Random) -> list[Case]:
    cases = []
    for path in FIELDS:
        paths_ok = path in FILE_FIELDS  # there, any string may be a valid path (and "many" a valid camera name)
        candidates = [
            v for v in BAD_VALUES if not ((paths_ok and isinstance(v, str)) or (path[-1] == "name" and v == "many"))
        ]
        for value in rng.sample(candidates, 4):
            dotted = ".".join(f"[{k}]" if isinstance(k, int) else str(k) for k in path).replace(".[", "[")
            cases.append(Case(f"config {dotted}={value!r}", _config_writer(_set(base_config(), path, value)),
                              ("config.yaml",)))  # fmt: skip
    for key in ("camras", "detector.imgszz", "alerts.webhook.urll", "rules.threshold"):
        config = base_config()
        parent, _, leaf = key.rpartition(".")
        node = config
        for part in parent.split(".") if parent else []:
            node = node[part]
        node[leaf] = 1
        cases.append(Case(f"config unknown key {key}", _config_writer(config), ("config.yaml", leaf)))
    return cases + [Case(f"config text {name}", _raw_writer("config.yaml", data), ("config.yaml",)) for name, data in
                    _bad_yaml(rng)]  # fmt: skip


def _bad_yaml(rng: random.Random) -> list[tuple[str, bytes]]:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    )
    return [
        ("unclosed bracket", b"cameras: [\n"),
        ("tab indentation", b"cameras:\n\t- name: a\n"),
        ("not utf-8", b"data_dir: \xff\xfe\xfa\n"),
        ("a list", b"- 1\n- 2\n"),
        ("a number", b"42\n"),
        ("nested 5000 deep", b"cameras: " + b"[" * 5000 + b"]" * 5000 + b"\n"),
        ("billion laughs", (laughs + "cameras: *i\n").encode()),
        ("python tag", b"data_dir: !!python/object/apply:os.system ['true']\n"),
        ("random bytes", bytes(rng.randrange(256) for _ in range(300))),
        ("a key with a line break", b'"cam\\neras": []\n'),
        ("empty file: no watchlist, no camera", b""),
    ]


def _config_writer(config: dict) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        return ["run", "--config", str(folder / "config.yaml")]

    return make


def _raw_writer(name: str, data: bytes) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        (folder / name).write_bytes(data)
        return ["run", "--config", str(folder / name)]

    return make


# ---- watchlists ---------------------------------------------------------------------------------------------------
def watchlist_cases(rng: random.Random) -> list[Case]:
    people = [
        ("bad id", {"id": "J Doe", "name": "J", "photos": ["a.jpg"]}),
        ("id too long", {"id": "x" * 65, "name": "J", "photos": ["a.jpg"]}),
        ("no name", {"id": "j", "photos": ["a.jpg"]}),
        ("list kind", {"id": "j", "name": "J", "list": "maybe", "photos": ["a.jpg"]}),
        ("threshold", {"id": "j", "name": "J", "threshold": 7, "photos": ["a.jpg"]}),
        ("photos a string", {"id": "j", "name": "J", "photos": 5}),
        ("photo outside", {"id": "j", "name": "J", "photos": ["../../etc/passwd"]}),
        ("absolute photo", {"id": "j", "name": "J", "photos": ["/etc/shadow"]}),
        ("unknown key", {"id": "j", "name": "J", "photo": "a.jpg"}),
    ]
    cases = [
        Case(f"watchlist {name}", _watchlist_writer({"people": [person]}), ("wl.yaml",)) for name, person in people
    ]
    cases.append(Case("watchlist duplicate ids", _watchlist_writer({"people": [people[4][1] | {"threshold": 0.5}] * 2}),
                      ("wl.yaml", "repeated")))  # fmt: skip
    cases += [Case(f"watchlist text {name}", _raw_watchlist(data), ("wl.yaml",)) for name, data in _bad_yaml(rng)[:-1]]
    for name, data in _bad_images(rng):
        cases.append(Case(f"watchlist photo {name}", _photo_watchlist(data), ("wl.yaml",)))
    return cases


def _bad_images(rng: random.Random) -> list[tuple[str, bytes]]:
    ok, jpeg = cv2.imencode(".jpg", np.random.default_rng(rng.randrange(1000)).integers(0, 255, (90, 90, 3), np.uint8))
    ok, png = cv2.imencode(".png", np.zeros((30, 30, 3), np.uint8))
    jpeg_bytes, png_bytes = jpeg.tobytes(), png.tobytes()
    cuts = [rng.uniform(0.05, 0.95) for _ in range(4)]
    return [
        ("empty", b""),
        ("text", b"hello, I am not a face\n"),
        ("random bytes", bytes(rng.randrange(256) for _ in range(2000))),
        *[(f"JPEG cut at {cut:.0%}", jpeg_bytes[: int(len(jpeg_bytes) * cut)]) for cut in cuts],
        ("PNG cut in half", png_bytes[: len(png_bytes) // 2]),
        ("JPEG header only", jpeg_bytes[:20]),
    ]


def _watchlist_writer(content: dict) -> Callable[[Path], list[str]]:
    return _raw_watchlist(yaml.safe_dump(content).encode())


def _raw_watchlist(data: bytes) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        (folder / "wl.yaml").write_bytes(data)
        (folder / "config.yaml").write_text("data_dir: data\n", encoding="utf-8")
        return ["enroll", str(folder / "wl.yaml"), "--config", str(folder / "config.yaml")]

    return make


def _photo_watchlist(photo: bytes) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        (folder / "face.jpg").write_bytes(photo)
        return _raw_watchlist(b"people:\n  - {id: p, name: P, photos: [face.jpg]}\n")(folder)

    return make


# ---- media files --------------------------------------------------------------------------------------------------
def media_cases(rng: random.Random, clip: Path | None) -> list[Case]:
    whole = clip.read_bytes() if clip is not None else _video_bytes()
    cuts = sorted(rng.uniform(0.001, 0.9) for _ in range(8))
    media: list[tuple[str, bytes]] = [
        ("empty", b""),
        ("text", b"not a video\n" * 100),
        ("a PNG named .mp4", cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()[:40]),
        *[(f"random {n} bytes", bytes(rng.randrange(256) for _ in range(n))) for n in (16, 4096, 65536)],
        *[(f"cut at {cut:.1%}", whole[: int(len(whole) * cut)]) for cut in cuts],
        ("header zeroed", b"\0" * 64 + whole[64:]),
        ("every box name garbled", whole.replace(b"moov", b"mooz").replace(b"mdat", b"mdaz")),
        ("moov cut off", whole[: whole.rfind(b"moov") + 16]),
    ]  # fmt: skip
    cases = [Case(f"media {name}", _media_writer(data), ("bad.mp4",)) for name, data in media]
    cases.append(Case("media a folder", _media_folder, ("bad.mp4",)))
    cases.append(Case("media missing", lambda folder: _process_argv(folder / "bad.mp4", folder), ("bad.mp4",)))
    return cases


def _video_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return _video(Path(folder) / "v.avi").read_bytes()


def _process_argv(video: Path, folder: Path) -> list[str]:
    (folder / "wl.yaml").write_text("people:\n  - {id: p, name: P, photos: [p.jpg]}\n", encoding="utf-8")
    return ["process", str(video), "--watchlist", str(folder / "wl.yaml"), "--events", str(folder / "out.jsonl"),
            "--data-dir", str(folder / "data"), "--no-progress"]  # fmt: skip


def _media_writer(data: bytes) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        (folder / "bad.mp4").write_bytes(data)
        return _process_argv(folder / "bad.mp4", folder)

    return make


def _media_folder(folder: Path) -> list[str]:
    (folder / "bad.mp4").mkdir()
    return _process_argv(folder / "bad.mp4", folder)


# ---- the cases, and the test --------------------------------------------------------------------------------------
def all_cases() -> list[Case]:
    from vigil.paths import data_path

    rng = random.Random(SEED)
    clip = data_path("video", "short_hamilton_clip.mp4")
    return config_cases(rng) + watchlist_cases(rng) + media_cases(rng, clip if clip.is_file() else None)


CASES = all_cases()


def test_there_are_at_least_100_cases() -> None:
    assert len(CASES) >= 100 and len({case.id for case in CASES}) == len(CASES)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_malformed_input_ends_in_one_line_and_writes_nothing(tmp_path, capfd, case: Case) -> None:
    _base(tmp_path)
    argv = case.make(tmp_path)
    before = _snapshot(tmp_path)
    code = main(argv)  # an exception here is the traceback a user would see
    out = capfd.readouterr()
    errors = [line for line in out.err.splitlines() if line.startswith("vigil: error:")]
    assert code != 0, out
    assert "Traceback" not in out.err + out.out
    assert len(errors) == 1, out.err
    assert all(name in errors[0] for name in case.names), errors[0]
    assert _snapshot(tmp_path) == before, "the command wrote something"


@pytest.mark.parametrize("index", [0, 60, 100], ids=lambda i: CASES[i].id)
def test_the_real_process_gives_the_same_one_line(tmp_path, index: int) -> None:
    case = CASES[index]
    _base(tmp_path)
    argv = case.make(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-m", "vigil.cli", *argv], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("vigil: error:")]
    assert done.returncode != 0 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
