"""LFW evaluation (clean and degraded) of any recognizer ONNX with a *teacher* detector supplying landmarks.

vigil's own detector does not exist yet; until it does, the "before" figures of the transfer (the source model on
clean and degraded LFW) are measured here with a teacher detector from ``../shared/data/weights`` (reference models,
never shipped). Everything else is the runtime path: :class:`vigil.align.Aligner` to the model's template, the same
face choice and fallback as ``vigil eval lfw`` (:mod:`vigil.eval.face_source`), the same degraded LFW
(:mod:`vigil.eval.degrade_lfw`), the same protocol maths and report (:mod:`vigil.eval.lfw`).

    python -m pipelines.recognizer.eval_with_teacher eval --model work/recognizer/dlib-resnet-v1.onnx \
        --teacher yunet --json work/recognizer/eval/source_clean.json [--degraded]

    # the constants of vigil.eval.degrade_lfw / face_source (median LFW face width, mean landmark positions)
    python -m pipelines.recognizer.eval_with_teacher measure --json work/recognizer/eval/lfw_face_geometry.json

Teachers (``--teacher``): ``yunet`` (default; cv2.FaceDetectorYN, the image's longer side scaled to
``--teacher-size`` px, default 320, for clean and degraded images alike), ``scrfd_2.5g``, ``scrfd_500m``,
``yolov5n_face``, and ``dlib``: the source model's own reference path (dlib's HOG detector, upsample 1, its 5-point
shape predictor and ``get_face_chip`` geometry), expressed as the five template points mapped back into the image,
so vigil's aligner cuts dlib's own chip. That row is the ceiling of the source model on this copy of LFW with the
alignment it was trained for.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vigil.errors import VigilError
from vigil.paths import data_dir, data_path

DEFAULT_TEACHER = "yunet"
DEFAULT_TEACHER_SIZE = 320
MEASURE_MIN_SCORE = 0.5
DEFAULT_TEMPLATE = Path("work/recognizer/template.json")


def _lfw_images(lfw_dir: Path) -> list[str]:
    from vigil.eval.verification import parse_lfw_pairs

    pairs = parse_lfw_pairs(lfw_dir / "pairs.txt")
    return sorted({p.path1 for p in pairs} | {p.path2 for p in pairs})


def measure_lfw_geometry(lfw_dir: Path, teacher_name: str, limit: int | None) -> dict:
    """Teacher boxes and landmarks on the View 2 images at native size (250 x 250): the degraded-LFW constants.

    For each image the confident face (score >= MEASURE_MIN_SCORE) nearest the image centre is kept. Returns the
    median / percentiles of its box width and height (px) and the mean of its 5 landmarks (px, vigil order).
    """
    from tqdm import tqdm

    from pipelines.detector.teachers import load_teacher
    from vigil.eval.face_source import choose_face, read_image

    teacher = load_teacher(teacher_name, data_dir(), input_size=250, threads=1)
    names = _lfw_images(lfw_dir)
    if limit:
        names = names[:: max(1, len(names) // limit)][:limit]
    widths, heights, landmarks, missing = [], [], [], 0
    for name in tqdm(names, desc=f"measure {teacher_name}", file=sys.stderr):
        image = read_image(lfw_dir / name)
        face = choose_face(teacher.detect(image), image.shape, MEASURE_MIN_SCORE)
        if face is None:
            missing += 1
            continue
        widths.append(face.width_px)
        heights.append(face.height_px)
        landmarks.append(face.landmarks)
    widths_a, heights_a = np.asarray(widths), np.asarray(heights)
    return {
        "teacher": teacher_name,
        "teacher_input_size": 250,
        "min_score": MEASURE_MIN_SCORE,
        "images": len(names),
        "faces_not_found": missing,
        "box_width_px": {
            "median": float(np.median(widths_a)),
            "p5": float(np.percentile(widths_a, 5)),
            "p95": float(np.percentile(widths_a, 95)),
            "mean": float(widths_a.mean()),
        },
        "box_height_px": {"median": float(np.median(heights_a)), "mean": float(heights_a.mean())},
        "mean_landmarks_px": np.mean(np.asarray(landmarks), axis=0).round(2).tolist(),
    }


def _teacher_detector(name: str, size: int, template: np.ndarray):
    """A batch detect callable (one teacher call per image) from the shared teacher weights, and its label."""
    from pipelines.detector.teachers import load_teacher
    from vigil.eval.face_source import per_image

    if name == "dlib":
        return per_image(dlib_chip_faces(template)), "dlib:hog+shape_predictor_5+get_face_chip"
    teacher = load_teacher(name, data_dir(), input_size=size, threads=1)
    return per_image(teacher.detect), f"teacher:{name}@{size}"


def template_in_image(image_to_chip: np.ndarray, template: np.ndarray) -> np.ndarray:
    """(5, 2) image points that a 2x3 similarity ``image_to_chip`` sends onto ``template`` (chip px)."""
    linear, offset = image_to_chip[:, :2], image_to_chip[:, 2]
    return ((np.asarray(template, np.float64) - offset) @ np.linalg.inv(linear).T).astype(np.float32)


def dlib_chip_faces(template: np.ndarray):
    """``image_bgr -> list[Face]`` with dlib's detection and chip geometry as landmarks for ``template``."""
    from pipelines.recognizer.parity import DlibReference
    from vigil.types import Face

    ref = DlibReference()

    def detect(image_bgr: np.ndarray) -> list[Face]:
        rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
        faces = []
        for rect in ref.detector(rgb, 1):
            shape = ref.predictor(rgb, rect)
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float32)
            faces.append(Face(box=box, score=1.0, landmarks=template_in_image(ref.chip_transform(shape), template)))
        return faces

    return detect


def _read_template(path: Path | None) -> np.ndarray | None:
    """(5, 2) template from a ``pipelines.recognizer.template`` JSON, or None to use the model manifest's."""
    if path is None:
        return None
    try:
        return np.asarray(json.loads(path.read_text(encoding="utf-8"))["template"], dtype=np.float32).reshape(5, 2)
    except (OSError, ValueError, KeyError) as exc:
        raise VigilError(f"{path}: cannot read the alignment template ({exc.__class__.__name__})") from None


def run_eval(args: argparse.Namespace) -> int:
    from vigil.eval.face_source import build_recognizer
    from vigil.eval.lfw import evaluate_lfw, write_lfw_report

    recognizer = build_recognizer(
        args.model, batch_size=args.batch_size, template=_read_template(args.template), flip_average=args.flip_average
    )
    detect_batch, detector_label = _teacher_detector(
        args.teacher, args.teacher_size, np.asarray(recognizer.aligner.template)
    )
    report, roc = evaluate_lfw(
        lfw_dir=args.lfw_dir or data_path("lfw"),
        degraded=args.degraded,
        detect_batch=detect_batch,
        detector_label=detector_label,
        aligner=recognizer.aligner,
        embedder=recognizer.embedder,
        model_label=recognizer.label,
        batch_size=args.batch_size,
    )
    report["landmarks_from"] = "teacher detector (pipelines/ only; not vigil's own detector)"
    report["alignment_template"] = np.asarray(recognizer.aligner.template).round(3).tolist()
    report["template_file"] = str(args.template) if args.template else "models/manifest.yaml"
    report["command"] = "python -m pipelines.recognizer.eval_with_teacher " + " ".join(sys.argv[1:])
    write_lfw_report(args.json, report, roc)
    keys = ("variant", "accuracy_mean", "accuracy_std", "tar_at_far_1e-3", "auc", "faces_not_found", "seconds")
    print(json.dumps({k: report[k] for k in keys}))
    return 0


def run_measure(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    result = measure_lfw_geometry(args.lfw_dir or data_path("lfw"), args.teacher, args.limit)
    result["seconds"] = round(time.monotonic() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.recognizer.eval_with_teacher", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="LFW protocol with teacher landmarks")
    ev.add_argument("--model", type=Path, required=True, help="recognizer ONNX (vigil's embedding contract)")
    ev.add_argument("--degraded", action="store_true")
    ev.add_argument("--teacher", default=DEFAULT_TEACHER)
    ev.add_argument(
        "--teacher-size", type=int, default=DEFAULT_TEACHER_SIZE, help="px the image's longer side is scaled to"
    )
    ev.add_argument(
        "--template",
        type=Path,
        default=DEFAULT_TEMPLATE if DEFAULT_TEMPLATE.is_file() else None,
        help="alignment template JSON (default: work/recognizer/template.json when present, else the manifest's)",
    )
    ev.add_argument(
        "--flip-average",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="test-time flip averaging, the runtime default (--no-flip-average: one chip per face)",
    )
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--lfw-dir", type=Path)
    ev.add_argument("--json", type=Path, required=True)
    ev.set_defaults(func=run_eval)
    me = sub.add_parser("measure", help="median LFW face width and mean landmarks (degraded-LFW constants)")
    me.add_argument("--teacher", default=DEFAULT_TEACHER)
    me.add_argument("--limit", type=int, help="measure an evenly spaced subset of this many images")
    me.add_argument("--lfw-dir", type=Path)
    me.add_argument("--json", type=Path, required=True)
    me.set_defaults(func=run_measure)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VigilError as exc:
        print(f"eval_with_teacher: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
