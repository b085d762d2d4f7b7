"""`vigil eval wider`: detector AP on a YOLO-format face set (the WIDER-200 sample), by face size.

Reads an Ultralytics ``data.yaml`` (its ``val`` split), runs a detector on every image and scores it with
:mod:`vigil.eval.detection_metrics` (COCO-style AP at IoU 0.5 and 0.50:0.95, AP by ``sqrt(w*h)`` size bucket, recall
at the operating confidence threshold, landmark NME where the labels carry keypoints).

Any detector can be scored by the same code: :func:`evaluate_detector` takes a callable ``image_bgr -> list[Face]``
(the teachers in ``pipelines/detector/teachers.py`` are scored this way by ``pipelines/detector/compare.py``).

Label rows: ``class cx cy w h`` normalised to the image size, optionally followed by 5 keypoints as ``x y v`` triples
(Ultralytics pose, ``v`` = 0 means unknown) or ``x y`` pairs (negative means unknown).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from vigil.errors import VigilError
from vigil.eval.detection_metrics import SIZE_BUCKETS, DetectionReport, ImageDetections, ImageTruth, evaluate_detections
from vigil.tiling import TileSpec
from vigil.types import Face

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
AP_SCORE_THRESHOLD = 0.01  # detections kept for AP: the precision/recall curve needs the low-score tail
NUM_KEYPOINTS = 5

DetectFn = Callable[[np.ndarray], list[Face]]


@dataclass(frozen=True)
class LabelledImage:
    image_path: Path
    label_path: Path  # may not exist: an image without a label file has no faces


@dataclass(frozen=True)
class WiderResult:
    """One evaluation: the metrics plus what was evaluated and how long it took (seconds, wall clock)."""

    report: DetectionReport
    images: int
    unreadable: list[str]
    seconds: float
    frames: int  # detector calls: the images, or the mosaic frames made of them


def split_images(data_yaml: Path, split: str = "val") -> list[LabelledImage]:
    """The images of ``split`` in an Ultralytics data.yaml and their label files, sorted by image path.

    The split may be a folder (searched recursively), a ``.txt`` list of image paths, or a list of either; paths are
    relative to the yaml's ``path`` key, else to the yaml's folder. Labels live where ``/images/`` becomes ``/labels/``.
    """
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise VigilError(f"{data_yaml}: data file not found")
    try:
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise VigilError(f"{data_yaml}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data.get(split):
        raise VigilError(f"{data_yaml}: no '{split}' split listed")
    root = (data_yaml.parent / str(data.get("path") or ".")).resolve()  # an absolute path key wins the join
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    images: list[Path] = []
    for entry in entries:
        images.extend(_images_of(root / str(entry), data_yaml))
    if not images:
        raise VigilError(f"{data_yaml}: split '{split}' has no images")
    return [LabelledImage(path, label_path(path)) for path in sorted(set(images))]


def _images_of(entry: Path, data_yaml: Path) -> list[Path]:
    if entry.is_dir():
        return [p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    if entry.is_file() and entry.suffix == ".txt":
        lines = [line.strip() for line in entry.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [(entry.parent / line).resolve() for line in lines]
    raise VigilError(f"{data_yaml}: split entry {entry} is neither a folder nor a .txt image list")


def label_path(image_path: Path) -> Path:
    """The YOLO label file of a dataset image: the last ``images`` folder in its path becomes ``labels``, ``.txt``."""
    parts = list(image_path.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_labels(label_path: Path, width: int, height: int) -> ImageTruth:
    """GT boxes (x1y1x2y2 pixels) and landmarks (pixels, NaN where unknown) from a YOLO label file."""
    if not label_path.is_file():
        return ImageTruth(boxes=np.zeros((0, 4)), landmarks=None)
    boxes, points, has_points = [], [], False
    for number, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise VigilError(f"{label_path}:{number}: not a row of numbers") from None
        if len(values) not in (5, 5 + 2 * NUM_KEYPOINTS, 5 + 3 * NUM_KEYPOINTS):
            raise VigilError(f"{label_path}:{number}: expected 5, 15 or 20 values, got {len(values)}")
        cx, cy, w, h = values[1] * width, values[2] * height, values[3] * width, values[4] * height
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        kps = _row_keypoints(values[5:], width, height)
        has_points = has_points or bool(np.isfinite(kps).any())
        points.append(kps)
    box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return ImageTruth(
        boxes=box_array, landmarks=np.asarray(points).reshape(-1, NUM_KEYPOINTS, 2) if has_points else None
    )


def _row_keypoints(values: list[float], width: int, height: int) -> np.ndarray:
    kps = np.full((NUM_KEYPOINTS, 2), np.nan)
    if not values:
        return kps
    per_point = len(values) // NUM_KEYPOINTS
    raw = np.asarray(values, dtype=np.float64).reshape(NUM_KEYPOINTS, per_point)
    known = raw[:, 2] > 0 if per_point == 3 else (raw[:, 0] >= 0) & (raw[:, 1] >= 0)
    kps[known] = raw[known, :2] * [width, height]
    return kps


def faces_to_detections(faces: list[Face], min_score: float = 0.0) -> ImageDetections:
    kept = [f for f in faces if f.score >= min_score]
    return ImageDetections(
        boxes=np.asarray([f.box for f in kept], dtype=np.float64).reshape(-1, 4),
        scores=np.asarray([f.score for f in kept], dtype=np.float64),
        landmarks=np.asarray([f.landmarks for f in kept], dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 2),
    )


@dataclass(frozen=True)
class MosaicSpec:
    """Evaluate on frames made of ``columns`` x ``rows`` dataset images side by side at their own resolution: a
    camera-sized frame whose faces keep their pixels (WIDER-200's 416 px images, 4x2: 1664x832 frames)."""

    columns: int
    rows: int

    @property
    def images_per_frame(self) -> int:
        return self.columns * self.rows


def parse_mosaic(text: str) -> MosaicSpec:
    """``"4x2"`` -> MosaicSpec(columns=4, rows=2); a clear error otherwise."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() and 1 <= int(part) <= 16 for part in parts):
        raise VigilError(f"--mosaic: expected COLUMNSxROWS with each 1-16, such as 4x2, got {text!r}")
    return MosaicSpec(columns=int(parts[0]), rows=int(parts[1]))


def mosaic_frame(images: list[np.ndarray], truths: list[ImageTruth], spec: MosaicSpec) -> tuple[np.ndarray, ImageTruth]:
    """Images placed row by row in cells of the largest image's size (unfilled cells black), their labels shifted."""
    if not images or len(images) != len(truths) or len(images) > spec.images_per_frame:
        raise ValueError(
            f"mosaic: need 1-{spec.images_per_frame} images with one truth each, got {len(images)} and {len(truths)}"
        )
    cell_h = max(image.shape[0] for image in images)
    cell_w = max(image.shape[1] for image in images)
    canvas = np.zeros((spec.rows * cell_h, spec.columns * cell_w, 3), dtype=np.uint8)
    boxes, points = [], []
    with_points = any(truth.landmarks is not None for truth in truths)
    for number, (image, truth) in enumerate(zip(images, truths)):
        top, left = (number // spec.columns) * cell_h, (number % spec.columns) * cell_w
        canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
        boxes.append(truth.boxes + [left, top, left, top])
        if with_points:
            known = (
                truth.landmarks
                if truth.landmarks is not None
                else np.full((len(truth.boxes), NUM_KEYPOINTS, 2), np.nan)
            )
            points.append(known + [left, top])
    merged = ImageTruth(
        boxes=np.concatenate(boxes).reshape(-1, 4),
        landmarks=np.concatenate(points).reshape(-1, NUM_KEYPOINTS, 2) if with_points else None,
    )
    return canvas, merged


def evaluate_detector(
    detect_fn: DetectFn,
    data_yaml: Path,
    operating_threshold: float,
    split: str = "val",
    min_score: float = AP_SCORE_THRESHOLD,
    limit: int | None = None,
    mosaic: MosaicSpec | None = None,
    logger: logging.Logger | None = None,
) -> WiderResult:
    """Run ``detect_fn`` (BGR image -> faces in its pixels) over the split and score it.

    Detections under ``min_score`` are dropped before scoring; ``operating_threshold`` is the confidence at which
    recall is reported. An unreadable image is logged and skipped (listed in ``unreadable``). ``limit``: first N images.
    ``mosaic``: detect on frames of several images each (:func:`mosaic_frame`) instead of one image at a time.
    """
    log = logger or logging.getLogger("vigil.eval.wider")
    items = split_images(data_yaml, split)[:limit]
    per_frame = 1 if mosaic is None else mosaic.images_per_frame
    pairs: list[tuple[ImageTruth, ImageDetections]] = []
    unreadable: list[str] = []
    images = 0
    start = time.monotonic()
    for first in range(0, len(items), per_frame):
        read = [
            loaded
            for loaded in (_read_labelled(item, log, unreadable) for item in items[first : first + per_frame])
            if loaded
        ]
        if not read:
            continue
        images += len(read)
        frame, truth = read[0] if mosaic is None else mosaic_frame([r[0] for r in read], [r[1] for r in read], mosaic)
        pairs.append((truth, faces_to_detections(detect_fn(frame), min_score)))
        if len(pairs) % 25 == 0:
            log.info("%d/%d images (%.0f s)", min(first + per_frame, len(items)), len(items), time.monotonic() - start)
    seconds = time.monotonic() - start
    report = evaluate_detections(pairs, operating_threshold)
    return WiderResult(report=report, images=images, unreadable=unreadable, seconds=seconds, frames=len(pairs))


def _read_labelled(
    item: LabelledImage, log: logging.Logger, unreadable: list[str]
) -> tuple[np.ndarray, ImageTruth] | None:
    """(image, its labels), or None for an unreadable image (logged and listed in ``unreadable``)."""
    import cv2

    image = cv2.imread(str(item.image_path), cv2.IMREAD_COLOR)
    if image is None:
        log.warning("%s: unreadable image, skipped", item.image_path)
        unreadable.append(str(item.image_path))
        return None
    return image, read_labels(item.label_path, image.shape[1], image.shape[0])


def result_row(result: WiderResult, model: str, imgsz: int | None, **extra) -> dict:
    """The JSON record of one evaluation (NaN -> None so the file is strict JSON)."""
    report = asdict(result.report)
    report.pop("extra", None)
    row = {
        "model": model,
        "imgsz": imgsz,
        **report,
        "images": result.images,
        "frames": result.frames,
        "seconds": round(result.seconds, 1),
    }
    row.update(extra)
    if result.unreadable:
        row["unreadable"] = result.unreadable
    return _json_safe(row)


def _json_safe(value):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 5)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def markdown_table(rows: list[dict]) -> str:
    """A markdown table of evaluation rows (AP and recall in percent)."""
    buckets = list(SIZE_BUCKETS)
    header = [
        "model",
        "imgsz",
        "AP50",
        "AP50:95",
        *[f"AP50 {b}" for b in buckets],
        "recall@thr",
        "thr",
        *[f"found {b}" for b in buckets],
        "NME",
        "images",
        "s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            str(row["model"]),
            _setup_cell(row),
            _pct(row["ap50"]),
            _pct(row["ap50_95"]),
            *[_pct(row["ap50_by_size"][b]) for b in buckets],
            _pct(row["recall_at_operating_threshold"]),
            f"{row['operating_threshold']:.2f}",
            *[_pct(row.get("recall_at_score_floor_by_size", {}).get(b)) for b in buckets],
            "-" if row.get("landmark_nme") is None else f"{row['landmark_nme']:.3f}",
            str(row["images"]),
            f"{row['seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    counts = rows[0]["boxes_by_size"] if rows else {}
    if counts:
        lines.append("")
        lines.append(
            f"GT boxes: {rows[0]['boxes']} ("
            + ", ".join(f"{b}: {n}" for b, n in counts.items())
            + "); size = sqrt(w*h) px; "
            "found = recall at IoU 0.5 at the score floor (every kept detection)"
        )
    return "\n".join(lines)


def _setup_cell(row: dict) -> str:
    """The imgsz column: ``480``, or ``480, tiles 240/64`` (tile side / overlap, frame px), ``, mosaic 4x2``."""
    cell = str(row.get("imgsz"))
    if row.get("tile_px"):
        cell += f", tiles {row['tile_px']}/{row['tile_overlap_px']}"
    if row.get("mosaic"):
        cell += f", mosaic {row['mosaic']}"
    return cell


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def run_cli(args: argparse.Namespace) -> int:
    """`vigil eval wider --data DATA_YAML [--model PATH] [--imgsz 640] [--tile-px N [--tile-overlap-px M]]
    [--mosaic CxR] --json OUT`."""
    from vigil.config import DetectorConfig
    from vigil.detect import FaceDetector

    log = logging.getLogger("vigil.eval.wider")
    defaults = DetectorConfig()
    split_images(Path(args.data))  # fail on a bad data file before loading the model
    mosaic = parse_mosaic(args.mosaic) if getattr(args, "mosaic", None) else None
    tiling = tiling_from_args(getattr(args, "tile_px", None), getattr(args, "tile_overlap_px", 0))
    model_path = Path(args.model) if args.model else _default_model(log)
    detector = FaceDetector(
        model_path,
        imgsz=args.imgsz,
        conf_threshold=AP_SCORE_THRESHOLD,
        nms_iou=defaults.nms_iou,
        device=getattr(args, "device", "auto"),
        tiling=tiling,
        logger=log,
    )
    result = evaluate_detector(
        detector.detect_one, Path(args.data), operating_threshold=defaults.conf_threshold, mosaic=mosaic, logger=log
    )
    row = result_row(
        result,
        model=str(model_path),
        imgsz=args.imgsz,
        data=str(args.data),
        score_threshold=AP_SCORE_THRESHOLD,
        nms_iou=defaults.nms_iou,
        device=detector.device,
        **setup_fields(mosaic, tiling),
    )
    print(markdown_table([row]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    print(f"saved {args.json}")
    return 0


def tiling_from_args(tile_px: int | None, overlap_px: int) -> TileSpec | None:
    """The TileSpec that ``--tile-px`` / ``--tile-overlap-px`` ask for (None without ``--tile-px``); the config's rule,
    as a one-line VigilError."""
    if tile_px is None:
        return None
    try:
        return TileSpec(tile_px=tile_px, overlap_px=overlap_px)
    except ValueError as exc:
        raise VigilError(f"--tile-px {tile_px} --tile-overlap-px {overlap_px}: {exc}") from None


def setup_fields(mosaic: MosaicSpec | None, tiling: TileSpec | None) -> dict:
    """How the frames were made and seen, for a report row (``_setup_cell`` prints them)."""
    return {
        "tile_px": tiling.tile_px if tiling else None,
        "tile_overlap_px": tiling.overlap_px if tiling else None,
        "mosaic": f"{mosaic.columns}x{mosaic.rows}" if mosaic else None,
    }


def _default_model(log: logging.Logger) -> Path:
    from vigil.models import ModelRegistry

    return ModelRegistry(logger=log).resolve("detector", None).path
