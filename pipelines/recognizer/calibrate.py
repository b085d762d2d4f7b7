"""Calibrate the recognizer's match threshold on many impostor pairs, through vigil's own detect -> align -> embed path.

LFW's 3,000 different-person pairs can only place a threshold at FAR 1e-3. A watchlist compares every face in the
stream with every listed person, so the runtime needs a lower false-match rate: this script embeds a seeded sample
of LFW images (every image of the sampled people), scores *all* cross-identity pairs (millions) and all
same-identity pairs, and reports the cosine threshold at FAR 1e-3, 1e-4 and 1e-5 with the TAR at each.

    python -m pipelines.recognizer.calibrate --people 1000 [--model M] [--detections-cache DIR] \
        --json work/recognizer/calibration.json

``--probes degraded`` scores the watchlist case instead: each clean photo (the reference a user enrols) against
each degraded-LFW image (:mod:`vigil.eval.degrade_lfw`: face 24-40 px, blur, JPEG 20-40) of a *different* photo, so
the threshold and TAR describe a CCTV-like probe against a good reference; ``--at-threshold T`` adds TAR and FAR at a
fixed operating point (default: the model's calibrated threshold from the manifest).

The JSON's ``thresholds`` (and the command that made it) feed the manifest's ``match_threshold`` fields:
``python -m pipelines.manifest thresholds --name NAME --flip FLIP.json --single SINGLE.json``.
LFW here is evaluation data only: nothing is trained on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vigil.errors import VigilError, run_reporting_errors
from vigil.paths import data_path

TARGET_FARS = (1e-3, 1e-4, 1e-5)
PROBE_VARIANTS = ("clean", "degraded")


def sample_images(lfw_dir: Path, people: int, seed: int, max_per_person: int = 10) -> list[tuple[str, str]]:
    """(person, relative path) for every image (up to ``max_per_person``) of ``people`` seeded LFW people."""
    folders = sorted(p for p in Path(lfw_dir).iterdir() if p.is_dir())
    if not folders:
        raise VigilError(f"{lfw_dir}: no LFW person folders")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(folders), size=min(people, len(folders)), replace=False))
    out: list[tuple[str, str]] = []
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


def cross_pair_scores(
    gallery: np.ndarray,
    gallery_ids: np.ndarray,
    gallery_images: np.ndarray,
    probes: np.ndarray,
    probe_ids: np.ndarray,
    probe_images: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) cosines of every gallery vector against every probe vector.

    A genuine pair is the same identity from two *different* source images (a photo never matches its own degraded
    copy); an impostor pair is two identities.
    """
    sims = gallery @ probes.T
    same_id = gallery_ids[:, None] == probe_ids[None, :]
    same_image = gallery_images[:, None] == probe_images[None, :]
    return sims[same_id & ~same_image], sims[~same_id]


def operating_rows(genuine: np.ndarray, impostor: np.ndarray, fars=TARGET_FARS) -> list[dict]:
    """Threshold, TAR and achieved FAR at each target FAR."""
    rows = []
    for far in fars:
        t = threshold_at_far(impostor, far)
        rows.append(
            {
                "far": far,
                "threshold": round(t, 4),
                "tar": round(float((genuine >= t).mean()), 4),
                "far_achieved": float((impostor >= t).mean()),
            }
        )
    return rows


def at_threshold(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> dict:
    """TAR and FAR (with the count of impostor pairs that pass) at a fixed threshold."""
    return {
        "threshold": threshold,
        "tar": round(float((genuine >= threshold).mean()), 4),
        "far": float((impostor >= threshold).mean()),
        "impostors_passing": int((impostor >= threshold).sum()),
    }


def calibrate(
    lfw_dir: Path,
    people: int,
    seed: int,
    model: Path | None = None,
    detections_cache: Path | None = None,
    detector: Path | None = None,
    probes: str = "clean",
    operating_threshold: float | None = None,
    flip_average: bool = True,
    refine_landmarks: bool = True,
) -> dict:
    """Thresholds at TARGET_FARS for ``model`` (default: the manifest's recognizer) through vigil's own path, with
    ``detector`` (default: the manifest's) finding and aligning the faces.

    ``probes="clean"``: all pairs among the clean images. ``probes="degraded"``: the watchlist case, every clean
    image (the reference photo) against every degraded-LFW image (the CCTV face) of a different photo; degraded
    images where the detector finds no face are dropped, as the runtime would never embed them.
    ``operating_threshold`` (default: the model's calibrated threshold in the manifest) adds TAR/FAR at that point.
    """
    from vigil.eval.face_source import build_detector, build_recognizer

    if probes not in PROBE_VARIANTS:
        raise VigilError(f"--probes: expected one of {PROBE_VARIANTS}, got {probes!r}")
    images = sample_images(lfw_dir, people, seed)
    recognizer = build_recognizer(model, flip_average=flip_average, refine_landmarks=refine_landmarks)
    detector_parts = build_detector(detector)
    gallery = embed_variant(
        lfw_dir, images, recognizer, detector_parts, detections_cache, f"calibrate-{people}-{seed}", degraded=False
    )
    if probes == "clean":
        genuine, impostor = pair_scores(gallery.vectors, gallery.identities)
        probe_set = gallery
    else:
        probe_set = embed_variant(
            lfw_dir,
            images,
            recognizer,
            detector_parts,
            detections_cache,
            f"calibrate-{people}-{seed}-degraded",
            degraded=True,
        )
        genuine, impostor = cross_pair_scores(
            gallery.vectors,
            gallery.identities,
            gallery.images,
            probe_set.vectors,
            probe_set.identities,
            probe_set.images,
        )
    report = {
        "model": recognizer.label,
        "flip_average": flip_average,
        "refine_landmarks": refine_landmarks,
        "detector": detector_parts[1],
        "lfw_dir": str(lfw_dir),
        "people": people,
        "seed": seed,
        "probes": probes,
        "images": len(images),
        "faces_found": len(gallery.vectors),
        "probe_faces_found": len(probe_set.vectors),
        "genuine_pairs": len(genuine),
        "impostor_pairs": len(impostor),
        "thresholds": operating_rows(genuine, impostor),
    }
    operating = shipped_threshold(model, flip_average) if operating_threshold is None else operating_threshold
    if operating is not None:
        report["at_operating_threshold"] = at_threshold(genuine, impostor, operating)
    return report


@dataclass(frozen=True)
class EmbeddedSet:
    """Unit embeddings of the images where a face was found, with each one's identity and source image."""

    vectors: np.ndarray  # (N, D) float32
    identities: np.ndarray  # (N,) person folder names
    images: np.ndarray  # (N,) relative paths


def embed_variant(
    lfw_dir: Path,
    images: list[tuple[str, str]],
    recognizer,
    detector_parts,
    detections_cache: Path | None,
    run_name: str,
    degraded: bool,
) -> EmbeddedSet:
    """Detect, align and embed every image (degraded-LFW version when ``degraded``); faces not found are skipped."""
    from vigil.eval.face_source import DEFAULT_MIN_SCORE, DetectionCache, FaceSource, ImageEmbedder
    from vigil.eval.lfw import load_lfw_image

    detect_batch, detector_label = detector_parts
    cache = (
        None
        if detections_cache is None
        else DetectionCache.in_folder(detections_cache, run_name, detector_label, DEFAULT_MIN_SCORE)
    )
    source = FaceSource(detect_batch, recognizer.aligner, fallback="skip", cache=cache)
    embedder = ImageEmbedder(source, recognizer.embedder, detector_label, recognizer.label)
    embedded = embedder.embed(
        [rel for _, rel in images], lambda rel: load_lfw_image(lfw_dir, rel, degraded), progress=run_name
    )
    if cache is not None:
        cache.save()
    kept = [(who, rel, vector) for who, rel in images if (vector := embedded[rel].vector) is not None]
    if not kept:
        raise VigilError(f"{lfw_dir}: no face found in any {'degraded ' if degraded else ''}image")
    return EmbeddedSet(
        vectors=np.stack([v for _, _, v in kept]).astype(np.float32),
        identities=np.array([who for who, _, _ in kept]),
        images=np.array([rel for _, rel, _ in kept]),
    )


def shipped_threshold(model: Path | None, flip_average: bool) -> float | None:
    """The manifest's calibrated threshold of ``model`` for the embedding mode (None: a file outside the manifest)."""
    from vigil.models import ModelRegistry, calibrated_match_threshold

    return calibrated_match_threshold(ModelRegistry().resolve("recognizer", model), flip_average)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", type=Path, default=None, help="LFW folder (default: <data>/lfw)")
    ap.add_argument("--people", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--model", type=Path, default=None, help="recognizer ONNX or manifest name (default: the shipped default)"
    )
    ap.add_argument(
        "--detector", type=Path, default=None, help="detector model or manifest name (default: the shipped default)"
    )
    ap.add_argument("--detections-cache", type=Path, default=None, help="folder that keeps the detections between runs")
    ap.add_argument(
        "--probes",
        choices=PROBE_VARIANTS,
        default="clean",
        help="clean: all pairs of clean images; degraded: clean reference photos against degraded-LFW probes",
    )
    ap.add_argument(
        "--at-threshold",
        type=float,
        default=None,
        help="also report TAR/FAR at this cosine (default: the model's match_threshold in the manifest)",
    )
    ap.add_argument(
        "--flip-average",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="embed each face with its mirror image (the runtime's default, recognizer.flip_average)",
    )
    ap.add_argument(
        "--refine-landmarks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refine the landmarks with the landmark model (the runtime's default, detector.refine_landmarks)",
    )
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)

    def body() -> int:
        report = calibrate(
            args.lfw or data_path("lfw"),
            args.people,
            args.seed,
            args.model,
            args.detections_cache,
            args.detector,
            args.probes,
            args.at_threshold,
            args.flip_average,
            args.refine_landmarks,
        )
        report["command"] = " ".join(
            ["python -m pipelines.recognizer.calibrate", *(sys.argv[1:] if argv is None else argv)]
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        for row in report["thresholds"]:
            print(f"FAR {row['far']:.0e}: threshold {row['threshold']:.4f}, TAR {row['tar']:.4f}")
        shipped = report.get("at_operating_threshold")
        if shipped:
            print(
                f"at the operating threshold {shipped['threshold']:.4f}: TAR {shipped['tar']:.4f}, FAR "
                f"{shipped['far']:.2e} ({shipped['impostors_passing']} impostor pairs)"
            )
        print(
            f"{report['faces_found']}/{report['images']} faces ({report['probes']} probes: "
            f"{report['probe_faces_found']}), "
            f"{report['genuine_pairs']} genuine / {report['impostor_pairs']} impostor pairs; saved {args.json}"
        )
        return 0

    return run_reporting_errors(body)


if __name__ == "__main__":
    sys.exit(main())
