"""Training pairs for the landmark refiner: vigil's detector box + a teacher's five landmarks, per face.

    python -m pipelines.landmarks.label --out work/landmarks/celeba_scrfd.npz [--limit N]

For every CelebA photo (``../shared/data/celeba299``; never LFW, which is the evaluation set) the runtime detector
(the default ONNX at its manifest size) and the SCRFD-2.5G teacher (at 640) both run; each vigil face that a
teacher face overlaps (IoU >= 0.5, teacher score >= 0.6) becomes one sample: the image key, vigil's box and
landmarks and the teacher's landmarks. The refiner learns to go from vigil's box to the teacher's points, so it
sees the boxes it will get at run time. The teacher stays in ``pipelines/`` (it is never shipped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vigil.errors import run_reporting_errors
from vigil.eval.detection_metrics import box_iou
from vigil.paths import data_path, repo_path


def match_faces(ours: list, teacher: list, min_iou: float, min_teacher_score: float) -> list[tuple]:
    """(our face, teacher face) pairs: each of our faces with its best-overlapping confident teacher face."""
    pairs = []
    confident = [t for t in teacher if t.score >= min_teacher_score]
    for face in ours:
        if not confident:
            break
        overlaps = box_iou(face.box, np.stack([t.box for t in confident]))[0]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= min_iou:
            pairs.append((face, confident[best]))
    return pairs


def celeba_images(root: Path, limit: int | None) -> list[str]:
    keys = sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))
    return keys[:limit] if limit else keys


def label(out: Path, limit: int | None, min_iou: float, min_teacher_score: float) -> dict:
    from pipelines.detector.teachers import load_teacher
    from vigil.eval.face_source import build_detector, read_image

    root = data_path("celeba299")
    keys = celeba_images(root, limit)
    detect, detector_label = build_detector(None, min_score=0.3, batch_size=16)
    teacher = load_teacher("scrfd_2.5g", data_path(), input_size=640, threads=2)
    rows: dict[str, list] = {"keys": [], "boxes": [], "scores": [], "vigil": [], "teacher": []}
    t0 = time.monotonic()
    for start in range(0, len(keys), 16):
        chunk = keys[start : start + 16]
        images = [read_image(root / k) for k in chunk]
        for key, image, ours in zip(chunk, images, detect(images)):
            for face, t in match_faces(ours, teacher.detect(image), min_iou, min_teacher_score):
                rows["keys"].append(key)
                rows["boxes"].append(face.box)
                rows["scores"].append(face.score)
                rows["vigil"].append(face.landmarks)
                rows["teacher"].append(t.landmarks)
        if start % 800 == 0:
            print(f"{start}/{len(keys)} images, {len(rows['keys'])} faces, {time.monotonic() - t0:.0f} s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        keys=np.array(rows["keys"]),
        boxes=np.array(rows["boxes"], np.float32).reshape(-1, 4),
        scores=np.array(rows["scores"], np.float32),
        vigil=np.array(rows["vigil"], np.float32).reshape(-1, 5, 2),
        teacher=np.array(rows["teacher"], np.float32).reshape(-1, 5, 2),
        detector_label=np.array(detector_label),
        teacher_label=np.array("scrfd_2.5g@640"),
    )
    summary = {
        "images": len(keys),
        "faces": len(rows["keys"]),
        "detector": detector_label,
        "teacher": "scrfd_2.5g@640",
        "seconds": round(time.monotonic() - t0, 1),
        "out": str(out),
    }
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.landmarks.label", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("work/landmarks/celeba_scrfd.npz"))
    parser.add_argument("--limit", type=int, default=None, help="first N photos only (smoke runs)")
    parser.add_argument("--min-iou", type=float, default=0.5)
    parser.add_argument("--min-teacher-score", type=float, default=0.6)
    args = parser.parse_args(argv)
    return run_reporting_errors(
        lambda: (label(repo_path(args.out), args.limit, args.min_iou, args.min_teacher_score), 0)[1]
    )


if __name__ == "__main__":
    sys.exit(main())
