"""Image bytes checked before decoding: cut-short JPEG and PNG files, empty files, decompression bombs."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from vigil.imagefile import image_problem


def _encode(ext: str, shape=(60, 80, 3)) -> bytes:
    rng = np.random.default_rng(0)
    ok, data = cv2.imencode(ext, rng.integers(0, 255, shape, dtype=np.uint8))
    assert ok
    return data.tobytes()


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


JPEG, PNG, PROGRESSIVE = _encode(".jpg"), _encode(".png"), None
CASES = [
    ("whole JPEG", JPEG, None),
    ("whole PNG", PNG, None),
    ("JPEG with bytes after its end (a trailer)", JPEG + b"\x00" * 16, None),
    ("JPEG cut in half", JPEG[: len(JPEG) // 2], "truncated JPEG"),
    ("JPEG missing its last 2 bytes", JPEG[:-2], "truncated JPEG"),
    ("JPEG header only", JPEG[:200], "truncated JPEG"),
    ("PNG cut in half", PNG[: len(PNG) // 2], "truncated PNG"),
    ("PNG missing its CRC", PNG[:-2], "truncated PNG"),
    ("empty", b"", "empty file"),
    ("PNG claiming 100000 x 100000 px", _png_header(100_000, 100_000) + b"IEND\x00\x00\x00\x00", "image too large"),
    ("not an image (left to the decoder)", b"hello", None),
]


@pytest.mark.parametrize(("name", "data", "problem"), CASES, ids=[c[0] for c in CASES])
def test_image_problem(name: str, data: bytes, problem: str | None) -> None:
    found = image_problem(data)
    assert (found is None) if problem is None else (found is not None and found.startswith(problem)), found


def test_a_jpeg_claiming_a_huge_size_is_refused_before_decoding() -> None:
    sof = JPEG.find(b"\xff\xc0")
    huge = JPEG[: sof + 5] + struct.pack(">HH", 60_000, 60_000) + JPEG[sof + 9 :]
    assert image_problem(huge) == "image too large (60000x60000 px, limit 40 Mpx)"
