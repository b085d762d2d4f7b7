"""Scene views (runtime-path degraded chips): face matching, the build with a fake detector, the folder round trip,
the whole-photo degradation, and how the fine-tune's TrainViews and prepare use them."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.recognizer.degrade import DegradeConfig, Degrader
from pipelines.recognizer.scene_views import SceneViews, _Stage, build_scene_views, load, match_face, save
from vigil.align import Aligner
from vigil.errors import VigilError
from vigil.types import Face

LANDMARKS = np.array([[40, 40], [60, 40], [50, 52], [42, 62], [58, 62]], np.float32)  # eye distance 20 px
TEMPLATE = np.array([[44.5, 45.8], [104.5, 45.8], [74.5, 81.4], [49.4, 105.1], [99.6, 105.1]], np.float32)


def _face(landmarks, score=0.9) -> Face:
    lm = np.asarray(landmarks, np.float32)
    return Face(
        box=np.array([lm[:, 0].min() - 10, lm[:, 1].min() - 10, lm[:, 0].max() + 10, lm[:, 1].max() + 10], np.float32),
        score=score,
        landmarks=lm,
    )


@pytest.mark.parametrize(
    "offsets, expected",
    [
        ([], None),  # nothing detected
        ([0.0], 0),  # exact
        ([9.0], 0),  # off by 0.45 x eye distance: still the face
        ([11.0], None),  # off by 0.55 x eye distance: another face, not this one
        ([30.0, 2.0], 1),  # the nearer of two
        ([2.0, 30.0], 0),
    ],
)
def test_match_face(offsets, expected):
    faces = [_face(LANDMARKS + np.float32([o, 0.0])) for o in offsets]  # shifted sideways by o px
    got = match_face(faces, LANDMARKS, max_error_frac=0.5)
    assert (got is None) if expected is None else (got is faces[expected])


class _FakeDetector:
    """Finds the known face, scaled to each image (``scale`` = image width / photo width), unless told to miss."""

    def __init__(self, photo_width: int, miss_small: bool) -> None:
        self.photo_width, self.miss_small, self.calls = photo_width, miss_small, []

    def __call__(self, images):
        self.calls.append([im.shape for im in images])
        out = []
        for im in images:
            scale = im.shape[1] / self.photo_width
            out.append([] if self.miss_small and scale < 1 else [_face(LANDMARKS * scale)])
        return out


def _photo(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(100, 100, 3), dtype=np.uint8)


def _entry(i: int) -> dict:
    return {
        "file": f"id{i}/p.jpg",
        "box": [25, 25, 75, 75],
        "score": 0.9,
        "landmarks": LANDMARKS.tolist(),
        "face_width_px": 50.0,
    }


@pytest.mark.parametrize("miss_small, found", [(False, True), (True, False)])
def test_build_scene_views(miss_small, found):
    photos, entries = [_photo(i) for i in range(3)], [_entry(i) for i in range(3)]
    detector = _FakeDetector(100, miss_small)
    stage = _Stage(detector, Aligner(TEMPLATE, 150), Degrader(DegradeConfig(face_px=(16.0, 24.0))), 0.5)
    sv = build_scene_views(photos, entries, stage, views=2, seed=0)
    assert sv.views.shape == (2, 3, 150, 150, 3) and sv.clean.shape == (3, 150, 150, 3)
    assert sv.found.all() == found and sv.found.any() == found
    assert sv.clean_found.all()  # the full photo is always found by the fake
    # the views were made from small images: the face shrunk from 50 px to 16-24 px, so the photo to 32-48 px
    for shapes in detector.calls[1:]:
        assert all(32 <= w <= 48 for _, w, _ in shapes)
    if not found:
        assert not sv.views.any()  # no view is invented for a face the detector missed
    again = build_scene_views(photos, entries, stage, views=2, seed=0)
    assert np.array_equal(again.views, sv.views)  # seeded


class _ShiftRefiner:
    """A landmark refiner that moves every point ``dx`` px right: shows whether a chip was refined."""

    def __init__(self, dx: float) -> None:
        self.dx, self.calls = dx, 0

    def refine(self, items):
        self.calls += len(items)
        return [Face(box=f.box, score=f.score, landmarks=f.landmarks + np.float32([self.dx, 0.0])) for _, f in items]


@pytest.mark.parametrize("detector_finds, refined", [(True, True), (False, False)])
def test_scene_views_refine_detected_faces_never_the_fallback(detector_finds, refined):
    """Detected faces get the runtime refiner's points; the clean chip's YuNet fallback (detector missed) never does."""
    from vigil.refine import RefiningAligner

    photos, entries = [_photo(7)], [_entry(0)]
    detector = _FakeDetector(100, miss_small=False) if detector_finds else (lambda images: [[] for _ in images])
    plain = Aligner(TEMPLATE, 150)
    refiner = _ShiftRefiner(3.0)
    stage = _Stage(detector, RefiningAligner(plain, refiner), Degrader(DegradeConfig(face_px=(16.0, 24.0))), 0.5)
    sv = build_scene_views(photos, entries, stage, views=1, seed=0)
    unshifted = plain.align(photos[0], _face(LANDMARKS)).chip
    shifted = plain.align(photos[0], _face(LANDMARKS + np.float32([3.0, 0.0]))).chip
    assert np.array_equal(sv.clean[0], shifted if refined else unshifted)
    assert refiner.calls == (2 if detector_finds else 0)  # the clean photo and its one view


@pytest.mark.parametrize(
    "meta, ok",
    [
        ({"template": TEMPLATE.tolist(), "chip_size": 150}, True),
        ({"template": TEMPLATE[:4].tolist(), "chip_size": 150}, False),  # 4 points
        ({"template": TEMPLATE.tolist()}, False),  # no chip size
        ({}, False),  # a chip set from before the template was recorded
    ],
)
def test_chip_set_geometry(meta, ok, tmp_path):
    from pipelines.recognizer.scene_views import chip_set_geometry

    if ok:
        template, size = chip_set_geometry(meta, tmp_path / "meta.json")
        assert size == 150 and np.allclose(template, TEMPLATE)
    else:
        with pytest.raises(VigilError, match="meta.json"):
            chip_set_geometry(meta, tmp_path / "meta.json")


def test_scene_views_folder_round_trip_and_take(tmp_path):
    rng = np.random.default_rng(0)
    sv = SceneViews(
        rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8),
        rng.integers(0, 255, (2, 3, 8, 8, 3), dtype=np.uint8),
        np.array([[True, False, True], [False, False, True]]),
        np.array([True, True, False]),
        ["a", "b", "c"],
    )
    save(tmp_path / "sv", sv, {"seed": 0})
    back = load(tmp_path / "sv")
    sub = back.take(["c", "a"])
    assert np.array_equal(sub.clean, sv.clean[[2, 0]]) and np.array_equal(sub.views, sv.views[:, [2, 0]])
    assert sub.found.tolist() == [[True, True], [True, False]] and sub.files == ["c", "a"]
    with pytest.raises(VigilError, match="no row for d"):
        back.take(["a", "d"])
    with pytest.raises(VigilError, match="not a scene-view folder"):
        load(tmp_path)


@pytest.mark.parametrize("face_px, width", [((16.0, 16.0), 32), ((48.0, 48.0), 96)])
def test_degrade_scene_shrinks_the_photo_to_the_face_size(face_px, width):
    image, scale = Degrader(DegradeConfig(face_px=face_px)).degrade_scene(_photo(0), 50.0, np.random.default_rng(0))
    assert image.shape == (width, width, 3) and image.dtype == np.uint8 and scale == pytest.approx(width / 100)


@pytest.mark.parametrize(
    "p, found, from_scene",
    [
        (1.0, [True, True], True),
        (0.0, [True, True], False),  # p = 0: never
        (1.0, [False, False], False),  # no found view: the Degrader's view
    ],
)
def test_train_views_use_scene_views(p, found, from_scene):
    from pipelines.recognizer.finetune import SceneViewSource, TrainViews

    chips = np.zeros((1, 8, 8, 3), np.uint8)
    views = np.full((2, 1, 8, 8, 3), 200, np.uint8)
    scenes = SceneViewSource(views, np.array(found)[:, None], p)
    degrader = Degrader(DegradeConfig(p_clean=1.0, p_flip=0.0))  # its view is the clean (all-zero) chip
    for uid in range(5):
        degraded, clean, label, index, flipped = TrainViews(chips, np.zeros(1, np.int64), degrader, 0, scenes)[uid]
        assert (degraded == 200).all() == from_scene and not clean.any() and index == 0


def test_with_scene_views_replaces_clean_chips_in_each_splits_order(tmp_path):
    from pipelines.recognizer.faces_dataset import ChipSet
    from pipelines.recognizer.finetune import _with_scene_views

    files = ["a", "b", "c", "d"]
    clean = np.stack([np.full((8, 8, 3), 10 * (i + 1), np.uint8) for i in range(4)])
    views = np.stack([clean + 1, clean + 2])
    found = np.array([[True, False, True, True], [False, False, True, False]])
    save(tmp_path / "sv", SceneViews(clean, views, found, np.ones(4, bool), files), {})
    old = np.zeros((2, 8, 8, 3), np.uint8)
    train = ChipSet(old, np.array([0, 1]), ["x", "y"], np.array(["train"] * 2), ["d", "b"])
    val = ChipSet(old, np.array([0, 0]), ["z"], np.array(["val"] * 2), ["c", "a"])
    train2, val2, scenes, val_scene = _with_scene_views([tmp_path / "sv"], train, val, 0.5)
    assert [int(c[0, 0, 0]) for c in train2.chips] == [40, 20] and [int(c[0, 0, 0]) for c in val2.chips] == [30, 10]
    assert scenes.found.tolist() == [[True, False], [False, False]] and scenes.p == 0.5
    assert int(scenes.views[0, 0, 0, 0, 0]) == 41 and val_scene.found[0].tolist() == [True, True]
    assert train2.files == ["d", "b"] and train2.labels.tolist() == [0, 1]


def test_more_views_later_match_one_run_and_concatenate():
    from pipelines.recognizer.scene_views import concat_views

    photos, entries = [_photo(i) for i in range(2)], [_entry(i) for i in range(2)]
    stage = _Stage(
        _FakeDetector(100, False), Aligner(TEMPLATE, 150), Degrader(DegradeConfig(face_px=(16.0, 48.0))), 0.5
    )
    both = build_scene_views(photos, entries, stage, views=2, seed=3)
    first = build_scene_views(photos, entries, stage, views=1, seed=3)
    second = build_scene_views(photos, entries, stage, views=1, seed=3, first_view=1)
    assert not np.array_equal(first.views[0], second.views[0])
    assert np.array_equal(concat_views([first, second]).views, both.views)
    other = SceneViews(first.clean, first.views, first.found, first.clean_found, ["x", "y"])
    with pytest.raises(VigilError, match="different photos"):
        concat_views([first, other])
