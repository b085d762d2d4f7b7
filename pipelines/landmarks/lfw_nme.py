"""Landmark error on LFW against the SCRFD-2.5G teacher: a detector's own points and the refiner's on its boxes.

    python -m pipelines.landmarks.lfw_nme --detector models/detector/<file>.onnx [--limit 2000] [--degraded] --json OUT

For LFW View 2 images (``pairs.txt``; ``--limit`` takes a seeded subset, the same one for every detector), the
detector (at its manifest size, through ``vigil.eval.face_source.build_detector``, as the LFW evaluation runs it)
and the teacher (at 640) both run; the detector face nearest the image centre that a confident teacher face overlaps
(IoU >= 0.5, score >= 0.6) is scored. NME = mean distance of the five points to the teacher's / the teacher's
inter-ocular distance. Reported: the detector's own points, and the default landmark refiner (``vigil.refine``,
mirror-averaged, the runtime's path) on the detector's box. ``--degraded`` reads the degraded-LFW images
(``vigil.eval.degrade_lfw``) for both, teacher included. The refiner was trained on crops around the first
detector's boxes; this says whether it still fits another detector's boxes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vigil.errors import run_reporting_errors
from vigil.paths import data_path, repo_path


def lfw_view2_images(lfw: Path, limit: int | None, seed: int = 0) -> list[str]:
    """The images LFW View 2's pairs use (paths relative to ``lfw``), sorted; a seeded subset of ``limit``."""
    from vigil.eval.verification import parse_lfw_pairs

    pairs = parse_lfw_pairs(lfw / "pairs.txt")
    paths = sorted({p for pair in pairs for p in (pair.path1, pair.path2)})
    if limit and limit < len(paths):
        keep = np.random.default_rng(seed).choice(len(paths), limit, replace=False)
        paths = [paths[i] for i in sorted(keep)]
    return paths


def nme(points: np.ndarray, teacher: np.ndarray) -> float:
    inter_ocular = float(np.linalg.norm(teacher[0] - teacher[1]))
    return float(np.linalg.norm(points - teacher, axis=1).mean() / max(inter_ocular, 1e-6))


def centre_face(faces: list, width: int, height: int):
    if not faces:
        return None
    centre = np.asarray([width / 2, height / 2])
    return min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))


def measure(detector: Path | None, limit: int | None, degraded: bool) -> dict:
    from pipelines.detector.teachers import load_teacher
    from pipelines.landmarks.label import match_faces
    from vigil.eval.face_source import build_detector
    from vigil.eval.lfw import load_lfw_image
    from vigil.refine import default_landmark_refiner

    lfw = data_path("lfw")
    paths = lfw_view2_images(lfw, limit)
    detect, label = build_detector(detector, min_score=0.3, batch_size=16)
    teacher = load_teacher("scrfd_2.5g", data_path(), input_size=640, threads=1)
    refiner, _, refiner_sha = default_landmark_refiner()
    own, refined, t0 = [], [], time.monotonic()
    for start in range(0, len(paths), 16):
        images = [load_lfw_image(lfw, rel, degraded) for rel in paths[start : start + 16]]
        for image, faces in zip(images, detect(images)):
            face = centre_face(faces, image.shape[1], image.shape[0])
            pairs = match_faces([face], teacher.detect(image), 0.5, 0.6) if face is not None else []
            if not pairs:
                continue
            ours, truth = pairs[0]
            own.append(nme(ours.landmarks, truth.landmarks))
            refined.append(nme(refiner.refine([(image, ours)])[0].landmarks, truth.landmarks))
    return {
        "detector": label,
        "refiner": f"vigil-landmarks@{refiner_sha[:12]}",
        "teacher": "scrfd_2.5g@640",
        "degraded": degraded,
        "images": len(paths),
        "faces_scored": len(own),
        "nme_detector": round(float(np.mean(own)), 4) if own else None,
        "nme_refiner": round(float(np.mean(refined)), 4) if refined else None,
        "seconds": round(time.monotonic() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.landmarks.lfw_nme", description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", type=Path, default=None, help="detector model (default: the manifest's default)")
    parser.add_argument("--limit", type=int, default=2000, help="seeded subset of the View 2 images (0: all)")
    parser.add_argument("--degraded", action="store_true", help="the degraded-LFW images instead of the clean ones")
    parser.add_argument("--json", type=Path, required=True)

    args = parser.parse_args(argv)

    def body() -> int:
        report = measure(repo_path(args.detector) if args.detector else None, args.limit or None, args.degraded)
        print(json.dumps(report))
        out = repo_path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        return 0

    return run_reporting_errors(body)


if __name__ == "__main__":
    sys.exit(main())
