"""5-point face alignment to a recognizer's template, and a face-quality score (shared by runtime and eval).

Landmarks are (5, 2) float arrays of (x, y) pixels in the vigil 5-point order (see vigil/types.py). A template
is the same five points in chip pixels of an S x S chip. The warp is the least-squares similarity transform
(rotation, uniform scale, translation; no reflection) from the face's landmarks to the template (Umeyama).
"""

from __future__ import annotations

import cv2
import numpy as np

from vigil.types import AlignedFace, Face

BORDER_MODES = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}
# Border fill where the chip reaches outside the image: replicate and constant measured level (models/recognizer/
# dlib-resnet-v1.md, "Parity with the reference"); replicate avoids hard black edges in the chip.
DEFAULT_BORDER = "replicate"
ANTIALIAS_BELOW_SCALE = 0.5  # warps that shrink the face by more than this first downscale with INTER_AREA

SIZE_SATURATION_PX = 80.0  # face box width at which the size term reaches 1
SIZE_FLOOR_PX = 10.0  # ... and below which it is 0
NOSE_DEPTH_FRONTAL = 0.55  # nose position between the eye line (0) and the mouth line (1) on a frontal face


def estimate_similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """2x3 float64 matrix M (least squares, no reflection) with ``dst ~ M @ [x, y, 1]`` for each src point.

    Umeyama (1991). Raises ValueError for mismatched shapes, fewer than 2 points or coincident source points.
    """
    src = np.asarray(src_pts, dtype=np.float64)
    dst = np.asarray(dst_pts, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two (K, 2) point arrays with K >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = float((src_c**2).sum()) / len(src)
    if src_var < 1e-12:
        raise ValueError("source points coincide")
    cov = dst_c.T @ src_c / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    signs = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = float((sigma * signs).sum()) / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def _scale_of(matrix: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def _antialiased_source(image: np.ndarray, matrix: np.ndarray, chip_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For strong shrinking: crop the chip's footprint, downscale it with INTER_AREA, return (image, matrix)."""
    scale = _scale_of(matrix)
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [chip_size, 0, 1], [0, chip_size, 1], [chip_size, chip_size, 1]], np.float64)
    footprint = corners @ inverse.T
    h, w = image.shape[:2]
    x0, y0 = np.clip(np.floor(footprint.min(axis=0)) - 2, 0, [w - 1, h - 1]).astype(int)
    x1, y1 = np.clip(np.ceil(footprint.max(axis=0)) + 3, [x0 + 1, y0 + 1], [w, h]).astype(int)
    crop = image[y0:y1, x0:x1]
    new_w, new_h = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
    small = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_AREA)
    sx, sy = crop.shape[1] / new_w, crop.shape[0] / new_h  # small pixel -> crop pixel
    to_crop = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])  # pixel centres
    to_image = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64) @ to_crop
    return small, (np.vstack([matrix, [0, 0, 1]]) @ to_image)[:2]


def align_face(
    image_bgr: np.ndarray,
    landmarks: np.ndarray,
    template: np.ndarray,
    chip_size: int,
    border: str = DEFAULT_BORDER,
) -> np.ndarray:
    """Warp the face to an S x S uint8 chip whose landmarks best fit ``template`` (chip pixels).

    cv2.warpAffine with INTER_LINEAR; ``border`` is "replicate" (default) or "constant" (black). When the warp
    shrinks the face below half size, the footprint is first downscaled with INTER_AREA (against aliasing).
    """
    matrix = estimate_similarity(landmarks, template)
    source = image_bgr
    if _scale_of(matrix) < ANTIALIAS_BELOW_SCALE:
        source, matrix = _antialiased_source(image_bgr, matrix, chip_size)
    return cv2.warpAffine(
        source, matrix, (chip_size, chip_size), flags=cv2.INTER_LINEAR, borderMode=BORDER_MODES[border]
    )


def _frontality(landmarks: np.ndarray) -> float:
    """1 for a frontal face, falling to 0 as the nose leaves the eye/mouth centre line (yaw) or depth (pitch)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    eye_mid = (pts[0] + pts[1]) / 2
    mouth_mid = (pts[3] + pts[4]) / 2
    axis = mouth_mid - eye_mid
    length = float(np.linalg.norm(axis))
    eye_dist = float(np.linalg.norm(pts[1] - pts[0]))
    if length < 1e-6 or eye_dist < 1e-6:
        return 0.0
    down = axis / length
    across = np.array([down[1], -down[0]])
    nose = pts[2] - eye_mid
    yaw = abs(float(nose @ across)) / eye_dist  # 0 frontal, ~0.5 near profile
    depth = float(nose @ down) / length  # ~0.55 frontal, toward 0 or 1 when pitched
    yaw_term = np.clip(1.0 - yaw / 0.5, 0.0, 1.0)
    pitch_term = np.clip(1.0 - abs(depth - NOSE_DEPTH_FRONTAL) / 0.45, 0.0, 1.0)
    return float(yaw_term * pitch_term)


def _inside_fraction(box: np.ndarray, frame_shape: tuple[int, ...]) -> float:
    """Fraction of the box's area inside the frame."""
    h, w = frame_shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    if area <= 0:
        return 0.0
    inside = max(min(x2, w) - max(x1, 0.0), 0.0) * max(min(y2, h) - max(y1, 0.0), 0.0)
    return inside / area


def face_quality(face: Face, frame_shape: tuple[int, ...]) -> float:
    """Quality in [0, 1]: size x frontality x detector score x share of the box inside the frame.

    size: box width in pixels, 0 at <= 10 px rising linearly to 1 at 80 px; frontality from the nose's place
    relative to the eyes and mouth; score term ``0.5 + 0.5 * score`` (the detector already passed it).
    """
    size = np.clip((face.width_px - SIZE_FLOOR_PX) / (SIZE_SATURATION_PX - SIZE_FLOOR_PX), 0.0, 1.0)
    score = 0.5 + 0.5 * float(np.clip(face.score, 0.0, 1.0))
    quality = size * _frontality(face.landmarks) * score * _inside_fraction(face.box, frame_shape)
    return float(np.clip(quality, 0.0, 1.0))


class Aligner:
    """Aligns detected faces to one recognizer's template: ``align(image, face) -> AlignedFace``."""

    def __init__(self, template: np.ndarray, chip_size: int, border: str = DEFAULT_BORDER) -> None:
        template = np.asarray(template, dtype=np.float64)
        if template.shape != (5, 2):
            raise ValueError(f"template must be (5, 2) chip pixels, got {template.shape}")
        if chip_size <= 0:
            raise ValueError(f"chip_size must be > 0, got {chip_size}")
        if border not in BORDER_MODES:
            raise ValueError(f"border must be one of {sorted(BORDER_MODES)}, got {border!r}")
        self.template = template
        self.chip_size = int(chip_size)
        self.border = border

    def align(self, image: np.ndarray, face: Face) -> AlignedFace:
        """The face's chip (S x S x 3 uint8, same colour order as ``image``) with its quality."""
        chip = align_face(image, face.landmarks, self.template, self.chip_size, self.border)
        return AlignedFace(face=face, chip=chip, quality=face_quality(face, image.shape))
