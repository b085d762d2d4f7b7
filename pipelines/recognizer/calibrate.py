"""Calibrate the recognizer's match threshold on many impostor pairs, through vigil's own detect -> align -> embed path.

LFW's 3,000 different-person pairs can only place a threshold at FAR 1e-3. A watchlist compares every face in the
stream with every listed person, so the runtime needs a lower false-match rate: this script embeds a seeded sample
of LFW images (every image of the sampled people), scores *all* cross-identity pairs (millions) and all
same-identity pairs, and reports the cosine threshold at FAR 1e-3, 1e-4 and 1e-5 with the TAR at each.

    python -m pipelines.recognizer.calibrate --people 1000 [--model M] [--detections-cache DIR] --json work/recognizer/calibration.json

The JSON's ``thresholds`` feed the manifest's ``match_threshold`` (by hand, with the command in the source note).
LFW here is evaluation data only: nothing is trained on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vigil.errors import VigilError, run_reporting_errors
from vigil.paths import data_path

TARGET_FARS = (1e-3, 1e-4, 1e-5)


def sample_images(lfw_dir: Path, people: int, seed: int, max_per_person: int = 10) -> list[tuple[str, str]]:
    """(person, relative path) for every image (up to ``max_per_person``) of ``people`` seeded LFW people."""
    folders = sorted(p for p in Path(lfw_dir).iterdir() if p.is_dir())
    if not folders:
        raise VigilError(f"{lfw_dir}: no LFW person folders")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(folders), size=min(people, len(folders)), replace=False))
    out = []
    for index in chosen:
        files = sorted(f for f in folders[index].iterdir() if f.suffix.lower() in (".jpg", ".png"))[:max_per_person]
        out.extend((folders[index].name, f"{folders[index].name}/{f.name}") for f in files)
    return out


def threshold_at_far(impostor: np.ndarray, target_far: float) -> float:
    """Smallest threshold t with (impostor >= t).mean() <= target_far (scores above t are matches)."""
    ordered = np.sort(impostor)[::-1]
    allowed = int(np.floor(target_far * len(ordered)))
    return float(np.nextafter(ordered[allowed], np.inf)) if allowed < len(ordered) else float(ordered[-1])


def pair_scores(vectors: np.ndarray, identities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) cosine scores over all unordered pairs of unit vectors."""
    sims = vectors @ vectors.T
    upper = np.triu(np.ones(sims.shape, bool), k=1)
    same = identities[:, None] == identities[None, :]
    return sims[upper & same], sims[upper & ~same]


def calibrate(
    lfw_dir: Path, people: int, seed: int, model: Path | None = None, detections_cache: Path | None = None,
    detector: Path | None = None,
) -> dict:
    """Thresholds at TARGET_FARS for ``model`` (default: the manifest's recognizer) through vigil's own path, with
    ``detector`` (default: the manifest's) finding and aligning the faces."""
    from vigil.eval.face_source import DEFAULT_MIN_SCORE, DetectionCache, FaceSource, ImageEmbedder, build_detector, build_recognizer, read_image

    images = sample_images(lfw_dir, people, seed)
    recognizer = build_recognizer(model)
    detect_batch, detector_label = build_detector(detector)
    run_name = f"calibrate-{people}-{seed}"
    cache = None if detections_cache is None else DetectionCache.in_folder(detections_cache, run_name, detector_label, DEFAULT_MIN_SCORE)
    source = FaceSource(detect_batch, recognizer.aligner, fallback="skip", cache=cache)
    embedder = ImageEmbedder(source, recognizer.embedder, detector_label, recognizer.label)
    embedded = embedder.embed([rel for _, rel in images], lambda rel: read_image(lfw_dir / rel), progress="calibrate")
    if cache is not None:
        cache.save()
    kept = [(who, embedded[rel].vector) for who, rel in images if embedded[rel].vector is not None]
    vectors = np.stack([v for _, v in kept]).astype(np.float32)
    genuine, impostor = pair_scores(vectors, np.array([who for who, _ in kept]))
    rows = []
    for far in TARGET_FARS:
        t = threshold_at_far(impostor, far)
        rows.append({"far": far, "threshold": round(t, 4), "tar": round(float((genuine >= t).mean()), 4),
                     "far_achieved": float((impostor >= t).mean())})
    return {"model": recognizer.label, "detector": detector_label, "lfw_dir": str(lfw_dir), "people": people,
            "seed": seed, "images": len(images), "faces_found": len(kept), "genuine_pairs": int(len(genuine)),
            "impostor_pairs": int(len(impostor)), "thresholds": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", type=Path, default=None, help="LFW folder (default: <data>/lfw)")
    ap.add_argument("--people", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=None, help="recognizer ONNX or manifest name (default: the shipped default)")
    ap.add_argument("--detector", type=Path, default=None, help="detector model or manifest name (default: the shipped default)")
    ap.add_argument("--detections-cache", type=Path, default=None, help="folder that keeps the detections between runs")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)

    def body() -> int:
        report = calibrate(args.lfw or data_path("lfw"), args.people, args.seed, args.model, args.detections_cache, args.detector)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        for row in report["thresholds"]:
            print(f"FAR {row['far']:.0e}: threshold {row['threshold']:.4f}, TAR {row['tar']:.4f}")
        print(f"{report['faces_found']}/{report['images']} faces, {report['impostor_pairs']} impostor pairs; saved {args.json}")
        return 0

    return run_reporting_errors(body)


if __name__ == "__main__":
    sys.exit(main())
