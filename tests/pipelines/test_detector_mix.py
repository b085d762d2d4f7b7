"""Training mixes (pipelines/detector/mix.py) and the synthesiser's layout profiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines.detector.mix import parse_takes, select_images, source_of, write_mix
from pipelines.detector.synth import LAYOUT_PROFILES, face_widths
from vigil.errors import VigilError

FILES = [Path(f"{src}_{i:04d}.jpg") for src, n in (("lfw", 10), ("synth", 6), ("synthcrowd", 4)) for i in range(n)]


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("celeba299_000123_1.jpg", "celeba299"),
        ("synthcrowd_train_000001.jpg", "synthcrowd"),
        ("synth_train_000001.jpg", "synth"),
        ("video_hamilton_00012.jpg", "video"),
    ],
)
def test_source_of(name, source):
    assert source_of(Path(name)) == source


@pytest.mark.parametrize(
    "takes",
    [
        {"lfw": 3, "synth": 6},
        {"synthcrowd": 4},
        {"lfw": 0, "synth": 1, "synthcrowd": 2},
        {"lfw": 10, "synth": 6, "synthcrowd": 4},
    ],
)
def test_select_images_takes_exact_counts_per_source(takes):
    chosen = select_images(FILES, takes, seed=0)
    counts = {s: sum(source_of(p) == s for p in chosen) for s in ("lfw", "synth", "synthcrowd")}
    assert counts == {s: takes.get(s, 0) for s in counts}
    assert len(set(chosen)) == len(chosen)
    assert chosen == sorted(chosen)


def test_select_images_is_seeded():
    takes = {"lfw": 4, "synth": 3}
    assert select_images(FILES, takes, seed=1) == select_images(list(reversed(FILES)), takes, seed=1)
    assert select_images(FILES, takes, seed=1) != select_images(FILES, takes, seed=2)


@pytest.mark.parametrize("takes", [{"lfw": 11}, {"celeba299": 1}])
def test_select_images_rejects_more_than_the_source_has(takes):
    with pytest.raises(VigilError, match="asked for"):
        select_images(FILES, takes, seed=0)


@pytest.mark.parametrize(
    ("items", "ok"),
    [(["synth=3", "lfw=0"], True), (["synth"], False), (["=3"], False), (["synth=-1"], False), (["synth=x"], False)],
)
def test_parse_takes(items, ok):
    if ok:
        assert parse_takes(items) == {"synth": 3, "lfw": 0}
    else:
        with pytest.raises(VigilError, match="SOURCE=COUNT"):
            parse_takes(items)


def test_write_mix_lists_images_relative_to_the_dataset(tmp_path):
    train = tmp_path / "images" / "train"
    train.mkdir(parents=True)
    for f in FILES:
        (train / f.name).write_bytes(b"")
    out = write_mix(tmp_path, {"synthcrowd": 2, "lfw": 1}, seed=0, name="m")
    cfg = yaml.safe_load(out.read_text())
    assert cfg["train"] == "m.txt" and cfg["val"] == "images/val" and cfg["kpt_shape"] == [5, 3]
    lines = (tmp_path / "m.txt").read_text().splitlines()
    assert len(lines) == 3 and all(line.startswith("./images/train/") for line in lines)
    assert all((tmp_path / line).is_file() for line in lines)


def _widths(profile: str, scenes: int = 200) -> np.ndarray:
    plans = [face_widths(np.random.default_rng([7, i]), 640, LAYOUT_PROFILES[profile]) for i in range(scenes)]
    return np.array([w for plan in plans for w, _, _ in plan])


def test_crowd_profile_plans_more_and_smaller_faces_than_default():
    default, crowd = _widths("default"), _widths("crowd")
    assert len(crowd) > 2 * len(default)
    assert np.median(crowd) < 0.7 * np.median(default)
    assert (crowd < 12).mean() > 0.2 and (default < 12).mean() < 0.02  # default: 12 px scatters, rows from 10 px x 0.85
