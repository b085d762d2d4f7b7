"""Ship a trained detector: strip the checkpoint, export ONNX with dynamic shapes, register both in the manifest.

    YOLO_OFFLINE=1 python -m pipelines.detector.export --weights work/detector/cpu_runs/RUN/weights/last.pt \\
        --name vigil-face-n-cpu480 --imgsz 480 [--default-onnx]

Writes ``models/detector/<name>.pt`` (optimizer stripped; Ultralytics keeps fp16 weights) and ``<name>.onnx``
(Ultralytics export, ``dynamic=True``: any batch, height and width, so a 16:9 frame is letterboxed to 480x288 as
with the .pt). The ONNX file stores its float weights as fp16 with a Cast to fp32 in front of each (the
recognizer converter's ``weights_to_fp16``), which halves the file (12.4 -> 6.2 MB) at no cost in accuracy: the .pt's
weights already are fp16, and onnxruntime folds the casts once at load, so inference stays fp32. Both files go
into ``models/manifest.yaml`` with their sha256; the manifest's default detector is left as it is unless
``--default-onnx`` is given. The model card is written by hand.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipelines.manifest import add_entry
from pipelines.recognizer.convert import weights_to_fp16
from vigil.errors import VigilError, run_reporting_errors
from vigil.paths import models_dir
from vigil.types import LANDMARK_FLIP_INDEX, LANDMARK_NAMES

LOG = logging.getLogger("export")


def export_onnx(weights: Path, out: Path, imgsz: int) -> Path:
    """Ultralytics' ONNX export of ``weights`` with dynamic batch/height/width, weights stored as fp16."""
    import onnx

    from vigil.ultralytics_offline import configure_ultralytics_offline

    configure_ultralytics_offline()
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "model.pt"
        shutil.copy(weights, copy)
        exported = Path(YOLO(str(copy)).export(format="onnx", dynamic=True, imgsz=imgsz, simplify=False))
        model = onnx.load(str(exported))
        weights_to_fp16(model)
        onnx.checker.check_model(model)
        onnx.save(model, str(out))
    return out


def strip_checkpoint(weights: Path, out: Path) -> Path:
    from vigil.ultralytics_offline import configure_ultralytics_offline

    configure_ultralytics_offline()
    from ultralytics.utils.torch_utils import strip_optimizer

    shutil.copy(weights, out)
    strip_optimizer(str(out))
    return out


def compare_detections(pt: Path, onnx_path: Path, imgsz: int, images: list[np.ndarray]) -> float:
    """Mean absolute landmark difference (px) between the .pt and the ONNX file on matched faces; raises if the
    face counts differ."""
    from vigil.detect import FaceDetector

    a = FaceDetector(pt, imgsz=imgsz, device="cpu").detect(images)
    b = FaceDetector(onnx_path, imgsz=imgsz, device="cpu").detect(images)
    diffs = []
    for index, (faces_a, faces_b) in enumerate(zip(a, b)):
        if len(faces_a) != len(faces_b):
            raise VigilError(f"{onnx_path}: image {index}: {len(faces_b)} faces vs {len(faces_a)} from {pt.name}")
        for fa, fb in zip(faces_a, faces_b):
            diffs.append(float(np.abs(fa.landmarks - fb.landmarks).mean()))
    return float(np.mean(diffs)) if diffs else 0.0


def _sample_images() -> list[np.ndarray]:
    import cv2

    from vigil.paths import data_path

    capture = cv2.VideoCapture(str(data_path("video", "short_hamilton_clip.mp4")))
    images = []
    for _ in range(4):
        ok, frame = capture.read()
        if ok:
            images.append(frame)
        for _ in range(60):
            capture.grab()
    capture.release()
    return images


def register(root: Path, name: str, imgsz: int, default_onnx: bool) -> None:
    common = {
        "architecture": "YOLOv8n-pose, 1 class (face), 5 keypoints",
        "input_size": [imgsz, imgsz],
        "keypoints": list(LANDMARK_NAMES),
        "flip_idx": list(LANDMARK_FLIP_INDEX),
        "card": f"detector/{name}.md",
    }
    add_entry(root, name, "detector", f"detector/{name}.pt", {"format": "ultralytics", **common}, make_default=False)
    onnx_meta = {
        "format": "onnx",
        **common,
        "architecture": f"{common['architecture']}; ONNX export (dynamic=True, imgsz {imgsz}) of {name}.pt, "
        "weights stored fp16 and cast to fp32 in the graph",
        "input_note": "dynamic batch and image shape; Ultralytics letterboxes to the minimal rectangle "
        "(e.g. 480x288 for 16:9), as with the .pt",
    }
    add_entry(root, f"{name}-onnx", "detector", f"detector/{name}.onnx", onnx_meta, make_default=default_onnx)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True, help="an Ultralytics pose checkpoint (last.pt/best.pt)")
    parser.add_argument("--name", required=True, help="model name: models/detector/<name>.pt and .onnx")
    parser.add_argument("--imgsz", type=int, default=480, help="default inference size written to the manifest")
    parser.add_argument("--default-onnx", action="store_true", help="make the ONNX export the default detector")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: the repo's models/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    def run() -> int:
        if not args.weights.is_file():
            raise VigilError(f"{args.weights}: checkpoint not found")
        root = args.models_dir or models_dir()
        pt = strip_checkpoint(args.weights, root / "detector" / f"{args.name}.pt")
        onnx_path = export_onnx(pt, root / "detector" / f"{args.name}.onnx", args.imgsz)
        LOG.info(
            "%s: %.1f MiB; %s: %.1f MiB",
            pt.name,
            pt.stat().st_size / 2**20,
            onnx_path.name,
            onnx_path.stat().st_size / 2**20,
        )
        drift = compare_detections(pt, onnx_path, args.imgsz, _sample_images())
        LOG.info("ONNX vs .pt on 4 Hamilton frames: same face counts, mean landmark difference %.3f px", drift)
        register(root, args.name, args.imgsz, args.default_onnx)
        return 0

    return run_reporting_errors(run)


if __name__ == "__main__":
    raise SystemExit(main())
