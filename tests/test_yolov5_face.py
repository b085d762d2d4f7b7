"""The YOLOv5-face runtime family (vigil/yolov5_face.py): anchor decoding with known answers, letterbox geometry,
layout checks, family choice in vigil.detect, and the source model through FaceDetector."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vigil.errors import ModelError
from vigil.paths import models_dir
from vigil.yolov5_face import (
    DEFAULT_ANCHORS_PX,
    Decoded,
    Letterbox,
    canvas_shape,
    decode_image,
    decode_level,
    layout_problem,
    letterbox,
    to_faces,
)

LFW_SINGLE_FACE = ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "George_W_Bush/George_W_Bush_0001.jpg"]
SOURCE = ("weights", "yolov5n-0.5.onnx")


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _one_hot_level(anchors: int, h: int, w: int, at: tuple[int, int, int], values: dict[int, float]) -> np.ndarray:
    """A raw level ``(A, H, W, 16)`` that scores ~0 everywhere except one anchor cell with the given raw values."""
    raw = np.zeros((anchors, h, w, 16), np.float32)
    raw[..., 4] = -20.0
    for column, value in values.items():
        raw[at][column] = value
    return raw


def test_decode_level_known_answer():
    """t_xy = 0 puts the centre mid-cell, t_wh = 0 gives the anchor, landmarks are t * anchor + cell corner."""
    anchors = np.asarray(DEFAULT_ANCHORS_PX[1], np.float32)  # stride 16: (23, 29), (43, 55), (73, 105)
    values = {4: _logit(0.9), 15: _logit(0.8), 2: _logit(0.75), 5: 0.5, 6: 0.25, 13: -1.0, 14: 2.0}
    raw = _one_hot_level(3, 4, 5, (1, 2, 3), values)  # anchor 1 (43 x 55), row 2, column 3
    decoded = decode_level(raw, 16.0, anchors, conf_threshold=0.5)
    assert decoded.scores.shape == (1,)
    assert decoded.scores[0] == pytest.approx(0.72, abs=1e-5)
    cx, cy = (0.5 + 3) * 16, (0.5 + 2) * 16  # (2 * 0.5 - 0.5 + cell) * stride
    w, h = (2 * 0.75) ** 2 * 43, 55.0
    np.testing.assert_allclose(decoded.boxes[0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-4)
    np.testing.assert_allclose(decoded.landmarks[0, 0], [0.5 * 43 + 48, 0.25 * 55 + 32], atol=1e-4)
    np.testing.assert_allclose(decoded.landmarks[0, 4], [-1.0 * 43 + 48, 2.0 * 55 + 32], atol=1e-4)
    np.testing.assert_allclose(decoded.landmarks[0, 1:4], np.tile([48, 32], (3, 1)), atol=1e-4)
    assert len(decode_level(raw, 16.0, anchors, conf_threshold=0.75).scores) == 0


def test_decode_image_reads_each_stride_from_its_shape_in_any_order():
    """Levels of a 64 x 96 input given largest stride first still get the right strides and anchors."""
    fine = _one_hot_level(3, 8, 12, (0, 0, 0), {4: 5.0, 15: 5.0})  # stride 8, anchor (4, 5)
    coarse = _one_hot_level(3, 2, 3, (2, 1, 2), {4: 5.0, 15: 5.0})  # stride 32, anchor (335, 433)
    middle = np.zeros((3, 4, 6, 16), np.float32) - 20.0
    decoded = decode_image([coarse, middle, fine], (64, 96), DEFAULT_ANCHORS_PX, 0.5)
    centres = sorted(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0]) for b in decoded.boxes)
    np.testing.assert_allclose(centres[0], [4.0, 4.0, 4.0], atol=1e-3)
    np.testing.assert_allclose(centres[1], [(2 + 0.5) * 32, (1 + 0.5) * 32, 335.0], atol=1e-3)


@pytest.mark.parametrize(
    "shapes, imgsz, expected",
    [
        ([(360, 640)], 640, (384, 640)),
        ([(1080, 1920)], 480, (288, 480)),
        ([(416, 416)], 640, (640, 640)),
        ([(360, 640), (640, 360)], 320, (320, 320)),
    ],
)
def test_canvas_shape(shapes, imgsz, expected):
    assert canvas_shape(shapes, imgsz) == expected


def test_letterbox_round_trip():
    """A face drawn in image pixels comes back where it was after letterboxing and undoing it."""
    image = np.zeros((360, 640, 3), np.uint8)
    canvas, box = letterbox(image, 320, canvas_shape([image.shape[:2]], 320))
    assert canvas.shape == (192, 320, 3) and box.scale == pytest.approx(0.5) and (box.pad_x, box.pad_y) == (0.0, 6.0)
    face_canvas = Decoded(
        np.asarray([[50, 56, 70, 76]], np.float32), np.asarray([0.9], np.float32), np.full((1, 5, 2), 60, np.float32)
    )
    faces = to_faces(face_canvas, box, (360, 640))
    np.testing.assert_allclose(faces[0].box, [100, 100, 140, 140])
    np.testing.assert_allclose(faces[0].landmarks[0], [120, 108])
    clipped = to_faces(
        Decoded(
            np.asarray([[-10, -10, 4, 4]], np.float32), np.asarray([0.5], np.float32), np.zeros((1, 5, 2), np.float32)
        ),
        Letterbox(1.0, 0.0, 0.0),
        (100, 100),
    )
    np.testing.assert_allclose(clipped[0].box, [0, 0, 4, 4])


@pytest.mark.parametrize(
    "outputs, problem",
    [
        ([("a", [1, 3, 80, 80, 16]), ("b", [1, 3, 40, 40, 16]), ("c", ["n", 3, "h", "w", 16])], None),
        ([("out", [1, 20, 8400])], "expected 3 outputs"),
        ([("a", [1, 3, 80, 80, 16]), ("b", [1, 3, 40, 40, 16]), ("c", [1, 3, 20, 20, 6])], "output c has shape"),
        ([("a", [1, 48, 80, 80]), ("b", [1, 48, 40, 40]), ("c", [1, 48, 20, 20])], "output a has shape"),
    ],
)
def test_layout_problem(outputs, problem):
    found = layout_problem(outputs)
    assert found is None if problem is None else problem in found


def _wrong_family_onnx() -> Path:
    path = models_dir() / "landmarks" / "vigil-landmarks-96.onnx"
    if not path.is_file():
        pytest.skip("the landmark refiner ONNX (a non-detector ONNX) is not in models/")
    return path


def test_wrong_family_onnx_is_one_line_model_error():
    from vigil.detect import FaceDetector, detector_family

    path = _wrong_family_onnx()
    for call in (
        lambda: detector_family(path),
        lambda: FaceDetector(path, device="cpu"),
        lambda: FaceDetector(path, device="cpu", model_format="yolov5-face"),
    ):
        with pytest.raises(ModelError) as info:
            call()
        text = str(info.value)
        assert text.startswith(f"{path}: ") and "\n" not in text and "yolov5-face" in text


def test_wrong_family_onnx_on_the_command_line_exits_non_zero_with_one_line(tmp_path):
    path = _wrong_family_onnx()
    data = tmp_path / "data.yaml"
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"")
    data.write_text("val: images\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vigil.cli",
            "eval",
            "wider",
            "--data",
            str(data),
            "--model",
            str(path),
            "--json",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and "not a face detector" in lines[0]


@pytest.fixture(scope="module")
def source_detector():
    from conftest import require_data

    from vigil.detect import FaceDetector

    return FaceDetector(require_data(*SOURCE), imgsz=640, conf_threshold=0.35, device="cpu")


def test_source_model_runs_through_the_runtime_family(source_detector, shared_data):
    """The unmodified source file (fixed 1x3x640x640 input) is picked as yolov5-face and finds the LFW faces."""
    import cv2

    assert source_detector.family == "yolov5-face" and source_detector.imgsz == 640
    images = [cv2.imread(str(shared_data("lfw") / name)) for name in LFW_SINGLE_FACE]
    for name, faces in zip(LFW_SINGLE_FACE, source_detector.detect(images)):
        assert len(faces) == 1, name
        x1, y1, x2, y2 = faces[0].box
        left_eye, right_eye = faces[0].landmarks[0], faces[0].landmarks[1]
        assert x1 < 125 < x2 and y1 < 125 < y2 and left_eye[0] < right_eye[0], name
