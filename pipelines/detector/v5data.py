"""Training batches for the YOLOv5-face fine-tune: labelled images -> augmented square canvases and face rows.

Images and labels are the detector dataset's (Ultralytics pose rows ``0 cx cy w h`` + 5 keypoints as ``x y v``,
normalised; :func:`vigil.eval.wider.read_labels` reads them). Each sample is drawn as one of:

* **letterbox**: the image scaled so its longer side is ``imgsz * s`` (``s`` log-uniform in ``scale``), placed at a
  random spot of the ``imgsz`` square (grey 114 around it, as the runtime letterboxes);
* **mosaic** (probability ``mosaic``): four images, each scaled to about half the canvas times ``s``, in the four
  quadrants around a random centre; small faces with their whole photo's context, as zoom-out scenes do.

A ``canvas`` smaller than ``imgsz`` trains on a window of the ``imgsz`` square, centred near a random face most of
the time: faces keep the size they have at the runtime's input, and a step costs (canvas / imgsz)^2 as much.
Then a horizontal flip (half the time; landmark order swapped with ``LANDMARK_FLIP_INDEX``) and a colour jitter (HSV
gains, as yolov5's). Faces whose box is cut to less than 40 % of its area, or narrower than 3 px, are dropped and
painted grey, so no visible fragment is trained as background; landmarks outside the canvas become invisible.
Face rows are ``[cx, cy, w, h, 10 landmark coordinates, 5 visibilities]`` in canvas pixels (:mod:`v5loss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vigil.types import LANDMARK_FLIP_INDEX

PAD_VALUE = 114
MIN_FACE_PX = 3.0
MIN_KEPT_AREA = 0.4
FACE_COLUMNS = 19


@dataclass(frozen=True)
class Augment:
    imgsz: int = 640  # the runtime's input size: faces are drawn at the scale they have there
    canvas: int = 640  # the trained window, cut from the imgsz square (smaller: cheaper steps, same face scales)
    scale: tuple[float, float] = (0.5, 1.25)  # longer side / imgsz, log-uniform
    mosaic: float = 0.5
    flip: float = 0.5
    hsv: tuple[float, float, float] = (0.015, 0.7, 0.4)  # yolov5's hue, saturation, value gains


@dataclass(frozen=True)
class Labelled:
    """One image: its faces as boxes (K, 4) x1y1x2y2 and landmarks (K, 5, 2), NaN where unknown, in its pixels."""

    image: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray


def read_labelled(path: Path) -> Labelled | None:
    import cv2

    from vigil.eval.wider import label_path, read_labels

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    truth = read_labels(label_path(path), image.shape[1], image.shape[0])
    points = truth.landmarks if truth.landmarks is not None else np.full((len(truth.boxes), 5, 2), np.nan)
    return Labelled(image, truth.boxes.astype(np.float32), points.astype(np.float32))


def place(
    sample: Labelled, canvas: np.ndarray, scale: float, x0: float, y0: float, clip: tuple[int, int, int, int]
) -> list[np.ndarray]:
    """Draw ``sample`` scaled by ``scale`` with its top-left at (x0, y0) onto ``canvas``, only inside ``clip``
    (x1, y1, x2, y2); returns its faces' boxes and landmarks moved there, as face rows (before cutting)."""
    import cv2

    h, w = sample.image.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(sample.image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    ix, iy = int(round(x0)), int(round(y0))
    cx1, cy1 = max(clip[0], ix), max(clip[1], iy)
    cx2, cy2 = min(clip[2], ix + nw), min(clip[3], iy + nh)
    if cx2 > cx1 and cy2 > cy1:
        canvas[cy1:cy2, cx1:cx2] = resized[cy1 - iy : cy2 - iy, cx1 - ix : cx2 - ix]
    sx, sy = nw / w, nh / h
    boxes = sample.boxes * [sx, sy, sx, sy] + [ix, iy, ix, iy]
    points = sample.landmarks * [sx, sy] + [ix, iy]
    return [boxes, points, np.asarray(clip, np.float32)]


def cut_faces(boxes: np.ndarray, points: np.ndarray, clip: np.ndarray, canvas: np.ndarray) -> np.ndarray:
    """Face rows of the faces that survive cutting to ``clip``; the ones cut away are painted grey on ``canvas``."""
    if len(boxes) == 0:
        return np.zeros((0, FACE_COLUMNS), np.float32)
    cut = np.stack(
        [
            np.maximum(boxes[:, 0], clip[0]),
            np.maximum(boxes[:, 1], clip[1]),
            np.minimum(boxes[:, 2], clip[2]),
            np.minimum(boxes[:, 3], clip[3]),
        ],
        1,
    )
    cw, chh = (cut[:, 2] - cut[:, 0]).clip(0), (cut[:, 3] - cut[:, 1]).clip(0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = (cw >= MIN_FACE_PX) & (chh >= MIN_FACE_PX) & (cw * chh >= MIN_KEPT_AREA * np.maximum(area, 1e-6))
    for x1, y1, x2, y2 in cut[~keep & (cw > 0) & (chh > 0)]:
        canvas[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = PAD_VALUE
    cut, points = cut[keep], points[keep]
    visible = (
        np.isfinite(points).all(axis=2)
        & (points[..., 0] >= clip[0])
        & (points[..., 0] < clip[2])
        & (points[..., 1] >= clip[1])
        & (points[..., 1] < clip[3])
    )
    coords = np.where(visible[..., None], points, 0.0).reshape(-1, 10)
    xywh = np.stack(
        [(cut[:, 0] + cut[:, 2]) / 2, (cut[:, 1] + cut[:, 3]) / 2, cut[:, 2] - cut[:, 0], cut[:, 3] - cut[:, 1]], 1
    )
    return np.concatenate([xywh, coords, visible.astype(np.float32)], axis=1).astype(np.float32)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def letterbox_sample(sample: Labelled, aug: Augment, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = aug.imgsz
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    h, w = sample.image.shape[:2]
    scale = size * _log_uniform(rng, *aug.scale) / max(h, w)
    nw, nh = w * scale, h * scale
    x0 = rng.uniform(min(0.0, size - nw), max(0.0, size - nw))
    y0 = rng.uniform(min(0.0, size - nh), max(0.0, size - nh))
    boxes, points, clip = place(sample, canvas, scale, x0, y0, (0, 0, size, size))
    return canvas, cut_faces(boxes, points, clip, canvas)


def mosaic_sample(samples: Sequence[Labelled], aug: Augment, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Four images around a random centre, each scaled to about half the canvas (times ``scale``)."""
    size = aug.imgsz
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    cx, cy = (int(rng.uniform(0.3, 0.7) * size) for _ in range(2))
    rows = []
    for quadrant, sample in enumerate(samples[:4]):
        h, w = sample.image.shape[:2]
        scale = 0.5 * size * _log_uniform(rng, *aug.scale) / max(h, w)
        nw, nh = w * scale, h * scale
        right, below = quadrant % 2 == 1, quadrant >= 2
        clip = (cx if right else 0, cy if below else 0, size if right else cx, size if below else cy)
        x0 = cx if right else cx - nw
        y0 = cy if below else cy - nh
        boxes, points, clip_arr = place(sample, canvas, scale, x0, y0, clip)
        rows.append(cut_faces(boxes, points, clip_arr, canvas))
    return canvas, np.concatenate(rows) if rows else np.zeros((0, FACE_COLUMNS), np.float32)


def crop_window(
    canvas: np.ndarray, faces: np.ndarray, side: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A ``side`` square window of ``canvas`` (around a random face 80 % of the time) and its faces cut to it."""
    size = canvas.shape[0]
    if side >= size:
        return canvas, faces
    if len(faces) and rng.random() < 0.8:
        cx, cy = faces[int(rng.integers(len(faces))), :2] + rng.uniform(-0.4, 0.4, 2) * side
    else:
        cx, cy = rng.uniform(0, size, 2)
    x0 = int(np.clip(cx - side / 2, 0, size - side))
    y0 = int(np.clip(cy - side / 2, 0, size - side))
    window = canvas[y0 : y0 + side, x0 : x0 + side].copy()
    boxes = np.stack(
        [
            faces[:, 0] - faces[:, 2] / 2,
            faces[:, 1] - faces[:, 3] / 2,
            faces[:, 0] + faces[:, 2] / 2,
            faces[:, 1] + faces[:, 3] / 2,
        ],
        1,
    ) - [x0, y0, x0, y0]
    points = np.where(faces[:, 14:19, None] > 0, faces[:, 4:14].reshape(-1, 5, 2) - [x0, y0], np.nan)
    return window, cut_faces(
        boxes.astype(np.float32), points.astype(np.float32), np.asarray([0, 0, side, side], np.float32), window
    )


def flip_lr(canvas: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image and faces; landmark slots swapped so the order stays image-left first."""
    size = canvas.shape[1]
    faces = faces.copy()
    faces[:, 0] = size - faces[:, 0]
    points = faces[:, 4:14].reshape(-1, 5, 2)[:, list(LANDMARK_FLIP_INDEX)]
    visible = faces[:, 14:19][:, list(LANDMARK_FLIP_INDEX)]
    points[..., 0] = np.where(visible > 0, size - points[..., 0], 0.0)
    faces[:, 4:14], faces[:, 14:19] = points.reshape(-1, 10), visible
    return np.ascontiguousarray(canvas[:, ::-1]), faces


def jitter_hsv(canvas: np.ndarray, gains: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    import cv2

    r = rng.uniform(-1, 1, 3) * np.asarray(gains) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(canvas, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * r[0]) % 180).astype(np.uint8)
    lut_s, lut_v = np.clip(x * r[1], 0, 255).astype(np.uint8), np.clip(x * r[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(merged, cv2.COLOR_HSV2BGR)


class TrainImages:
    """Random augmented training canvases from a list of labelled image files (read on demand, small LRU-free)."""

    def __init__(self, files: Sequence[Path], aug: Augment, seed: int) -> None:
        if not files:
            raise ValueError("no training images")
        self.files, self.aug = list(files), aug
        self.rng = np.random.default_rng(seed)

    def _read(self, index: int) -> Labelled:
        for offset in range(len(self.files)):  # an unreadable file is skipped for the next one
            sample = read_labelled(self.files[(index + offset) % len(self.files)])
            if sample is not None:
                return sample
        raise ValueError("no readable training image")

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(BGR canvas, face rows) for file ``index`` (plus three random others in a mosaic)."""
        if self.rng.random() < self.aug.mosaic:
            picks = [index] + [int(i) for i in self.rng.integers(len(self.files), size=3)]
            canvas, faces = mosaic_sample([self._read(i) for i in picks], self.aug, self.rng)
        else:
            canvas, faces = letterbox_sample(self._read(index), self.aug, self.rng)
        canvas, faces = crop_window(canvas, faces, self.aug.canvas, self.rng)
        if self.rng.random() < self.aug.flip:
            canvas, faces = flip_lr(canvas, faces)
        return jitter_hsv(canvas, self.aug.hsv, self.rng), faces

    def batch(self, indices: Sequence[int]):
        """(float tensor ``[N, 3, S, S]`` RGB in [0, 1], targets ``(M, 20)``) for ``indices``."""
        import torch

        from pipelines.detector.v5loss import targets_tensor
        from vigil.yolov5_face import to_blob

        drawn = [self.sample(i) for i in indices]
        return torch.from_numpy(to_blob([canvas for canvas, _ in drawn])), targets_tensor([faces for _, faces in drawn])
