"""`vigil eval lfw`: the LFW View 2 protocol (10 folds, threshold fitted on nine, tested on the tenth) on clean or
degraded LFW, through the runtime path: detector -> 5-point aligner -> ONNX embedder -> cosine.

    vigil eval lfw [--degraded] [--model PATH] [--detector PATH] [--lfw-dir DIR] [--detections-cache DIR] --json OUT

``--detections-cache DIR`` keeps the chosen face per image in DIR (one file per variant and detector, see
:class:`vigil.eval.face_source.DetectionCache`): the next run with the same detector aligns from it instead of
detecting again, so several recognizers are compared on the same faces in a fraction of the time.

Writes OUT (JSON) and OUT with ``.png`` (ROC). Report keys: ``accuracy_mean``, ``accuracy_std`` (population std of
the 10 fold accuracies), ``fold_accuracies``, ``fold_thresholds``, ``tar_at_far_1e-3`` (on all 6,000 pairs, see
:mod:`vigil.eval.verification` for the threshold rule: at most 3 of the 3,000 impostor pairs accepted),
``auc``, ``variant`` (clean | degraded), ``model``, ``detector``, ``faces_not_found`` (images where no confident face
was found: aligned at LFW's mean landmark position instead, see :mod:`vigil.eval.face_source`), ``images``,
``pairs``, ``seconds``. The degraded variant is :mod:`vigil.eval.degrade_lfw`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vigil.eval import degrade_lfw
from vigil.eval.face_source import (
    DEFAULT_MIN_SCORE,
    DetectionCache,
    FaceSource,
    ImageEmbedder,
    RecognizerParts,
    build_detector,
    build_recognizer,
    read_image,
    vector_rows,
)
from vigil.eval.report import write_report
from vigil.eval.verification import (
    RocCurve,
    VerificationPair,
    cosine_scores,
    kfold_accuracy,
    parse_lfw_pairs,
    roc_curve,
    tar_at_far,
)
from vigil.paths import data_path

PAIRS_FILE = "pairs.txt"
TARGET_FAR = 1e-3


def load_lfw_image(lfw_dir: Path, rel: str, degraded: bool) -> np.ndarray:
    """The LFW image at ``rel`` (relative to ``lfw_dir``), its degraded-LFW version when ``degraded``."""
    image = read_image(Path(lfw_dir) / rel)
    return degrade_lfw.degrade_lfw_image(image, rel) if degraded else image


def lfw_loader(lfw_dir: Path, degraded: bool) -> Callable[[str], np.ndarray]:
    """``key -> image``: keys are ``"<variant>:<relative path>"``; degraded images go through degrade_lfw."""
    return lambda key: load_lfw_image(lfw_dir, key.split(":", 1)[1], degraded)


@dataclass(frozen=True)
class LfwEmbeddings:
    """Every LFW pair's two embeddings through one detector + aligner + embedder (rows follow ``pairs``)."""

    pairs: list[VerificationPair]
    first: np.ndarray  # [P, D] embedding of each pair's first image
    second: np.ndarray  # [P, D] ... and of its second
    faces_not_found: int  # images aligned at LFW's mean landmarks because no confident face was found
    images: int
    detections_from_cache: int


def lfw_face_source(
    degraded: bool,
    detect_batch,
    detector_label: str,
    aligner,
    min_score: float = DEFAULT_MIN_SCORE,
    detections_cache: Path | None = None,
) -> tuple[FaceSource, DetectionCache | None]:
    """The LFW protocol's face source (no confident face: LFW's mean landmarks) and its detection cache, if any."""
    variant = "degraded" if degraded else "clean"
    cache = (
        None
        if detections_cache is None
        else DetectionCache.in_folder(detections_cache, f"lfw-{variant}", detector_label, min_score)
    )
    return FaceSource(detect_batch, aligner, fallback="centre", min_score=min_score, cache=cache), cache


def embed_lfw(
    lfw_dir: Path,
    degraded: bool,
    detect_batch,
    detector_label: str,
    aligner,
    embedder,
    model_label: str,
    batch_size: int = 32,
    min_score: float = DEFAULT_MIN_SCORE,
    detections_cache: Path | None = None,
) -> LfwEmbeddings:
    """Embed each LFW image once (``detect_batch``: ``list[image] -> list[list[Face]]``); see :func:`evaluate_lfw`."""
    lfw_dir = Path(lfw_dir)
    variant = "degraded" if degraded else "clean"
    pairs = parse_lfw_pairs(lfw_dir / PAIRS_FILE)
    source, cache = lfw_face_source(degraded, detect_batch, detector_label, aligner, min_score, detections_cache)
    images = ImageEmbedder(source, embedder, detector_label, model_label, batch_size=batch_size)
    keys1 = [f"{variant}:{p.path1}" for p in pairs]
    keys2 = [f"{variant}:{p.path2}" for p in pairs]
    embedded = images.embed(keys1 + keys2, lfw_loader(lfw_dir, degraded), progress=f"lfw {variant}")
    if cache is not None:
        cache.save()
    unique = dict.fromkeys(keys1 + keys2)
    return LfwEmbeddings(
        pairs=pairs,
        first=vector_rows(embedded[k] for k in keys1),
        second=vector_rows(embedded[k] for k in keys2),
        faces_not_found=int(sum(not embedded[k].found for k in unique)),
        images=len(unique),
        detections_from_cache=0 if cache is None else cache.loaded,
    )


def embed_lfw_default_detector(
    recognizer: RecognizerParts, degraded: bool, detections_cache: Path | None = None
) -> LfwEmbeddings:
    """The shared LFW (``data_path("lfw")``) embedded by ``recognizer`` through the shipped default detector, as
    the runtime sees it: the scripts that score LFW pairs for a built recognizer call this."""
    detect_batch, detector_label = build_detector(None)
    return embed_lfw(
        data_path("lfw"),
        degraded,
        detect_batch,
        detector_label,
        recognizer.aligner,
        recognizer.embedder,
        recognizer.label,
        detections_cache=detections_cache,
    )


def evaluate_lfw(
    lfw_dir: Path,
    degraded: bool,
    detect_batch,
    detector_label: str,
    aligner,
    embedder,
    model_label: str,
    batch_size: int = 32,
    min_score: float = DEFAULT_MIN_SCORE,
    detections_cache: Path | None = None,
) -> tuple[dict, RocCurve]:
    """Run the protocol; returns (report dict, ROC). ``detect_batch``: ``list[image] -> list[list[Face]]``."""
    started = time.monotonic()
    lfw_dir = Path(lfw_dir)
    variant = "degraded" if degraded else "clean"
    embedded = embed_lfw(
        lfw_dir,
        degraded,
        detect_batch,
        detector_label,
        aligner,
        embedder,
        model_label,
        batch_size,
        min_score,
        detections_cache,
    )
    pairs = embedded.pairs
    scores = cosine_scores(embedded.first, embedded.second)
    labels = np.array([p.same for p in pairs])
    folds = kfold_accuracy(scores, labels, np.array([p.fold for p in pairs]))
    tar = tar_at_far(scores, labels, TARGET_FAR)
    roc = roc_curve(scores, labels)
    report = {
        "variant": variant,
        "model": model_label,
        "detector": detector_label,
        "accuracy_mean": round(folds.mean, 6),
        "accuracy_std": round(folds.std, 6),
        "tar_at_far_1e-3": round(tar.tar, 6),
        "tar_at_far_1e-3_threshold": round(tar.threshold, 6),
        "far_achieved": round(tar.far, 6),
        "auc": round(roc.auc, 6),
        "fold_accuracies": [round(float(a), 6) for a in folds.fold_accuracies],
        "fold_thresholds": [round(float(t), 6) for t in folds.fold_thresholds],
        "faces_not_found": embedded.faces_not_found,
        "images": embedded.images,
        "pairs": len(pairs),
        "pairs_same": int(labels.sum()),
        "mean_score_same": round(float(scores[labels].mean()), 6),
        "mean_score_different": round(float(scores[~labels].mean()), 6),
        "degradation": degrade_lfw.VERSION if degraded else None,
        "face_choice": f"confident face (score >= {min_score}) nearest the image centre; else LFW mean landmarks",
        "lfw_dir": str(lfw_dir),
        "detections_from_cache": embedded.detections_from_cache,
        "seconds": round(time.monotonic() - started, 1),
    }
    return report, roc


def write_lfw_report(json_path: Path, report: dict, roc: RocCurve) -> None:
    title = (
        f"LFW {report['variant']}: {report['model']} / {report['detector']}\n"
        f"accuracy {100 * report['accuracy_mean']:.2f} +- {100 * report['accuracy_std']:.2f} %, "
        f"TAR@FAR1e-3 {100 * report['tar_at_far_1e-3']:.2f} %, AUC {report['auc']:.4f}"
    )
    write_report(json_path, report, roc, title)


def run_cli(args: argparse.Namespace) -> int:
    lfw_dir = Path(args.lfw_dir) if args.lfw_dir else data_path("lfw")
    parse_lfw_pairs(lfw_dir / PAIRS_FILE)  # a bad pairs file fails before any model loads
    recognizer = build_recognizer(args.model, flip_average=args.flip_average, refine_landmarks=args.refine_landmarks)
    detect_batch, detector_label = build_detector(args.detector)
    report, roc = evaluate_lfw(
        lfw_dir=lfw_dir,
        degraded=bool(args.degraded),
        detect_batch=detect_batch,
        detector_label=detector_label,
        aligner=recognizer.aligner,
        embedder=recognizer.embedder,
        model_label=recognizer.label,
        detections_cache=args.detections_cache,
    )
    write_lfw_report(args.json, report, roc)
    print(
        f"LFW {report['variant']}: accuracy {100 * report['accuracy_mean']:.2f} "
        f"+- {100 * report['accuracy_std']:.2f} % "
        f"| TAR@FAR=1e-3 {100 * report['tar_at_far_1e-3']:.2f} % | AUC {report['auc']:.4f} "
        f"| faces not found {report['faces_not_found']}/{report['images']} | {report['seconds']:.0f} s -> {args.json}"
    )
    return 0
