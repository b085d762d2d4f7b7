"""Checks on an uploaded photo before anything is written: name, size, real image, pixel count (decompression bombs).

The image header is read with Pillow (dimensions without decoding); only an image under ``max_pixels`` is decoded,
with OpenCV as enrolment reads photos. Each refusal is an :class:`UploadError` with an HTTP status and one line.
"""

from __future__ import annotations

import io
import re
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
FILENAME_PATTERN = r"^[^/\\\x00-\x1f\x7f]{1,255}$"


class UploadError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_filename(name: str | None) -> None:
    """Refuse names that try to point elsewhere (the stored file is named by its content, never by this)."""
    if not name:
        return
    if not re.fullmatch(FILENAME_PATTERN, name) or name.startswith(".") or ".." in name:
        raise UploadError(
            422, f"file name {name[:80]!r} is not allowed (no path separators, '..', leading dot or control characters)"
        )


def decode_photo(data: bytes, max_bytes: int, max_pixels: int) -> tuple[str, np.ndarray]:
    """(file suffix, BGR image) of an acceptable photo; UploadError otherwise."""
    if len(data) > max_bytes:
        raise UploadError(413, f"photo is {len(data)} bytes, over the limit of {max_bytes}")
    if not data:
        raise UploadError(422, "photo is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                image_format, (width, height) = header.format, header.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(
            413, f"image has too many pixels (over {max_pixels}): refused as a decompression bomb"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UploadError(415, "not an image: upload a JPEG, PNG or WebP photo") from None
    if image_format not in FORMATS:
        raise UploadError(415, f"{image_format} images are not accepted: upload a JPEG, PNG or WebP photo")
    if width * height > max_pixels:
        raise UploadError(
            413, f"image is {width}x{height} pixels, over the limit of {max_pixels}: refused as a decompression bomb"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UploadError(422, f"{image_format} image does not decode (truncated or corrupt)")
    return FORMATS[image_format], image
