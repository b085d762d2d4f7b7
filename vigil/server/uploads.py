"""Checks on an uploaded photo before anything is written: name, size, real image, pixel count (decompression bombs).

The format is told by the file's magic bytes and the header read by that format's Pillow reader (dimensions without
decoding; not ``PIL.Image.open``, which Ultralytics replaces process-wide with a version that would try to install a
HEIF plugin for an unknown file); only an image under ``max_pixels`` is decoded, with OpenCV as enrolment reads
photos. Each refusal is an :class:`UploadError` with an HTTP status and one line.
"""

from __future__ import annotations

import io
import re
import struct

import cv2
import numpy as np
from PIL import ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

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


def sniff_format(data: bytes) -> tuple[str, type[ImageFile.ImageFile]]:
    """The image format by its magic bytes, and Pillow's reader for it; 415 for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG", JpegImagePlugin.JpegImageFile
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG", PngImagePlugin.PngImageFile
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP", WebPImagePlugin.WebPImageFile
    raise UploadError(415, "not an image: upload a JPEG, PNG or WebP photo")


def decode_photo(data: bytes, max_bytes: int, max_pixels: int) -> tuple[str, np.ndarray]:
    """(file suffix, BGR image) of an acceptable photo; UploadError otherwise."""
    if len(data) > max_bytes:
        raise UploadError(413, f"photo is {len(data)} bytes, over the limit of {max_bytes}")
    if not data:
        raise UploadError(422, "photo is empty")
    image_format, reader = sniff_format(data)
    try:
        with reader(io.BytesIO(data)) as header:
            width, height = header.size
    except (OSError, ValueError, SyntaxError, EOFError, struct.error):
        raise UploadError(422, f"{image_format} header is unreadable (truncated or corrupt)") from None
    if width * height > max_pixels:
        raise UploadError(
            413, f"image is {width}x{height} pixels, over the limit of {max_pixels}: refused as a decompression bomb"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UploadError(422, f"{image_format} image does not decode (truncated or corrupt)")
    return FORMATS[image_format], image
