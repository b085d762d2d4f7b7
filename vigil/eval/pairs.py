"""`vigil eval pairs`: verification accuracy and ROC on your own pairs, through the runtime path.

    vigil eval pairs --root DIR --pairs FILE [--model PATH] [--detector PATH] --json OUT

FILE is a CSV with the header ``img1,img2,same`` (extra columns are ignored): image paths relative to DIR and
``same`` in {0, 1}. Each image is detected, the confident face nearest the image centre is aligned and embedded
(:mod:`vigil.eval.face_source`); a pair is *skipped* (and counted in ``pairs_skipped``) only when no face is found
in one of its images. A missing or unreadable image, or a bad row, is an error naming the file and the CSV row.

Report keys: ``accuracy`` and ``threshold``: the best accuracy over all thresholds and that threshold (cosine),
fitted on the same pairs it is measured on, so optimistic for small files; ``accuracy_cv10`` the 10-fold
cross-validated accuracy (threshold fitted on nine folds, folds by row order within each class; null when a class
has fewer than 10 pairs); ``auc``; ``pairs_scored``; ``pairs_skipped``; ``skipped_rows``; ``images_without_face``;
``model``; ``detector``; ``seconds``. OUT gets a ROC plot beside it (``.png``).
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vigil.errors import VigilError
from vigil.eval.face_source import (
    FaceSource,
    ImageEmbedder,
    build_detector,
    build_recognizer,
    read_image,
    vector_rows,
)
from vigil.eval.report import write_report
from vigil.eval.verification import best_threshold, cosine_scores, kfold_accuracy, roc_curve

COLUMNS = ("img1", "img2", "same")
CV_FOLDS = 10


@dataclass(frozen=True)
class CsvPair:
    img1: str
    img2: str
    same: bool
    row: int  # 1-based data row (the header is row 0)
    line: int  # 1-based line in the file


def parse_pairs_csv(path: Path) -> list[CsvPair]:
    """Read ``img1,img2,same`` rows; any bad row raises VigilError naming the file, row and line."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:3]] != list(COLUMNS):
                raise VigilError(
                    f"{path}: line 1: expected the header 'img1,img2,same', got {','.join(header or [])!r}"
                )
            pairs: list[CsvPair] = []
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue
                pairs.append(_parse_row(path, fields, row=len(pairs) + 1, line=reader.line_num))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise VigilError(f"{path}: cannot read pairs CSV ({exc.__class__.__name__}: {str(exc)[:80]})") from None
    if not pairs:
        raise VigilError(f"{path}: no pairs after the header")
    return pairs


def _parse_row(path: Path, fields: list[str], row: int, line: int) -> CsvPair:
    where = f"{path}: row {row} (line {line})"
    if len(fields) < 3:
        raise VigilError(f"{where}: expected 3 fields img1,img2,same, got {len(fields)}: {','.join(fields)!r}")
    img1, img2, same = (f.strip() for f in fields[:3])
    if not img1 or not img2:
        raise VigilError(f"{where}: empty image path")
    if same not in ("0", "1"):
        raise VigilError(f"{where}: same must be 0 or 1, got {same!r}")
    return CsvPair(img1=img1, img2=img2, same=same == "1", row=row, line=line)


def _cv_accuracy(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """10-fold accuracy with folds assigned by order within each class; None when a class has < 10 pairs."""
    if labels.sum() < CV_FOLDS or (~labels).sum() < CV_FOLDS:
        return None
    folds = np.empty(labels.size, dtype=int)
    for cls in (True, False):
        index = np.nonzero(labels == cls)[0]
        folds[index] = np.arange(index.size) * CV_FOLDS // index.size
    return kfold_accuracy(scores, labels, folds).mean


def evaluate_pairs(
    root: Path,
    pairs: list[CsvPair],
    pairs_file: Path,
    source: FaceSource,
    embedder,
    detector_label: str,
    model_label: str,
    batch_size: int = 16,
):
    """Score the pairs; returns (report dict, ROC or None when only one class was scored)."""
    started = time.monotonic()
    first_row: dict[str, int] = {}
    for pair in pairs:
        first_row.setdefault(pair.img1, pair.row)
        first_row.setdefault(pair.img2, pair.row)

    def load(rel: str) -> np.ndarray:
        return read_image(Path(root) / rel, context=f"{pairs_file}: row {first_row[rel]}")

    images = ImageEmbedder(source, embedder, detector_label, model_label, batch_size=batch_size)
    embedded = images.embed(list(first_row), load, progress="pairs")
    scored = [p for p in pairs if embedded[p.img1].vector is not None and embedded[p.img2].vector is not None]
    scored_rows = {p.row for p in scored}
    skipped = [p.row for p in pairs if p.row not in scored_rows]
    if not scored:
        raise VigilError(
            f"{pairs_file}: no pair could be scored "
            f"(no face found in {sum(e.vector is None for e in embedded.values())} images)"
        )
    scores = cosine_scores(vector_rows(embedded[p.img1] for p in scored), vector_rows(embedded[p.img2] for p in scored))
    labels = np.array([p.same for p in scored])
    threshold, accuracy = best_threshold(scores, labels)
    roc = roc_curve(scores, labels) if 0 < labels.sum() < labels.size else None
    cv = _cv_accuracy(scores, labels)
    report = {
        "accuracy": round(accuracy, 6),
        "threshold": round(threshold, 6),
        "accuracy_cv10": None if cv is None else round(cv, 6),
        "auc": None if roc is None else round(roc.auc, 6),
        "pairs_scored": len(scored),
        "pairs_skipped": len(skipped),
        "pairs_scored_same": int(labels.sum()),
        "skipped_rows": skipped,
        "images": len(first_row),
        "images_without_face": [rel for rel, e in embedded.items() if not e.found],
        "model": model_label,
        "detector": detector_label,
        "pairs_file": str(pairs_file),
        "root": str(root),
        "seconds": round(time.monotonic() - started, 1),
    }
    return report, roc


def run_cli(args: argparse.Namespace) -> int:
    pairs = parse_pairs_csv(args.pairs)  # a bad CSV fails before any model loads
    if not Path(args.root).is_dir():
        raise VigilError(f"{args.root}: --root is not a folder")
    recognizer = build_recognizer(args.model, flip_average=args.flip_average, refine_landmarks=args.refine_landmarks)
    detect_batch, detector_label = build_detector(args.detector)
    source = FaceSource(detect_batch, recognizer.aligner, fallback="skip")
    report, roc = evaluate_pairs(
        args.root, pairs, args.pairs, source, recognizer.embedder, detector_label, recognizer.label
    )
    auc = "n/a (one class)" if report["auc"] is None else f"{report['auc']:.4f}"
    title = (
        f"pairs {Path(args.pairs).name}: {report['model']}\n"
        f"accuracy {100 * report['accuracy']:.2f} % at {report['threshold']:.3f}, AUC {auc}"
    )
    write_report(args.json, report, roc, title)
    print(
        f"pairs: accuracy {100 * report['accuracy']:.2f} % at threshold {report['threshold']:.4f} | AUC {auc} "
        f"| scored {report['pairs_scored']}, skipped {report['pairs_skipped']} (no face) -> {args.json}"
    )
    return 0
