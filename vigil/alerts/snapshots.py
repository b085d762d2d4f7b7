"""The face crop saved with an event: ``<data_dir>/snapshots/<YYYY-MM-DD>/<id>.jpg``."""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

log = logging.getLogger("vigil.alerts")

SNAPSHOT_DIRNAME = "snapshots"


def snapshot_path(data_dir: Path | str, event_id: str, day: date | None = None) -> Path:
    """``<data_dir>/snapshots/<YYYY-MM-DD>/<id>.jpg`` (UTC date of today unless ``day`` is given)."""
    day = day or datetime.now(UTC).date()
    return Path(data_dir) / SNAPSHOT_DIRNAME / day.isoformat() / f"{event_id}.jpg"


def save_snapshot(data_dir: Path | str, event_id: str, image_bgr: np.ndarray, day: date | None = None) -> str | None:
    """Write a face crop as JPEG (atomically: temp file, then rename); returns its path, or None with a warning.

    A failed snapshot must not cost the alert, so this never raises for I/O or encoding problems.
    """
    import cv2  # heavy; only needed when a snapshot is saved

    path = snapshot_path(data_dir, event_id, day)
    try:
        if image_bgr is None or image_bgr.size == 0:
            raise ValueError("empty image")
        ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image_bgr), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise ValueError("JPEG encoding failed")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jpg.tmp")
        tmp.write_bytes(encoded.tobytes())
        os.replace(tmp, path)
    except (OSError, ValueError, cv2.error) as exc:
        log.warning("%s: cannot save snapshot (%s)", path, exc)
        return None
    return str(path)
