"""The degraded LFW ("surveillance LFW"): every LFW image made to look like a small, blurred, compressed CCTV face.

Definition (version ``vigil-degraded-lfw-v1``; enough to re-implement it):

1. **Seed.** ``rel`` is the image's path relative to the LFW folder, POSIX separators, as in pairs.txt terms
   (``"Aaron_Peirsol/Aaron_Peirsol_0001.jpg"``). ``seed = int.from_bytes(sha256(b"vigil-degraded-lfw-v1:" + rel
   in UTF-8).digest()[:8], "little")`` and ``rng = numpy.random.default_rng(seed)`` (PCG64). The draws, in this
   order: ``face_width_px = rng.uniform(24.0, 40.0)``; ``blur_sigma_px = rng.uniform(0.5, 1.2)``;
   ``jpeg_quality = int(rng.integers(20, 41))`` (20..40 inclusive). The same image always gets the same
   degradation, on any machine, independent of the order images are processed in.
2. **Scale.** ``scale = face_width_px / LFW_FACE_WIDTH_PX`` with ``LFW_FACE_WIDTH_PX = 97.3``: the median face
   box width on the 250 x 250 LFW images, measured once with the YuNet teacher
   (``face_detection_yunet_2026may.onnx`` via cv2.FaceDetectorYN at the native 250 px; the confident face,
   score >= 0.5, nearest the image centre; all 7,701 distinct images of pairs.txt, a face found in every one:
   median 97.3 px, 5th-95th percentile 88.7-111.7 px; command:
   ``python -m pipelines.recognizer.eval_with_teacher measure --teacher yunet --json ...``). Cross-check:
   SCRFD-2.5G on 400 evenly spaced of those images gives a median of 99.5 px (``--teacher scrfd_2.5g --limit 400``).
   The whole image is resized to ``(max(1, round(w * scale)), max(1, round(h * scale)))`` with ``cv2.INTER_AREA``
   (250 px -> 62..103 px), so the typical face is 24-40 px wide; each face still varies with its own size in
   the original (about +-10 %).
3. **Blur** at that low resolution: ``cv2.GaussianBlur(img, (0, 0), sigmaX=blur_sigma_px,
   sigmaY=blur_sigma_px)`` (kernel size chosen by OpenCV from sigma, default border BORDER_REFLECT_101).
4. **JPEG** at that low resolution: ``cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])``
   then ``cv2.imdecode(..., cv2.IMREAD_COLOR)`` (OpenCV's libjpeg defaults: baseline, 4:2:0 chroma).

The result stays small: the detector then runs on the small image, as it is configured (a detector that letterboxes
to a fixed input size scales it up, as it would a small frame), and the aligner warps the tiny face up to the
recognizer's chip, exactly as the runtime would for a distant face. (The shared LFW copy is grey-scale stored as
three equal channels; the degradation keeps it that way.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

VERSION = "vigil-degraded-lfw-v1"
LFW_FACE_WIDTH_PX = 97.3
FACE_WIDTH_RANGE_PX = (24.0, 40.0)
BLUR_SIGMA_RANGE_PX = (0.5, 1.2)
JPEG_QUALITY_RANGE = (20, 40)  # inclusive


@dataclass(frozen=True)
class DegradeParams:
    """The degradation of one image (see the module docstring)."""

    face_width_px: float  # target face width after scaling, px
    scale: float  # image scale factor (face_width_px / LFW_FACE_WIDTH_PX)
    blur_sigma_px: float  # Gaussian sigma at the low resolution, px
    jpeg_quality: int  # 20..40


def seed_for(rel_path: str) -> int:
    """A stable 64-bit seed from the image's relative path (sha256, never Python's salted ``hash``)."""
    key = rel_path.replace("\\", "/")
    digest = hashlib.sha256(f"{VERSION}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def degrade_params(rel_path: str) -> DegradeParams:
    """The deterministic degradation parameters of the image at ``rel_path`` (relative to the LFW folder)."""
    rng = np.random.default_rng(seed_for(rel_path))
    face_width = float(rng.uniform(*FACE_WIDTH_RANGE_PX))
    sigma = float(rng.uniform(*BLUR_SIGMA_RANGE_PX))
    quality = int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
    return DegradeParams(
        face_width_px=face_width, scale=face_width / LFW_FACE_WIDTH_PX, blur_sigma_px=sigma, jpeg_quality=quality
    )


def downscale(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize the whole image by ``scale`` (INTER_AREA), at least 1 x 1 px."""
    import cv2

    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode to JPEG at ``quality`` and decode again."""
    import cv2

    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the image")
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if decoded is None:
        raise RuntimeError("OpenCV could not decode the JPEG it encoded")
    return decoded


def degrade(image: np.ndarray, params: DegradeParams) -> np.ndarray:
    """Apply ``params``: downscale, blur, JPEG (in that order, all at the low resolution)."""
    return jpeg(blur(downscale(image, params.scale), params.blur_sigma_px), params.jpeg_quality)


def degrade_lfw_image(image: np.ndarray, rel_path: str) -> np.ndarray:
    """The degraded-LFW version of the LFW image ``image`` found at ``rel_path`` (e.g. ``"Name/Name_0001.jpg"``)."""
    return degrade(image, degrade_params(rel_path))
