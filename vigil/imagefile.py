"""Checks on an image file's bytes before it is decoded: empty, cut short, or too large to decode safely.

OpenCV decodes a JPEG that was cut short (a copy interrupted, a partial upload) without an error: libjpeg prints
"Premature end of JPEG file" on stderr and fills the rest of the picture with grey, and such a photo was enrolled
silently. :func:`image_problem` looks at the container itself: a JPEG must end its last scan with the end-of-image
marker, a PNG must reach its ``IEND`` chunk. It also reads the pixel size from the header (JPEG SOFn, PNG IHDR) so
that a small file claiming a huge picture (a decompression bomb) is refused before any memory is allocated.
Other formats are left to the decoder.
"""

from __future__ import annotations

import struct

import numpy as np

MAX_IMAGE_PIXELS = 40_000_000  # 40 Mpx: above any camera still a watchlist needs, far below what would exhaust memory
_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = b"\xff\xd8", b"\xff\xd9", b"\xff\xda"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_problem(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why these bytes are not a whole image vigil should decode (None when nothing is known to be wrong)."""
    if not data:
        return "empty file"
    if data.startswith(_JPEG_SOI):
        return _jpeg_problem(data, max_pixels)
    if data.startswith(_PNG_SIGNATURE):
        return _png_problem(data, max_pixels)
    return None


def _too_large(width: int, height: int, max_pixels: int) -> str | None:
    if width * height > max_pixels:
        return f"image too large ({width}x{height} px, limit {max_pixels / 1e6:.0f} Mpx)"
    return None


def _jpeg_problem(data: bytes, max_pixels: int) -> str | None:
    size = _jpeg_size(data)
    if size is not None and (problem := _too_large(*size, max_pixels)):
        return problem
    last_scan = data.rfind(_JPEG_SOS)
    if last_scan < 0 or data.find(_JPEG_EOI, last_scan) < 0:
        return "truncated JPEG (no end-of-image marker after the last scan)"
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOFn segment, walking the marker segments before the first scan."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker == 0xDA:
            return None
        pos += 2 + length
    return None


def _png_problem(data: bytes, max_pixels: int) -> str | None:
    if len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        if problem := _too_large(width, height, max_pixels):
            return problem
    end = data.rfind(b"IEND")
    if end < 0 or len(data) < end + 8:  # the chunk type, then its 4-byte CRC
        return "truncated PNG (no IEND chunk)"
    return None


def decode_image(data: bytes) -> np.ndarray | None:
    """BGR pixels of an encoded image (None when OpenCV cannot decode it)."""
    import cv2

    if not data:
        return None
    return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
