"""Tiled detection (vigil/tiling.py): the tile grid, cut-edge filtering, merging, and FaceDetector's tiled path with
a fake network that finds white squares exactly, so every expected box is known."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from vigil.tiling import Tile, TileSpec, axis_starts, faces_in_frame, merge_faces, tile_grid, touches_cut_edge
from vigil.types import Face


def face(x1, y1, x2, y2, score=0.9) -> Face:
    box = np.asarray([x1, y1, x2, y2], dtype=np.float32)
    landmarks = np.tile(np.asarray([(x1 + x2) / 2, (y1 + y2) / 2], dtype=np.float32), (5, 1))
    return Face(box=box, score=score, landmarks=landmarks)


@pytest.mark.parametrize(
    "length, tile_px, overlap_px, expected",
    [
        (300, 480, 128, [0]),  # fits in one tile
        (480, 480, 128, [0]),
        (481, 480, 128, [0, 1]),  # one pixel more: the last tile ends at the frame's edge
        (1664, 480, 128, [0, 352, 704, 1056, 1184]),
        (1080, 640, 128, [0, 440]),
        (1920, 640, 128, [0, 512, 1024, 1280]),
        (1000, 500, 0, [0, 500]),
    ],
)
def test_axis_starts_cover_the_axis_with_at_least_the_overlap(length, tile_px, overlap_px, expected):
    starts = axis_starts(length, tile_px, overlap_px)
    assert starts == expected
    assert starts[0] == 0 and min(starts[-1] + tile_px, length) == length
    for left, right in zip(starts, starts[1:]):
        assert left + tile_px - right >= overlap_px


@pytest.mark.parametrize(
    "width, height, tile_px, overlap_px, tiles",
    [
        (640, 360, 640, 128, 0),
        (1920, 1080, 640, 128, 8),
        (1664, 832, 480, 128, 10),
        (3840, 2160, 640, 128, 32),
        (700, 300, 640, 128, 2),
    ],
)
def test_tile_grid_counts_and_bounds(width, height, tile_px, overlap_px, tiles):
    grid = tile_grid(width, height, TileSpec(tile_px, overlap_px))
    assert len(grid) == tiles
    for tile in grid:
        assert 0 <= tile.x0 < tile.x1 <= width and 0 <= tile.y0 < tile.y1 <= height
        assert tile.x1 - tile.x0 <= tile_px and tile.y1 - tile.y0 <= tile_px
    if grid:
        covered = np.zeros((height, width), bool)
        for tile in grid:
            covered[tile.y0 : tile.y1, tile.x0 : tile.x1] = True
        assert covered.all()


@pytest.mark.parametrize(
    "tile_px, overlap_px, message",
    [
        (480, 480, "overlap_px"),
        (480, 241, "overlap_px \\(241\\) must be at most half"),
        (480, -1, "overlap_px"),
        (0, 0, "tile_px \\(0\\) must be at least 64"),
    ],
)
def test_tile_spec_rejects_impossible_overlaps(tile_px, overlap_px, message):
    with pytest.raises(ValueError, match=message):
        TileSpec(tile_px, overlap_px)
    assert TileSpec(480, 240).overlap_px == 240  # half a tile is the most allowed


# frame 1000 x 600; the tile [400, 800) x [0, 400) has cut edges left, right and bottom, and the frame's top border
@pytest.mark.parametrize(
    "box, touches",
    [
        ((10, 10, 50, 50), False),  # inside
        ((0, 100, 30, 130), True),  # at the left cut edge
        ((370, 100, 400, 130), True),  # at the right cut edge
        ((100, 380, 130, 400), True),  # at the bottom cut edge
        ((100, 0, 130, 30), False),  # at the top, which is the frame's border
        ((1.5, 100, 30, 130), True),  # within the margin
        ((3, 100, 30, 130), False),
    ],
)
def test_touches_cut_edge_only_for_edges_inside_the_frame(box, touches):
    tile = Tile(400, 0, 800, 400)
    assert touches_cut_edge(np.asarray(box, np.float32), tile, 1000, 600) is touches


def test_faces_in_frame_shifts_kept_faces_and_drops_cut_ones():
    tile = Tile(400, 200, 800, 600)
    kept = faces_in_frame([face(10, 20, 50, 60), face(0, 20, 30, 60)], tile, 1000, 1000)
    assert len(kept) == 1
    np.testing.assert_allclose(kept[0].box, [410, 220, 450, 260])
    np.testing.assert_allclose(kept[0].landmarks[0], [430, 240])


def test_merge_faces_keeps_the_best_of_overlapping_faces_highest_score_first():
    faces = [
        face(0, 0, 40, 40, 0.6),
        face(2, 2, 41, 41, 0.9),
        face(100, 100, 140, 140, 0.7),
        face(300, 0, 340, 40, 0.3),
    ]
    merged = merge_faces(faces, iou_threshold=0.5, max_det=10)
    assert [f.score for f in merged] == pytest.approx([0.9, 0.7, 0.3])
    assert len(merge_faces(faces, iou_threshold=0.5, max_det=2)) == 2
    assert merge_faces([], 0.5, 10) == []


def white_squares(image: np.ndarray) -> list[Face]:
    """A perfect 'network': every white square of the image as a face with its exact box."""
    import cv2

    mask = (image[:, :, 0] == 255).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    return [face(x, y, x + w, y + h) for x, y, w, h, _ in stats[1:count]]


@pytest.fixture
def fake_tiled_detector():
    from vigil.detect import FaceDetector

    detector = FaceDetector.__new__(FaceDetector)  # no model: _predict is replaced by the exact square finder
    detector.tiling, detector.nms_iou, detector.max_det, detector.log = (
        TileSpec(480, 128),
        0.5,
        100,
        logging.getLogger("test"),
    )
    calls = []

    def predict(images):
        calls.append([image.shape[:2] for image in images])
        return [white_squares(image) for image in images]

    detector._predict = predict
    return detector, calls


# 1920x1080 frame, 480 px tiles overlapping by 128: x starts 0, 352, 704, 1056, 1408, 1440; y starts 0, 352, 600
@pytest.mark.parametrize(
    "squares",
    [
        [(100, 100, 30)],  # inside one tile
        [(470, 100, 30)],  # across the cut at x = 480: whole in the next tile
        [(340, 340, 40)],  # across a horizontal and a vertical cut
        [(300, 300, 300)],  # larger than the overlap: cut by every tile, found by the whole-frame view
        [(100, 100, 30), (1880, 1040, 40), (900, 500, 200)],
    ],
)
def test_tiled_detection_finds_each_face_once_with_its_frame_box(fake_tiled_detector, squares):
    detector, calls = fake_tiled_detector
    frame = np.zeros((1080, 1920, 3), np.uint8)
    for x, y, side in squares:
        frame[y : y + side, x : x + side] = 255
    found = detector.detect([frame, np.zeros((300, 400, 3), np.uint8)])
    assert len(found[1]) == 0
    boxes = sorted(tuple(int(v) for v in f.box) for f in found[0])
    assert boxes == sorted((x, y, x + side, y + side) for x, y, side in squares)
    assert calls == [[(1080, 1920), (300, 400)], [(480, 480)] * 18]  # whole frames, then the big frame's 6 x 3 tiles
