"""Tiled detection: the whole frame plus overlapping tiles, so small faces in large frames reach the network whole.

The detector letterboxes each frame to its input size (``imgsz``, 480 by default): a 1920x1080 frame is shrunk four
times, so a 40 px face reaches the network at 10 px, below what any of our detectors finds reliably (see the
detector card's "found" table). With tiling, :class:`vigil.detect.FaceDetector` also runs on square tiles of
``tile_px`` frame pixels that overlap by ``overlap_px``; each tile is letterboxed to ``imgsz`` on its own, so a face
in a tile is seen at ``imgsz / tile_px`` of its frame size instead of ``imgsz / max(frame side)``.

How the views are merged (the pure functions below, tested without a model):

* the whole frame is always one view, so a face larger than the overlap, cut by every tile, is still found there;
* a face a tile finds against one of its *cut* edges (an edge inside the frame, not the frame's border) is dropped:
  it is a piece of a face, and the overlap makes sure a face no wider than ``overlap_px`` lies whole in a neighbour;
* every surviving face is shifted into frame pixels and all views' faces go through one NMS (torchvision's),
  highest score first.

The cost is one forward pass per view: ``1 + len(tile_grid(...))`` per frame (1 + 8 for 1920x1080 with 640 px
tiles overlapping by 128). Frames that fit in one tile are detected once, as without tiling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vigil.types import Face

CUT_EDGE_MARGIN_PX = 2.0  # a face box this close to a cut edge of its tile counts as touching it

DetectMany = Callable[[Sequence[np.ndarray]], list[list[Face]]]  # images -> faces per image, in its pixels


MIN_TILE_PX = 64


def tiling_problem(tile_px: int, overlap_px: int) -> str | None:
    """Why these tiles are not allowed, or None: at least ``MIN_TILE_PX`` wide, overlapping by 0 to half a tile.
    The one rule behind ``detector.tiling`` in the config, ``--tile-px`` on the command line and :class:`TileSpec`."""
    if tile_px < MIN_TILE_PX:
        return f"tile_px ({tile_px}) must be at least {MIN_TILE_PX}"
    if overlap_px < 0:
        return f"overlap_px ({overlap_px}) must not be negative"
    if overlap_px * 2 > tile_px:
        return f"overlap_px ({overlap_px}) must be at most half of tile_px ({tile_px})"
    return None


@dataclass(frozen=True)
class TileSpec:
    """Square tiles of ``tile_px`` frame pixels, neighbours overlapping by ``overlap_px`` (:func:`tiling_problem`)."""

    tile_px: int
    overlap_px: int

    def __post_init__(self) -> None:
        problem = tiling_problem(self.tile_px, self.overlap_px)
        if problem:
            raise ValueError(problem)


@dataclass(frozen=True)
class Tile:
    """A window of the frame, ``[x0, x1) x [y0, y1)`` in frame pixels."""

    x0: int
    y0: int
    x1: int
    y1: int

    def crop(self, frame: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(frame[self.y0 : self.y1, self.x0 : self.x1])


def axis_starts(length: int, tile_px: int, overlap_px: int) -> list[int]:
    """Start offsets of tiles covering ``[0, length)`` with at least ``overlap_px`` between neighbours.

    The stride is ``tile_px - overlap_px`` and the last tile ends at ``length`` exactly (so it may overlap its
    neighbour by more). One tile at 0 when ``length <= tile_px``.
    """
    if length <= tile_px:
        return [0]
    stride = tile_px - overlap_px
    count = math.ceil((length - overlap_px) / stride)
    return sorted({min(index * stride, length - tile_px) for index in range(count)})


def tile_grid(width: int, height: int, spec: TileSpec) -> list[Tile]:
    """The tiles of a ``width`` x ``height`` frame, row by row; empty when the frame fits in one tile (the
    whole-frame view already covers it)."""
    if width <= spec.tile_px and height <= spec.tile_px:
        return []
    xs = axis_starts(width, spec.tile_px, spec.overlap_px)
    ys = axis_starts(height, spec.tile_px, spec.overlap_px)
    return [Tile(x, y, min(x + spec.tile_px, width), min(y + spec.tile_px, height)) for y in ys for x in xs]


def touches_cut_edge(
    box: np.ndarray, tile: Tile, width: int, height: int, margin_px: float = CUT_EDGE_MARGIN_PX
) -> bool:
    """Whether a box (tile pixels) reaches an edge of ``tile`` that lies inside the ``width`` x ``height`` frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (
        (tile.x0 > 0 and x1 <= margin_px)
        or (tile.y0 > 0 and y1 <= margin_px)
        or (tile.x1 < width and x2 >= tile.x1 - tile.x0 - margin_px)
        or (tile.y1 < height and y2 >= tile.y1 - tile.y0 - margin_px)
    )


def shift_face(face: Face, dx: float, dy: float) -> Face:
    """The face moved by (dx, dy) pixels: a tile's detection in frame pixels."""
    offset = np.asarray([dx, dy], dtype=np.float32)
    return Face(box=face.box + np.tile(offset, 2), score=face.score, landmarks=face.landmarks + offset)


def faces_in_frame(faces: list[Face], tile: Tile, width: int, height: int) -> list[Face]:
    """A view's faces in frame pixels, without the pieces of faces cut by the tile's inner edges."""
    return [shift_face(face, tile.x0, tile.y0) for face in faces if not touches_cut_edge(face.box, tile, width, height)]


def merge_faces(faces: list[Face], iou_threshold: float, max_det: int) -> list[Face]:
    """Non-maximum suppression over faces from every view (frame pixels): the survivors, highest score first."""
    if not faces:
        return []
    import torch
    from torchvision.ops import nms

    boxes = torch.as_tensor(np.stack([face.box for face in faces]), dtype=torch.float32)
    scores = torch.as_tensor([face.score for face in faces], dtype=torch.float32)
    keep = nms(boxes, scores, float(iou_threshold)).tolist()  # sorted by decreasing score
    return [faces[index] for index in keep[:max_det]]


def detect_tiled(
    detect_many: DetectMany, frames: Sequence[np.ndarray], spec: TileSpec, iou_threshold: float, max_det: int
) -> list[list[Face]]:
    """Faces per frame from the whole frames and their tiles, merged; ``detect_many`` is any batched detector.

    Whole frames go in one call and all tiles in another (a batch of equal shapes letterboxes tighter).
    """
    wholes = [(index, Tile(0, 0, frame.shape[1], frame.shape[0])) for index, frame in enumerate(frames)]
    tiles = [
        (index, tile) for index, frame in enumerate(frames) for tile in tile_grid(frame.shape[1], frame.shape[0], spec)
    ]
    found = list(detect_many(list(frames))) + list(detect_many([tile.crop(frames[index]) for index, tile in tiles]))
    per_frame: list[list[Face]] = [[] for _ in frames]
    for (index, tile), faces in zip(wholes + tiles, found):
        height, width = frames[index].shape[:2]
        per_frame[index].extend(faces_in_frame(faces, tile, width, height))
    return [merge_faces(faces, iou_threshold, max_det) for faces in per_frame]
