"""Score fusion of two recognizers on LFW, before building an ensemble (vigil/ensemble.py) of them.

    python -m pipelines.recognizer.fusion_sweep --models models/recognizer/dlib-resnet-v1-scene.onnx \
        models/recognizer/sface-2021dec.onnx --weights 0.2 0.32 0.4 [--degraded] [--json OUT]
    python -m pipelines.recognizer.fusion_sweep --celeba-val --models A B [--json OUT]   # the weight

Each model embeds every LFW image through vigil's own path (``vigil.eval.lfw.embed_lfw``, as ``vigil eval lfw``:
default detector, the model's manifest template, flip-averaged as the runtime does; detections from
``--detections-cache``), once per model and variant: its pair scores are kept in ``--cache``. Then, for each weight
``w`` of the SECOND model, the fused pair score
``(1 - w) cos_1 + w cos_2`` (what an ensemble file with those weights computes) goes through the LFW protocol.
``--weights`` are chosen before looking: the LFW pairs are the test set, a sweep shows sensitivity, not a tuning.
The report gives each model alone and each fusion, and the impostor cosine spread of each model on the LFW pairs.

The ensemble's weight comes from elsewhere: ``--celeba-val`` embeds the CelebA validation identities' photos (the
fine-tuning split: ``faces_dataset.validation_identities``, 15 %, seed 0; never trained on, never LFW) with each
model through the same path, and reports each model's impostor cosine spread over all their different-person
pairs, and the equal-weight (z-normalised) fusion weight of the second model, ``std_1 / (std_1 + std_2)``: each
cosine divided by its own impostor spread, then averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vigil.errors import run_reporting_errors

DEFAULT_CACHE = Path("work/recognizer/fusion")
DEFAULT_DETECTIONS = Path("work/recognizer/lfw_det480/detcache")


def pair_scores(model: Path, variant: str, detections_cache: Path, cache: Path) -> tuple[list, np.ndarray]:
    """(LFW pairs, each pair's cosine) for ``model`` through ``vigil.eval.lfw.embed_lfw``; cached per model checksum."""
    from vigil.eval import lfw
    from vigil.eval.face_source import build_recognizer
    from vigil.eval.verification import cosine_scores, parse_lfw_pairs
    from vigil.paths import data_path

    recognizer = build_recognizer(model, flip_average=True)
    stored = cache / f"{recognizer.label.replace('+', '_')}_{variant}_scores.npy"
    if stored.is_file():
        return parse_lfw_pairs(data_path("lfw") / lfw.PAIRS_FILE), np.load(stored)
    embedded = lfw.embed_lfw_default_detector(recognizer, variant == "degraded", detections_cache)
    scores = cosine_scores(embedded.first, embedded.second)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(stored, scores)
    return embedded.pairs, scores


def celeba_val_impostor_std(model: Path, detections_cache: Path, val_fraction: float = 0.15, seed: int = 0) -> dict:
    """``model``'s cosine spread over all different-person pairs of the CelebA validation identities' photos."""
    from pipelines.recognizer.faces_dataset import list_photos, validation_identities
    from vigil.eval.face_source import (
        DEFAULT_MIN_SCORE,
        DetectionCache,
        FaceSource,
        ImageEmbedder,
        build_detector,
        build_recognizer,
        read_image,
        vector_rows,
    )
    from vigil.paths import data_path

    root = data_path("celeba299")
    rels = [p.relative_to(root).as_posix() for p in list_photos(root)]
    val_ids = validation_identities([r.split("/")[0] for r in rels], val_fraction, seed)
    rels = [r for r in rels if r.split("/")[0] in val_ids]
    recognizer = build_recognizer(model, flip_average=True)
    detect_batch, detector_label = build_detector(None)
    cache = DetectionCache.in_folder(detections_cache, "celeba-val", detector_label, DEFAULT_MIN_SCORE)
    source = FaceSource(detect_batch, recognizer.aligner, fallback="skip", min_score=DEFAULT_MIN_SCORE, cache=cache)
    embedded = ImageEmbedder(source, recognizer.embedder, detector_label, recognizer.label).embed(
        rels, lambda rel: read_image(root / rel), progress=f"celeba val {Path(model).name}"
    )
    cache.save()
    kept = [r for r in rels if embedded[r].vector is not None]
    vectors = vector_rows(embedded[r] for r in kept)
    people = np.array([r.split("/")[0] for r in kept])
    upper = np.triu(np.ones((len(kept), len(kept)), dtype=bool), k=1)
    impostor = (vectors @ vectors.T)[upper & (people[:, None] != people[None, :])]
    return {
        "photos": len(kept),
        "skipped_no_face": len(rels) - len(kept),
        "identities": len(set(people)),
        "impostor_pairs": int(impostor.size),
        "impostor_mean": round(float(impostor.mean()), 4),
        "impostor_std": round(float(impostor.std()), 4),
    }


def equal_weight(first_std: float, second_std: float) -> float:
    """The second model's weight when each cosine is divided by its impostor spread and the two are averaged."""
    return round(first_std / (first_std + second_std), 2)


def protocol(scores: np.ndarray, pairs) -> dict:
    """LFW 10-fold accuracy (mean, std in %), TAR at FAR 1e-3 (%), AUC: the same functions as ``vigil eval lfw``."""
    from vigil.eval.verification import kfold_accuracy, roc_curve, tar_at_far

    labels = np.array([p.same for p in pairs])
    folds = kfold_accuracy(scores, labels, np.array([p.fold for p in pairs]))
    return {
        "accuracy_mean": round(100 * folds.mean, 2),
        "accuracy_std": round(100 * folds.std, 2),
        "tar_at_far_1e-3": round(100 * tar_at_far(scores, labels, 1e-3).tar, 2),
        "auc": round(roc_curve(scores, labels).auc, 5),
        "fold_accuracies": [round(float(a), 4) for a in folds.fold_accuracies],
    }


def sweep(first: np.ndarray, second: np.ndarray, pairs, weights: list[float]) -> dict:
    labels = np.array([p.same for p in pairs])
    report = {
        "first": protocol(first, pairs),
        "second": protocol(second, pairs),
        "impostor_std": [round(float(first[~labels].std()), 4), round(float(second[~labels].std()), 4)],
    }
    report["fused"] = {str(w): protocol((1 - w) * first + w * second, pairs) for w in weights}
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models", type=Path, nargs=2, required=True, help="two recognizers listed in models/manifest.yaml"
    )
    ap.add_argument("--weights", type=float, nargs="+", default=[], help="weights of the second model, each in [0, 1]")
    ap.add_argument(
        "--celeba-val",
        action="store_true",
        help="instead of LFW: each model's impostor spread on the CelebA validation identities, and the equal weight",
    )
    ap.add_argument(
        "--degraded", action="store_true", help="the seeded surveillance-degraded LFW (vigil eval lfw --degraded)"
    )
    ap.add_argument("--detections-cache", type=Path, default=DEFAULT_DETECTIONS)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="embeddings per model and variant")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    def body() -> int:
        from vigil.errors import VigilError

        if args.celeba_val:
            return _celeba_weight(args)
        if not args.weights or not all(0.0 <= w <= 1.0 for w in args.weights):
            raise VigilError(f"--weights: each must be in [0, 1], got {args.weights}")
        variant = "degraded" if args.degraded else "clean"
        pairs, first = pair_scores(args.models[0], variant, args.detections_cache, args.cache)
        _, second = pair_scores(args.models[1], variant, args.detections_cache, args.cache)
        report = {
            "variant": variant,
            "models": [str(m) for m in args.models],
            **sweep(first, second, pairs, args.weights),
        }
        for name in ("first", "second"):
            r = report[name]
            print(
                f"{variant} {name:6s}: {r['accuracy_mean']:.2f} +- {r['accuracy_std']:.2f} %, TAR@1e-3 "
                f"{r['tar_at_far_1e-3']:.2f} %"
            )
        for w, r in report["fused"].items():
            print(
                f"{variant} w={w:5s}: {r['accuracy_mean']:.2f} +- {r['accuracy_std']:.2f} %, TAR@1e-3 "
                f"{r['tar_at_far_1e-3']:.2f} %"
            )
        print(f"impostor cosine std {report['impostor_std']}")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))
        return 0

    return run_reporting_errors(body)


def _celeba_weight(args: argparse.Namespace) -> int:
    spreads = [celeba_val_impostor_std(model, args.detections_cache) for model in args.models]
    report = {
        "set": "celeba299 validation identities (faces_dataset split, 15 %, seed 0)",
        "models": [str(m) for m in args.models],
        "per_model": spreads,
        "equal_weight_second": equal_weight(spreads[0]["impostor_std"], spreads[1]["impostor_std"]),
    }
    for model, spread in zip(args.models, spreads):
        print(
            f"{model.name}: {spread['photos']} photos of {spread['identities']} people, impostor cosine "
            f"{spread['impostor_mean']:.4f} +- {spread['impostor_std']:.4f} ({spread['impostor_pairs']} pairs)"
        )
    print(f"equal-weight fusion: second model weight {report['equal_weight_second']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
