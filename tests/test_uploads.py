"""Upload checks, table-driven: format by magic bytes, header-only size check, decode; never PIL.Image.open (which
Ultralytics patches to install a HEIF plugin on an unknown file)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vigil.server.uploads import UploadError, check_filename, decode_photo


def encoded(ext: str, size: int = 32) -> bytes:
    return cv2.imencode(ext, np.full((size, size, 3), 90, np.uint8))[1].tobytes()


@pytest.mark.parametrize("ext, suffix", [(".jpg", ".jpg"), (".png", ".png"), (".webp", ".webp")])
def test_accepted_formats(ext, suffix):
    got_suffix, image = decode_photo(encoded(ext), 10**6, 10**6)
    assert got_suffix == suffix and image.shape == (32, 32, 3)


@pytest.mark.parametrize(
    "data, status, message",
    [
        (b"", 422, "empty"),
        (b"GIF89a" + bytes(100), 415, "not an image"),
        (b"%PDF-1.4 not a photo", 415, "not an image"),
        (encoded(".png")[:30], 422, "unreadable"),
        (b"\xff\xd8\xff\xe0" + bytes(50), 422, "JPEG"),
        (encoded(".png", size=200), 413, "decompression bomb"),  # 40,000 px against a limit of 10,000
        (encoded(".jpg") + bytes(2000), 413, "over the limit"),
    ],
)
def test_refusals(data, status, message):
    with pytest.raises(UploadError) as refused:
        decode_photo(data, 1500, 10_000)
    assert refused.value.status == status and message in refused.value.message


def test_an_unknown_file_never_reaches_pil_image_open(monkeypatch):
    from PIL import Image

    def exploding_open(*args, **kwargs):
        raise AssertionError("PIL.Image.open was called")

    monkeypatch.setattr(Image, "open", exploding_open)
    with pytest.raises(UploadError, match="not an image"):
        decode_photo(b"\x00\x01 definitely not an image", 10**6, 10**6)
    decode_photo(encoded(".png"), 10**6, 10**6)


@pytest.mark.parametrize(
    "name, ok",
    [
        ("photo.jpg", True),
        ("Ünïcode face.png", True),
        (None, True),
        ("../../etc/passwd", False),
        ("a/b.jpg", False),
        ("a\\\\b.jpg", False),
        (".hidden.jpg", False),
        ("x\\x00.jpg", False),
        ("..jpg", False),
    ],
)
def test_file_names(name, ok):
    if ok:
        check_filename(name)
    else:
        with pytest.raises(UploadError, match="not allowed"):
            check_filename(name)
