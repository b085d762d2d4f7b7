"""Evaluation face source: face choice, centre fallback vs skip, in-memory embedding cache, LFW run with fakes."""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest

from vigil.align import Aligner
from vigil.eval import face_source as fs
from vigil.eval import lfw as lfw_mod
from vigil.types import Face

TEMPLATE = np.array([[55.0, 62.0], [95.0, 62.0], [75.0, 85.0], [59.0, 105.0], [91.0, 105.0]], np.float32)


def _face(cx: float, cy: float, score: float, width: float = 40.0) -> Face:
    box = np.array([cx - width / 2, cy - width / 2, cx + width / 2, cy + width / 2], np.float32)
    eyes = [[cx - width / 5, cy - width / 8], [cx + width / 5, cy - width / 8]]
    mouth = [[cx - width / 6, cy + width / 5], [cx + width / 6, cy + width / 5]]
    landmarks = np.array([eyes[0], eyes[1], [cx, cy], mouth[0], mouth[1]], np.float32)
    return Face(box=box, score=score, landmarks=landmarks)


@pytest.mark.parametrize(
    "faces, expected_index",
    [
        ([_face(30, 30, 0.9), _face(120, 130, 0.8), _face(200, 200, 0.99)], 1),  # nearest the centre wins
        ([_face(125, 125, 0.1), _face(60, 60, 0.9)], 1),  # the central one is not confident
        ([_face(125, 125, 0.1)], None),  # nothing confident
        ([], None),
    ],
)
def test_choose_face_nearest_centre_among_confident(faces, expected_index):
    chosen = fs.choose_face(faces, (250, 250, 3), min_score=0.3)
    assert chosen is (None if expected_index is None else faces[expected_index])


@pytest.mark.parametrize("shape", [(250, 250, 3), (75, 75, 3), (100, 80, 3)])
def test_centre_face_scales_lfw_mean_landmarks(shape):
    face = fs.centre_face(shape)
    h, w = shape[:2]
    np.testing.assert_allclose(face.landmarks, fs.LFW_MEAN_LANDMARKS_PX * [w / 250, h / 250], rtol=1e-5)
    assert face.score == 0.0 and 0 <= face.box[0] < face.box[2] <= w and 0 <= face.box[1] < face.box[3] <= h


class CountingEmbedder:
    """Mean colour of the chip centre as a 3-d unit vector; counts chips embedded."""

    def __init__(self) -> None:
        self.chips_seen = 0

    def embed(self, chips: np.ndarray) -> np.ndarray:
        self.chips_seen += len(chips)
        vectors = chips[:, 60:90, 60:90].reshape(len(chips), -1, 3).mean(axis=1).astype(np.float32) + 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _detect_unless_flat(images):
    return [[] if im.std() < 1 else [_face(im.shape[1] / 2, im.shape[0] / 2, 0.9, im.shape[1] / 2.5)] for im in images]


def _image(colour, textured=True):
    image = np.full((250, 250, 3), colour, np.uint8)
    if textured:
        image[::7] = 0
    return image


@pytest.mark.parametrize("fallback, vector_for_flat", [("centre", True), ("skip", False)])
def test_fallback_policy_and_cache(fallback, vector_for_flat):
    images = {"a": _image((200, 30, 30)), "b": _image((30, 200, 30)), "flat": _image((90, 90, 90), textured=False)}
    embedder = CountingEmbedder()
    source = fs.FaceSource(_detect_unless_flat, Aligner(TEMPLATE, 150), fallback=fallback)
    cache = fs.ImageEmbedder(source, embedder, "det", "model@0", batch_size=2)
    first = cache.embed(["a", "b", "flat", "a"], images.__getitem__)
    assert first["a"].found and not first["flat"].found
    assert (first["flat"].vector is not None) == vector_for_flat
    seen = embedder.chips_seen
    cache.embed(["b", "a", "flat"], images.__getitem__)  # all cached: nothing embedded again
    assert embedder.chips_seen == seen == (3 if vector_for_flat else 2)


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(fs.VigilError, match=r"bad\.jpg.*cannot decode image \(pairs\.csv: row 4\)"):
        fs.read_image(bad, context="pairs.csv: row 4")
    with pytest.raises(fs.VigilError, match="missing.jpg"):
        fs.read_image(tmp_path / "missing.jpg")


def test_lfw_protocol_end_to_end_with_fakes(tmp_path, monkeypatch):
    """A 2-fold, 2+2 pairs LFW folder of coloured images: identities separable by colour -> accuracy 1.0."""
    colours = {
        "Red_One": (30, 30, 220),
        "Green_Two": (30, 220, 30),
        "Blue_Three": (220, 30, 30),
        "Grey_Four": (128, 128, 128),
    }
    for name, colour in colours.items():
        (tmp_path / name).mkdir()
        for n in (1, 2):
            cv2.imwrite(str(tmp_path / name / f"{name}_{n:04d}.jpg"), _image(colour))
    (tmp_path / "pairs.txt").write_text(
        "2\t2\nRed_One\t1\t2\nGreen_Two\t1\t2\nRed_One\t1\tBlue_Three\t1\nGreen_Two\t2\tGrey_Four\t1\n"
        "Blue_Three\t1\t2\nGrey_Four\t1\t2\nBlue_Three\t2\tRed_One\t2\nGrey_Four\t2\tGreen_Two\t1\n"
    )
    parts = fs.RecognizerParts(Aligner(TEMPLATE, 150), CountingEmbedder(), "fake@0", tmp_path / "fake.onnx")
    flips_asked = []
    monkeypatch.setattr(
        lfw_mod,
        "build_recognizer",
        lambda model, flip_average, refine_landmarks=False: flips_asked.append(flip_average) or parts,
    )
    monkeypatch.setattr(lfw_mod, "build_detector", lambda detector: (_detect_unless_flat, "fake-det"))
    out = tmp_path / "lfw.json"
    for degraded in (False, True):
        args = argparse.Namespace(
            lfw_dir=tmp_path,
            degraded=degraded,
            model=None,
            detector=None,
            json=out,
            detections_cache=None,
            flip_average=degraded,
            refine_landmarks=False,
        )
        assert lfw_mod.run_cli(args) == 0
        assert flips_asked[-1] is degraded  # --flip-average / --no-flip-average reaches the recognizer
        report = json.loads(out.read_text())
        for key in (
            "accuracy_mean",
            "accuracy_std",
            "tar_at_far_1e-3",
            "variant",
            "model",
            "detector",
            "auc",
            "faces_not_found",
            "pairs",
            "seconds",
            "fold_accuracies",
        ):
            assert key in report
        assert report["variant"] == ("degraded" if degraded else "clean")
        assert report["pairs"] == 8 and len(report["fold_accuracies"]) == 2
        assert report["accuracy_mean"] == 1.0 and report["auc"] == 1.0
        assert out.with_suffix(".png").is_file()


class CountingDetector:
    def __init__(self) -> None:
        self.images_seen = 0

    def __call__(self, images):
        self.images_seen += len(images)
        return _detect_unless_flat(images)


@pytest.mark.parametrize(
    "reopen_label, reopen_min_score, detections_expected",
    [
        ("det@1", 0.3, 0),  # same detector and min_score: every face comes from the file
        ("det@2", 0.3, 3),  # another detector: the file is not used
        ("det@1", 0.5, 3),  # another min_score: not used either
    ],
)
def test_detection_cache_reuses_faces_only_for_the_same_detector(
    tmp_path, reopen_label, reopen_min_score, detections_expected
):
    images = {"a": _image((200, 30, 30)), "b": _image((30, 200, 30)), "flat": _image((90, 90, 90), textured=False)}
    keys = list(images)
    first_detector = CountingDetector()
    cache = fs.DetectionCache(tmp_path / "det.npz", "det@1", 0.3)
    source = fs.FaceSource(first_detector, Aligner(TEMPLATE, 150), fallback="centre", cache=cache)
    first = source.chips([images[k] for k in keys], keys)
    cache.save()
    assert first_detector.images_seen == 3

    detector = CountingDetector()
    reopened = fs.DetectionCache(tmp_path / "det.npz", reopen_label, reopen_min_score)
    again = fs.FaceSource(
        detector, Aligner(TEMPLATE, 150), fallback="centre", min_score=reopen_min_score, cache=reopened
    )
    second = again.chips([images[k] for k in keys], keys)
    assert detector.images_seen == detections_expected
    assert [r.found for r in second] == [r.found for r in first] == [True, True, False]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.chip, b.chip)


def test_lfw_second_run_takes_detections_from_the_cache(tmp_path, monkeypatch):
    lfw_dir = tmp_path / "lfw"
    colours = {"Red_One": (30, 30, 220), "Green_Two": (30, 220, 30)}
    for name, colour in colours.items():
        (lfw_dir / name).mkdir(parents=True)
        for n in (1, 2):
            cv2.imwrite(str(lfw_dir / name / f"{name}_{n:04d}.jpg"), _image(colour))
    (lfw_dir / "pairs.txt").write_text(
        "2\t1\nRed_One\t1\t2\nRed_One\t1\tGreen_Two\t1\nGreen_Two\t1\t2\nGreen_Two\t2\tRed_One\t2\n"
    )
    detector = CountingDetector()
    parts = fs.RecognizerParts(Aligner(TEMPLATE, 150), CountingEmbedder(), "fake@0", tmp_path / "fake.onnx")
    monkeypatch.setattr(lfw_mod, "build_recognizer", lambda model, flip_average, refine_landmarks=False: parts)
    monkeypatch.setattr(lfw_mod, "build_detector", lambda detector_path: (detector, "fake-det"))
    reports = []
    for _ in range(2):
        out = tmp_path / "lfw.json"
        args = argparse.Namespace(
            lfw_dir=lfw_dir,
            degraded=False,
            model=None,
            detector=None,
            json=out,
            detections_cache=tmp_path / "cache",
            flip_average=True,
            refine_landmarks=False,
        )
        assert lfw_mod.run_cli(args) == 0
        reports.append(json.loads(out.read_text()))
    assert detector.images_seen == 4  # the second run detected nothing
    assert [r["detections_from_cache"] for r in reports] == [0, 4]
    assert reports[0]["accuracy_mean"] == reports[1]["accuracy_mean"] and reports[0]["auc"] == reports[1]["auc"]
