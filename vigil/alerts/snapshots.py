"""The face crop saved with an event: ``<data_dir>/snapshots/<YYYY-MM-DD>/<id>.jpg``.

The pipeline cuts a :class:`~vigil.types.FaceCrop` (the box plus ``SNAPSHOT_MARGIN`` on each side) from every
embedded face while snapshots are on; the track keeps the best one, and an event saves it (:func:`save_snapshot`).
With ``alerts.update_snapshot`` a better face of the same track later replaces the file (:func:`replace_snapshot`).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

from vigil.types import Face, FaceCrop, Frame

log = logging.getLogger("vigil.alerts")

SNAPSHOT_DIRNAME = "snapshots"
SNAPSHOT_MARGIN = 0.25  # fraction of the box size added around a face in its snapshot
JPEG_QUALITY = 90


def crop_with_margin(image: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """The part of ``image`` inside ``box`` grown by ``margin`` of its size on each side, clipped to the image (a
    view; the whole image when the box lies outside it)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    h, w = image.shape[:2]
    left, top = max(int(x1 - dx), 0), max(int(y1 - dy), 0)
    right, bottom = min(int(x2 + dx) + 1, w), min(int(y2 + dy) + 1, h)
    if right <= left or bottom <= top:
        return image
    return image[top:bottom, left:right]


def face_crop(frame: Frame, face: Face, quality: float) -> FaceCrop:
    """``face`` (in the pixels of ``frame.face_image``: the main stream's for a two-source camera) cut with the
    snapshot margin, as an owned copy (a kept view would pin the frame)."""
    image = np.ascontiguousarray(crop_with_margin(frame.face_image, face.box, SNAPSHOT_MARGIN)).copy()
    return FaceCrop(frame.index, frame.video_ts_s, float(quality), np.asarray(face.box, np.float32).copy(), image)


def snapshot_path(data_dir: Path | str, event_id: str, day: date | None = None) -> Path:
    """``<data_dir>/snapshots/<YYYY-MM-DD>/<id>.jpg`` (UTC date of today unless ``day`` is given)."""
    day = day or datetime.now(UTC).date()
    return Path(data_dir) / SNAPSHOT_DIRNAME / day.isoformat() / f"{event_id}.jpg"


def save_snapshot(data_dir: Path | str, event_id: str, image_bgr: np.ndarray, day: date | None = None) -> str | None:
    """Write a face crop as JPEG (atomically: temp file, then rename); returns its path, or None with a warning.

    A failed snapshot must not cost the alert, so this never raises for I/O or encoding problems.
    """
    path = snapshot_path(data_dir, event_id, day)
    return str(path) if write_jpeg(path, image_bgr) else None


def replace_snapshot(path: Path | str, image_bgr: np.ndarray) -> bool:
    """Overwrite an event's snapshot with a better face (atomically); False, with a warning, when it fails."""
    return write_jpeg(Path(path), image_bgr)


def write_jpeg(path: Path, image_bgr: np.ndarray) -> bool:
    """Encode and write atomically (temp file, then rename); False with a warning on any I/O or encoding problem."""
    import cv2  # heavy; only needed when a snapshot is saved

    try:
        if image_bgr is None or image_bgr.size == 0:
            raise ValueError("empty image")
        ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image_bgr), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("JPEG encoding failed")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jpg.tmp")
        tmp.write_bytes(encoded.tobytes())
        os.replace(tmp, path)
    except (OSError, ValueError, cv2.error) as exc:
        log.warning("%s: cannot save snapshot (%s)", path, exc)
        return False
    return True
