"""Zoomed-out scenes (pipelines/detector/zoomout.py): row layout geometry and label transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.detector.zoomout import RowLayout, make_scene

SIZE = 320


def _layout_boxes(face_px: tuple[float, float], photos: list[tuple[int, int, float]], seed: int = 0):
    layout = RowLayout(np.random.default_rng(seed), SIZE, face_px)
    boxes, scales = [], []
    for w, h, face_w in photos:
        p = layout.place(w, h, face_w)
        if p is None:
            break
        boxes.append((p.x, p.y, p.x + w * p.scale, p.y + h * p.scale))
        scales.append(p.scale * face_w)
    return np.array(boxes), np.array(scales), layout


@pytest.mark.parametrize(
    ("face_px", "photo"),
    [
        ((6.0, 6.0), (250, 250, 100.0)),
        ((10.0, 25.0), (178, 218, 80.0)),
        ((20.0, 40.0), (640, 360, 120.0)),
        ((8.0, 12.0), (60, 60, 50.0)),
    ],
)
def test_row_layout_places_photos_inside_the_canvas_without_overlap(face_px, photo):
    boxes, face_widths, layout = _layout_boxes(face_px, [photo] * 5000)
    assert len(boxes) > 3 and layout.full
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= SIZE + 1e-6).all()
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            overlap_w = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            overlap_h = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            assert overlap_w <= 1 or overlap_h <= 1
    assert face_widths.min() >= 0.8 * face_px[0] - 1e-6 and face_widths.max() <= 1.2 * face_px[1] + 1e-6


def test_row_layout_faces_grow_down_the_canvas():
    boxes, face_widths, _ = _layout_boxes((6.0, 30.0), [(200, 200, 80.0)] * 5000)
    top, bottom = face_widths[boxes[:, 1] < SIZE / 4], face_widths[boxes[:, 1] > SIZE / 2]
    assert top.mean() < 0.6 * bottom.mean()


def test_row_layout_refuses_a_photo_wider_than_the_canvas():
    _, _, layout = _layout_boxes((20.0, 20.0), [])
    assert layout.place(1000, 100, 10.0) is None and layout.full


def _write_photo(folder: Path, name: str, box: tuple[int, int, int, int], shape=(200, 160)) -> None:
    import cv2

    (folder / "images" / "train").mkdir(parents=True, exist_ok=True)
    (folder / "labels" / "train").mkdir(parents=True, exist_ok=True)
    h, w = shape
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    cv2.imwrite(str(folder / "images" / "train" / f"{name}.jpg"), img)
    cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
    kps = " ".join(
        f"{(x1 + (x2 - x1) * fx) / w:.5f} {(y1 + (y2 - y1) * fy) / h:.5f} 2"
        for fx, fy in [(0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8)]
    )
    (folder / "labels" / "train" / f"{name}.txt").write_text(f"0 {cx:.5f} {cy:.5f} {bw:.5f} {bh:.5f} {kps}\n")


def test_make_scene_maps_every_face_box_onto_its_pixels(tmp_path):
    _write_photo(tmp_path, "lfw_a", (40, 50, 120, 150))
    _write_photo(tmp_path, "celeba299_b", (10, 20, 70, 100))
    photos = sorted((tmp_path / "images" / "train").glob("*.jpg"))
    image, faces, quality = make_scene(photos, seed=3, split="train", index=0, size=SIZE)
    assert image.shape == (SIZE, SIZE, 3) and 20 <= quality <= 90 and len(faces) > 10
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE
        assert x1 <= face.landmarks[:, 0].min() and face.landmarks[:, 0].max() <= x2
        assert y1 <= face.landmarks[:, 1].min() and face.landmarks[:, 1].max() <= y2
    again, faces_again, _ = make_scene(photos, seed=3, split="train", index=0, size=SIZE)
    assert np.array_equal(image, again) and len(faces) == len(faces_again)


def test_make_scene_white_faces_sit_inside_their_boxes(tmp_path, monkeypatch):
    """With the camera degradations switched off, each labelled box covers the pasted white face."""
    import pipelines.detector.synth as synth

    monkeypatch.setattr(synth, "degrade", lambda img, rng: (img, 90))
    monkeypatch.setattr(synth, "procedural_background", lambda rng, size: np.zeros((size, size, 3), np.uint8))
    _write_photo(tmp_path, "lfw_a", (40, 50, 120, 150))
    photos = sorted((tmp_path / "images" / "train").glob("*.jpg"))
    image, faces, _ = make_scene(photos, seed=1, split="train", index=2, size=SIZE)
    grey = image.mean(axis=2)
    inside = sum(
        grey[int(np.ceil(f.box[1])) : int(f.box[3]), int(np.ceil(f.box[0])) : int(f.box[2])].sum() for f in faces
    )
    assert inside > 0.85 * grey.sum()
