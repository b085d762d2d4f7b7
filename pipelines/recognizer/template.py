"""Derive the 5-point alignment template of the 150x150 dlib chip, and measure our aligner against dlib's chip.

    python -m pipelines.recognizer.template --images 400 --eval-images 200 --json work/recognizer/template.json

Template: on LFW images (evenly spaced over the sorted list, the even-numbered ones), dlib's chip geometry
(HOG detector -> 5-point shape predictor -> dlib.get_face_chip_details(shape, 150, 0.25), i.e. the similarity
transform image -> chip) maps the 5 landmarks of the teacher detector YuNet (face_detection_yunet_2026may.onnx,
order: eye on image left, eye on image right, nose, mouth corner image left, mouth corner image right = vigil's
order) into chip pixels; the template is their mean (the per-point std is reported).

Alignment parity: on the other (odd-numbered) images, cosine between dlib's descriptor of dlib's own chip and
our ONNX embedding of the chip made by vigil.align from YuNet's landmarks and this template (border replicate
and constant), and the same with the image cut to the detection box + 10% (so that the chip reaches outside
the image and the border mode matters). This measures what our alignment path costs relative to dlib's.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipelines.recognizer.parity import CHIP_SIZE, DlibReference, cosines, lfw_sample, read_rgb, summarize
from vigil.align import BORDER_MODES, align_face
from vigil.errors import VigilError
from vigil.paths import data_path
from vigil.types import LANDMARK_FLIP_INDEX, LANDMARK_NAMES

YUNET_FILE = ("weights", "face_detection_yunet_2026may.onnx")


def symmetrize(template: np.ndarray, chip_size: int = CHIP_SIZE) -> np.ndarray:
    """The template averaged with its own mirror image (x -> chip_size - 1 - x, left and right points swapped), so
    that the mirror of an aligned chip is an aligned chip too (the runtime's flip averaging relies on it)."""
    template = np.asarray(template, dtype=np.float64)
    mirrored = template[list(LANDMARK_FLIP_INDEX)].copy()
    mirrored[:, 0] = chip_size - 1 - mirrored[:, 0]
    return (template + mirrored) / 2


ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
ARCFACE_SIZE = 112


def arcface_template() -> np.ndarray:
    """The ArcFace 112 px template made symmetric (the runtime's flip averaging needs a symmetric template).

    Measured better for SFace than the ArcFace template re-expressed through a YuNet -> vigil landmark similarity
    (the first shipped choice): vigil's detector was pseudo-labelled from ArcFace-convention teachers, so its
    landmarks already sit where ArcFace's template expects them (LFW numbers in models/recognizer/sface-2021dec.md).
    """
    return symmetrize(ARCFACE_112, ARCFACE_SIZE)


@dataclass(frozen=True)
class EnsembleChip:
    """An ensemble chip: its size and template, and where each member's chip lies in it (x0, y0, x1, y1)."""

    chip_size: int
    template: np.ndarray
    member_boxes: dict[str, tuple[float, float, float, float]]


def member_box(
    template: np.ndarray, member_template: np.ndarray, member_size: int
) -> tuple[float, float, float, float]:
    """The region of the ensemble chip (pixel-centre coordinates, edges of the outer pixels) that a member's
    ``member_size`` chip covers, given the ensemble ``template`` and the member's template (scale + shift only)."""
    from vigil.align import estimate_similarity

    matrix = estimate_similarity(np.asarray(template, np.float64), np.asarray(member_template, np.float64))
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    x0, y0 = (-0.5 - matrix[0, 2]) / scale, (-0.5 - matrix[1, 2]) / scale
    side = member_size / scale
    return (round(x0, 3), round(y0, 3), round(x0 + side, 3), round(y0 + side, 3))


def ensemble_chip(
    anchor_template: np.ndarray, factor: int, chip_size: int, members: dict[str, tuple[np.ndarray, int]]
) -> EnsembleChip:
    """The ensemble template: the anchor member's template at ``factor`` x (pixel centres: factor * x + (factor - 1)
    / 2, so the anchor's chip is the exact factor x factor average of a block of the ensemble chip), shifted by
    whole pixels so that the union of all members' chips is centred in a ``chip_size`` chip.

    ValueError when the union does not fit: the chip must then be bigger.
    """
    base = factor * np.asarray(anchor_template, np.float64) + (factor - 1) / 2
    boxes = np.array([member_box(base, t, size) for t, size in members.values()])
    low, high = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)  # union, before the shift
    if np.any(high - low > chip_size + 1e-6):
        raise ValueError(f"members' chips span {np.round(high - low, 1).tolist()} px: more than a {chip_size} px chip")
    shift = np.round((chip_size - (high - low)) / 2 - (low + 0.5))
    template = base + shift
    return EnsembleChip(
        chip_size, template, {name: member_box(template, t, size) for name, (t, size) in members.items()}
    )


def _ensemble_report(names: list[str], factor: int, chip_size: int) -> dict:
    from vigil.models import ModelRegistry

    registry = ModelRegistry()
    specs = [registry.named(name, "recognizer", where="--ensemble") for name in names]
    members = {spec.name: (np.asarray(spec.alignment_template, np.float64), int(spec.input_size[0])) for spec in specs}
    chip = ensemble_chip(members[specs[0].name][0], factor, chip_size, members)
    return {
        "chip_size": chip.chip_size,
        "order": list(LANDMARK_NAMES),
        "template": np.round(chip.template, 3).tolist(),
        "anchor": specs[0].name,
        "factor": factor,
        "member_boxes": chip.member_boxes,
    }


def nearest_box_centre(centres: np.ndarray, box_xyxy: np.ndarray) -> int | None:
    """Index of the centre (N, 2) nearest ``box_xyxy``'s centre, None when it is more than half the box width away."""
    distances = np.linalg.norm(np.asarray(centres, dtype=np.float64) - (box_xyxy[:2] + box_xyxy[2:]) / 2, axis=1)
    best = int(np.argmin(distances))
    return None if distances[best] > 0.5 * (box_xyxy[2] - box_xyxy[0]) else best


class YuNet:
    """YuNet through cv2.FaceDetectorYN: the face nearest a given box, with its 5 landmarks (vigil order)."""

    def __init__(self, model_path: Path | None = None, score_threshold: float = 0.5) -> None:
        path = model_path or data_path(*YUNET_FILE)
        if not path.is_file():
            raise VigilError(f"{path}: YuNet weights not found")
        self.detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, 0.3, 50)

    def landmarks_near(self, image_bgr: np.ndarray, box_xyxy: np.ndarray) -> np.ndarray | None:
        """(5, 2) landmarks of the detection whose box centre is nearest ``box_xyxy``'s (within half its width)."""
        h, w = image_bgr.shape[:2]
        self.detector.setInputSize((w, h))
        _, faces = self.detector.detect(image_bgr)
        if faces is None or len(faces) == 0:
            return None
        best = nearest_box_centre(faces[:, :2] + faces[:, 2:4] / 2, box_xyxy)
        return None if best is None else faces[best, 4:14].reshape(5, 2).astype(np.float64)


class VigilLandmarks:
    """vigil's own detector (default: the manifest's) as the landmark source: the face nearest a given box, its
    points from the detector or, with ``refine``, from the runtime's landmark refiner (the manifest's default)."""

    def __init__(self, detector: Path | None = None, refine: bool = False) -> None:
        from vigil.eval.face_source import build_detector

        self.detect_batch, self.label = build_detector(detector)
        self.refiner = None
        if refine:
            from vigil.refine import default_landmark_refiner

            self.refiner, landmarks_path, landmarks_sha = default_landmark_refiner()
            self.label += f" + landmark refiner {landmarks_path.name}@{landmarks_sha[:12]}"

    def landmarks_near(self, image_bgr: np.ndarray, box_xyxy: np.ndarray) -> np.ndarray | None:
        faces = self.detect_batch([image_bgr])[0]
        if not faces:
            return None
        best = nearest_box_centre(np.array([(f.box[:2] + f.box[2:]) / 2 for f in faces]), box_xyxy)
        if best is None:
            return None
        face = faces[best] if self.refiner is None else self.refiner.refine([(image_bgr, faces[best])])[0]
        return np.asarray(face.landmarks, dtype=np.float64)


def _rect_xyxy(rect) -> np.ndarray:
    return np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64)


def _tight_crop(image: np.ndarray, box_xyxy: np.ndarray, margin: float = 0.1) -> tuple[int, int, np.ndarray]:
    """The detection box grown by ``margin`` of its width per side: (x0, y0, crop). The chip then reaches
    outside the crop, so the border mode matters (on whole LFW images it never does)."""
    grow = margin * (box_xyxy[2] - box_xyxy[0])
    h, w = image.shape[:2]
    x0, y0 = (max(0, int(v - grow)) for v in box_xyxy[:2])
    x1, y1 = min(w, int(box_xyxy[2] + grow)), min(h, int(box_xyxy[3] + grow))
    return x0, y0, np.ascontiguousarray(image[y0:y1, x0:x1])


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _map(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def derive_template(ref: DlibReference, yunet: YuNet | VigilLandmarks, files: list[Path]) -> dict:
    """Mean and std of YuNet's landmarks in dlib's chip; also how well our matrix reproduces dlib's chip."""
    points: list[np.ndarray] = []
    chip_diffs: list[float] = []
    skipped = 0
    for path in files:
        rgb = read_rgb(path)
        face = ref.face(rgb)
        landmarks = None if face is None else yunet.landmarks_near(_bgr(rgb), _rect_xyxy(face.rect))
        if face is None or landmarks is None:
            skipped += 1
            continue
        matrix = ref.chip_transform(face.shape)
        points.append(_map(matrix, landmarks))
        if len(chip_diffs) < 20:  # check the matrix: our warp with it vs dlib's own chip (inner 130x130)
            ours = cv2.warpAffine(rgb, matrix, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR)
            chip_diffs.append(float(np.abs(ours.astype(float) - face.chip_rgb.astype(float))[10:-10, 10:-10].mean()))
    if not points:
        raise VigilError("no LFW face found by both dlib and YuNet")
    stacked = np.stack(points)
    return {
        "template": stacked.mean(axis=0),
        "std": stacked.std(axis=0),
        "used": len(points),
        "skipped": skipped,
        "matrix_check_mean_abs_diff": float(np.mean(chip_diffs)) if chip_diffs else None,
    }


def alignment_parity(
    ref: DlibReference, yunet: YuNet | VigilLandmarks, files: list[Path], template: np.ndarray, onnx: Path
) -> dict:
    """Cosine (dlib descriptor of dlib's chip) vs (our ONNX on vigil.align's chip), per border mode."""
    from pipelines.recognizer.convert import onnx_embed

    modes = list(BORDER_MODES) + [f"{mode}_tight_crop" for mode in BORDER_MODES]
    dlib_vectors: list[np.ndarray] = []
    chips: dict[str, list[np.ndarray]] = {mode: [] for mode in modes}
    for path in files:
        rgb = read_rgb(path)
        face = ref.face(rgb)
        bgr = _bgr(rgb)
        landmarks = None if face is None else yunet.landmarks_near(bgr, _rect_xyxy(face.rect))
        if face is None or landmarks is None:
            continue
        dlib_vectors.append(ref.descriptor(face.chip_rgb))
        x0, y0, tight = _tight_crop(bgr, _rect_xyxy(face.rect))
        for mode in BORDER_MODES:
            chips[mode].append(align_face(bgr, landmarks, template, CHIP_SIZE, border=mode))
            shifted = landmarks - np.array([x0, y0])
            chips[f"{mode}_tight_crop"].append(align_face(tight, shifted, template, CHIP_SIZE, border=mode))
    if not dlib_vectors:
        raise VigilError("no evaluation face found by both dlib and YuNet")
    reference = np.stack(dlib_vectors)
    report = {}
    for mode, mode_chips in chips.items():
        values = cosines(reference, onnx_embed(onnx, np.stack(mode_chips)))
        report[mode] = summarize(values) | {"p05": float(np.percentile(values, 5))}
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400, help="LFW images for the template")
    parser.add_argument("--eval-images", type=int, default=200, help="other LFW images for the alignment parity")
    parser.add_argument("--onnx", type=Path, default=Path("work/recognizer/dlib-resnet-v1.onnx"))
    parser.add_argument("--json", type=Path, default=Path("work/recognizer/template.json"))
    parser.add_argument(
        "--landmarks",
        choices=("yunet", "vigil", "refined"),
        default="yunet",
        help="landmark source: the YuNet teacher, vigil's own detector, or vigil's detector + the landmark "
        "refiner (the runtime's points)",
    )
    parser.add_argument(
        "--symmetric", action="store_true", help="average the template with its mirror image (see symmetrize)"
    )
    parser.add_argument(
        "--compare-shipped",
        action="store_true",
        help="also measure the alignment parity with the manifest's current template, same landmarks",
    )
    parser.add_argument(
        "--arcface",
        action="store_true",
        help="instead: write the symmetric ArcFace 112 px template (arcface_template) to --json",
    )
    parser.add_argument(
        "--ensemble",
        nargs="+",
        metavar="MODEL",
        help="instead: the template of an ensemble chip for these manifest recognizers (the first is "
        "the anchor, cut at --factor x), written to --json with where each member's chip lies",
    )
    parser.add_argument("--factor", type=int, default=2, help="--ensemble: the anchor member's chip scale")
    parser.add_argument("--chip-size", type=int, default=256, help="--ensemble: the ensemble chip's size")
    return parser


def _write_fixed_template(args: argparse.Namespace) -> int:
    """``--arcface`` / ``--ensemble``: a template that needs no landmarks, written to ``--json``."""
    try:
        report = (
            _ensemble_report(args.ensemble, args.factor, args.chip_size)
            if args.ensemble
            else {
                "chip_size": ARCFACE_SIZE,
                "order": list(LANDMARK_NAMES),
                "template": np.round(arcface_template(), 3).tolist(),
                "reference": "ArcFace 112 px (insightface norm_crop, OpenCV alignCrop), made symmetric",
            }
        )
    except (VigilError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"template {report['template']} ({report['chip_size']} px) -> {args.json}")
    for name, box in report.get("member_boxes", {}).items():
        print(f"  {name}: chip covers x {box[0]:.1f}-{box[2]:.1f}, y {box[1]:.1f}-{box[3]:.1f}")
    return 0


def _measure_template(args: argparse.Namespace) -> dict:
    """Derive the template from ``--landmarks`` on LFW and measure its alignment parity with dlib's chips."""
    files = lfw_sample(2 * max(args.images, args.eval_images))
    ref = DlibReference()
    source = YuNet() if args.landmarks == "yunet" else VigilLandmarks(refine=args.landmarks == "refined")
    derived = derive_template(ref, source, files[0::2][: args.images])
    template = symmetrize(derived["template"]) if args.symmetric else derived["template"]
    parity, shipped_parity = None, None
    if args.eval_images > 0:
        if not args.onnx.is_file():
            raise VigilError(f"{args.onnx}: not found (run python -m pipelines.recognizer.convert first)")
        eval_files = files[1::2][: args.eval_images]
        parity = alignment_parity(ref, source, eval_files, template, args.onnx)
        if args.compare_shipped:
            from vigil.models import ModelRegistry

            # the dlib template in the manifest (the default recognizer may be an ensemble with its own chip)
            shipped = np.asarray(ModelRegistry().resolve("recognizer", args.onnx).alignment_template, dtype=np.float64)
            shipped_parity = alignment_parity(ref, source, eval_files, shipped, args.onnx)
    return {
        "chip_size": CHIP_SIZE,
        "order": list(LANDMARK_NAMES),
        "template": np.round(template, 3).tolist(),
        "symmetric": bool(args.symmetric),
        "template_as_measured": np.round(derived["template"], 3).tolist(),
        "std": np.round(derived["std"], 3).tolist(),
        "images_used": derived["used"],
        "images_skipped": derived["skipped"],
        "landmarks": "YuNet face_detection_yunet_2026may.onnx via cv2.FaceDetectorYN"
        if isinstance(source, YuNet)
        else f"vigil detector {source.label}",
        "chip_geometry": "dlib.get_face_chip_details(shape_5pt, 150, 0.25)",
        "matrix_check_mean_abs_diff": derived["matrix_check_mean_abs_diff"],
        "alignment_parity_vs_dlib_chip": parity,
        "alignment_parity_shipped_template": shipped_parity,
    }


def _print_report(report: dict, json_path: Path) -> None:
    print(f"template (150x150 chip, {report['images_used']} faces, {report['images_skipped']} skipped):")
    for name, (x, y), (sx, sy) in zip(LANDMARK_NAMES, report["template"], report["std"]):
        print(f"  {name:12s} {x:8.3f} {y:8.3f}   std {sx:.2f} {sy:.2f}")
    print(f"our warp with dlib's matrix vs dlib's chip: mean |diff| {report['matrix_check_mean_abs_diff']:.2f} (0-255)")
    parity, shipped_parity = report["alignment_parity_vs_dlib_chip"], report["alignment_parity_shipped_template"]
    for label, table in (("derived template", parity), ("shipped template", shipped_parity)):
        for mode, stats in (table or {}).items():
            print(
                f"{label}: our aligner ({mode}) vs dlib chip, cosine: mean {stats['mean']:.4f} min {stats['min']:.4f} "
                f"p05 {stats['p05']:.4f} (n={stats['count']})"
            )
    print(f"saved {json_path}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.arcface or args.ensemble:
        return _write_fixed_template(args)
    try:
        report = _measure_template(args)
    except VigilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    _print_report(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
