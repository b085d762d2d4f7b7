"""Score every teacher detector and our model(s) on the same images with the same code; write one table.

    python -m pipelines.detector.compare --data ../shared/data/wider200/data.yaml \\
        [--teachers scrfd_2.5g scrfd_500m yunet yolov5n_face] [--model models/detector/x.pt ...] \\
        [--out work/detector/compare] [--mosaic 4x2] [--tile-px 240 --tile-overlap-px 64]

Writes ``<out>/table.md`` and ``<out>/rows.json`` (one row per detector, the keys of ``vigil eval wider``), plus
``<out>/<name>.json`` per detector as each finishes, so an interrupted run keeps what it measured and a re-run skips
detectors whose JSON exists (``--force`` re-runs them).

Teachers run at their native 640 input with a 0.01 score threshold (the AP curve needs the low-score tail) and their
own NMS; recall is reported at ``--teacher-threshold`` (0.5). Our models use the runtime's default NMS IoU and report
recall at the runtime's default confidence threshold (``DetectorConfig.conf_threshold``).
``--mosaic CxR`` scores every detector on camera-sized frames of C x R images side by side (``vigil eval wider
--mosaic``); ``--tile-px`` runs every detector, teachers included, on the whole frame plus overlapping tiles
(:func:`vigil.tiling.detect_tiled`, views merged at the runtime's NMS IoU), so tiling is compared like for like.
WIDER-200 is validation only: nothing here tunes anything on it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from vigil.eval.wider import (
    AP_SCORE_THRESHOLD,
    MosaicSpec,
    evaluate_detector,
    markdown_table,
    parse_mosaic,
    result_row,
    setup_fields,
    tiling_from_args,
)
from vigil.paths import data_dir, repo_root
from vigil.tiling import TileSpec, detect_tiled

TEACHER_INPUT_PX = 640
DEFAULT_TEACHER_THRESHOLD = 0.5
MAX_FACES = 1000


@dataclass(frozen=True)
class FrameSetup:
    """How frames are made and seen: mosaics of the dataset's images, and tiles (None: whole frames only)."""

    mosaic: MosaicSpec | None = None
    tiling: TileSpec | None = None

    def row_fields(self) -> dict:
        return setup_fields(self.mosaic, self.tiling)

    def suffix(self) -> str:
        """Appended to a job's name, so that each setup's JSON is kept apart."""
        fields = self.row_fields()
        return (f"_m{fields['mosaic']}" if self.mosaic else "") + (
            f"_t{fields['tile_px']}o{fields['tile_overlap_px']}" if self.tiling else ""
        )


def tiled_teacher(detect, tiling: TileSpec | None, nms_iou: float):
    """A teacher's one-image ``detect`` as is, or run on the whole image plus tiles and merged."""
    if tiling is None:
        return detect
    return lambda image: detect_tiled(lambda images: [detect(i) for i in images], [image], tiling, nms_iou, MAX_FACES)[
        0
    ]


def evaluate_teacher(
    name: str,
    data_yaml: Path,
    operating_threshold: float,
    threads: int,
    limit: int | None,
    setup: FrameSetup,
    log: logging.Logger,
) -> dict:
    from pipelines.detector.teachers import load_teacher
    from vigil.config import DetectorConfig

    teacher = load_teacher(name, data_dir(), input_size=TEACHER_INPUT_PX, score_thr=AP_SCORE_THRESHOLD, threads=threads)
    detect = tiled_teacher(teacher.detect, setup.tiling, DetectorConfig().nms_iou)
    result = evaluate_detector(
        detect, data_yaml, operating_threshold=operating_threshold, limit=limit, mosaic=setup.mosaic, logger=log
    )
    return result_row(
        result,
        model=name,
        imgsz=TEACHER_INPUT_PX,
        kind="teacher",
        data=str(data_yaml),
        score_threshold=AP_SCORE_THRESHOLD,
        **setup.row_fields(),
    )


def evaluate_ours(
    model: Path, data_yaml: Path, imgsz: int, device: str, limit: int | None, setup: FrameSetup, log: logging.Logger
) -> dict:
    from vigil.config import DetectorConfig
    from vigil.detect import FaceDetector

    defaults = DetectorConfig()
    detector = FaceDetector(
        model,
        imgsz=imgsz,
        conf_threshold=AP_SCORE_THRESHOLD,
        nms_iou=defaults.nms_iou,
        device=device,
        max_det=MAX_FACES,
        tiling=setup.tiling,
        logger=log,
    )
    result = evaluate_detector(
        detector.detect_one,
        data_yaml,
        operating_threshold=defaults.conf_threshold,
        limit=limit,
        mosaic=setup.mosaic,
        logger=log,
    )
    return result_row(
        result,
        model=model.stem,
        imgsz=imgsz,
        kind="ours",
        path=str(model),
        data=str(data_yaml),
        score_threshold=AP_SCORE_THRESHOLD,
        device=detector.device,
        **setup.row_fields(),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=data_dir() / "wider200" / "data.yaml")
    p.add_argument("--teachers", nargs="*", default=["scrfd_2.5g", "scrfd_500m", "yunet", "yolov5n_face"])
    p.add_argument("--model", type=Path, nargs="*", default=[], help="our Ultralytics pose .pt / .onnx files")
    p.add_argument("--imgsz", type=int, nargs="*", default=[640], help="input sizes for our models")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--teacher-threshold", type=float, default=DEFAULT_TEACHER_THRESHOLD, help="teachers' recall threshold"
    )
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per teacher")
    p.add_argument("--limit", type=int, help="first N images only (smoke runs)")
    p.add_argument("--out", type=Path, default=repo_root() / "work" / "detector" / "compare")
    p.add_argument("--force", action="store_true", help="re-run detectors whose JSON already exists")
    p.add_argument("--mosaic", help="COLUMNSxROWS: score camera-sized frames of several images side by side, e.g. 4x2")
    p.add_argument("--tile-px", type=int, help="every detector also runs on overlapping tiles of this side (frame px)")
    p.add_argument("--tile-overlap-px", type=int, default=128)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("compare")
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    setup = FrameSetup(
        mosaic=parse_mosaic(args.mosaic) if args.mosaic else None,
        tiling=tiling_from_args(args.tile_px, args.tile_overlap_px),
    )
    jobs: list[tuple[str, Callable[[], dict]]] = [
        (
            name + setup.suffix(),
            partial(evaluate_teacher, name, args.data, args.teacher_threshold, args.threads, args.limit, setup, log),
        )
        for name in args.teachers
    ]
    for model in args.model:
        for size in args.imgsz:
            jobs.append(
                (
                    f"{model.stem}@{size}{setup.suffix()}",
                    partial(evaluate_ours, model, args.data, size, args.device, args.limit, setup, log),
                )
            )
    rows = []
    for name, job in jobs:
        path = args.out / f"{name}.json"
        if path.is_file() and not args.force:
            log.info("%s: kept %s", name, path)
            rows.append(json.loads(path.read_text(encoding="utf-8")))
            continue
        log.info("%s: evaluating", name)
        row = job()
        path.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
        rows.append(row)
        log.info("%s: AP50 %.3f AP50:95 %.3f (%.0f s)", name, row["ap50"], row["ap50_95"], row["seconds"])
    table = markdown_table(rows)
    (args.out / "table.md").write_text(f"Data: {args.data}\n\n{table}\n", encoding="utf-8")
    (args.out / "rows.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
