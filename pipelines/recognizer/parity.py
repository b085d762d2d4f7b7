"""Parity of the converted recognizer with dlib on LFW faces (same dlib-made chip for every backend).

    python -m pipelines.recognizer.parity --faces 200 --json work/recognizer/parity.json

For each selected LFW image: dlib's HOG detector (upsample 1) -> dlib's 5-point shape predictor ->
``dlib.get_face_chip(img, shape, size=150, padding=0.25)``; then dlib's descriptor, ours in torch and ours in
ONNX (fp16 weights and, when present, fp32 weights) on that same chip. Prints and saves min / mean cosine.
Images are chosen deterministically: evenly spaced over the sorted list of LFW files.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vigil.errors import VigilError
from vigil.paths import data_path, missing_data_reason

CHIP_SIZE = 150
CHIP_PADDING = 0.25


def lfw_sample(count: int, root: Path | None = None) -> list[Path]:
    """``count`` LFW image paths, evenly spaced over the sorted file list (deterministic)."""
    root = root or data_path("lfw")
    reason = missing_data_reason("lfw") if root == data_path("lfw") else None
    if reason or not root.is_dir():
        raise VigilError(reason or f"{root}: LFW folder not found")
    files = sorted(root.glob("*/*.jpg"))
    if not files:
        raise VigilError(f"{root}: no */*.jpg images")
    picks = np.linspace(0, len(files) - 1, num=min(count, len(files))).round().astype(int)
    return [files[i] for i in sorted(set(picks.tolist()))]


def read_rgb(path: Path) -> np.ndarray:
    """uint8 RGB image; VigilError when it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise VigilError(f"{path}: cannot read image")
    return np.ascontiguousarray(image[:, :, ::-1])


@dataclass
class DlibFace:
    """dlib's view of the largest face in an image."""

    rect: object  # dlib.rectangle: the detection
    shape: object  # dlib.full_object_detection (5 points)
    chip_rgb: np.ndarray  # 150 x 150 x 3 uint8 RGB, dlib.get_face_chip(..., padding=0.25)


class DlibReference:
    """dlib's detector, 5-point shape predictor and recognizer from the PyPI packages (the parity reference)."""

    def __init__(self) -> None:
        import dlib

        from pipelines.recognizer.dlib_dat import (
            SHAPE_PREDICTOR_5_FILE,
            SOURCE_MODEL_FILE,
            face_recognition_models_file,
        )

        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(face_recognition_models_file(SHAPE_PREDICTOR_5_FILE)))
        self.recognizer = dlib.face_recognition_model_v1(str(face_recognition_models_file(SOURCE_MODEL_FILE)))

    def face(self, image_rgb: np.ndarray) -> DlibFace | None:
        """The largest detected face with its dlib chip, or None."""
        rects = self.detector(image_rgb, 1)
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = self.predictor(image_rgb, rect)
        return DlibFace(rect=rect, shape=shape, chip_rgb=self.chip(image_rgb, shape))

    def chip(self, image_rgb: np.ndarray, shape) -> np.ndarray:
        """dlib.get_face_chip(image, shape, size=150, padding=0.25) as a uint8 RGB array."""
        return np.asarray(self._dlib.get_face_chip(image_rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING))

    def chip_transform(self, shape) -> np.ndarray:
        """2x3 matrix mapping image (x, y) to chip pixels, from dlib.get_face_chip_details(shape, 150, 0.25)."""
        details = self._dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
        return chip_details_to_matrix(details)

    def descriptor(self, chip_rgb: np.ndarray) -> np.ndarray:
        return np.asarray(self.recognizer.compute_face_descriptor(chip_rgb), dtype=np.float64)


def chip_details_to_matrix(details) -> np.ndarray:
    """2x3 similarity image -> chip pixels for a dlib.chip_details (rect, angle, rows, cols).

    dlib maps the chip's corners (0,0), (cols-1,0), (cols-1,rows-1) to the rectangle's corners rotated by
    ``angle`` about its centre (extract_image_chip); this is the inverse.
    """
    rect = details.rect
    cols, rows = details.cols, details.rows
    cx = (rect.left() + rect.right()) / 2.0
    cy = (rect.top() + rect.bottom()) / 2.0
    scale_x = (rect.right() - rect.left()) / (cols - 1)  # image pixels per chip pixel (dlib rects: inclusive)
    angle = details.angle
    cos, sin = np.cos(angle), np.sin(angle)
    # chip -> image: p_img = c + R(angle) * S * (p_chip - chip_centre)
    forward = np.array([[cos, -sin], [sin, cos]]) * scale_x
    chip_centre = np.array([(cols - 1) / 2.0, (rows - 1) / 2.0])
    inverse = np.linalg.inv(forward)
    offset = chip_centre - inverse @ np.array([cx, cy])
    return np.hstack([inverse, offset[:, None]])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def summarize(values: np.ndarray) -> dict[str, float]:
    """min / mean / count of a cosine array."""
    return {"min": float(values.min()), "mean": float(values.mean()), "count": int(values.size)}


def measure(faces: int, onnx_paths: dict[str, Path]) -> dict:
    """Run the comparison; returns the report dict."""
    from pipelines.recognizer.convert import onnx_embed, torch_embed
    from pipelines.recognizer.network import load_source_model

    ref = DlibReference()
    model = load_source_model()
    names: list[str] = []
    chips: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    skipped: list[str] = []
    for path in lfw_sample(faces):
        face = ref.face(read_rgb(path))
        if face is None:
            skipped.append(path.name)
            continue
        names.append(path.name)
        chips.append(face.chip_rgb)
        vectors.append(ref.descriptor(face.chip_rgb))
    if not chips:
        raise VigilError("no LFW face found by dlib's detector")
    chips_bgr = np.ascontiguousarray(np.stack(chips)[..., ::-1])
    dlib_vectors = np.stack(vectors)
    report: dict[str, Any] = {
        "faces_requested": faces,
        "faces_compared": len(names),
        "faces_skipped_no_detection": skipped,
    }
    report["torch"] = summarize(cosines(dlib_vectors, torch_embed(model, chips_bgr)))
    for key, path in onnx_paths.items():
        if path.is_file():
            report[key] = summarize(cosines(dlib_vectors, onnx_embed(path, chips_bgr)))
            report[key]["path"] = str(path)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=200, help="LFW images to try (evenly spaced, sorted)")
    parser.add_argument("--json", type=Path, default=Path("work/recognizer/parity.json"))
    parser.add_argument("--onnx", type=Path, default=Path("work/recognizer/dlib-resnet-v1.onnx"))
    parser.add_argument("--onnx-fp32", type=Path, default=Path("work/recognizer/dlib-resnet-v1-fp32.onnx"))
    args = parser.parse_args(argv)
    try:
        report = measure(args.faces, {"onnx_fp16_weights": args.onnx, "onnx_fp32_weights": args.onnx_fp32})
    except VigilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    skipped = len(report["faces_skipped_no_detection"])
    print(f"faces compared: {report['faces_compared']} (no dlib detection: {skipped})")
    for key in ("torch", "onnx_fp16_weights", "onnx_fp32_weights"):
        if key in report:
            print(f"{key:18s} cosine vs dlib: min {report[key]['min']:.7f}  mean {report[key]['mean']:.7f}")
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
