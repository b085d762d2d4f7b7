"""Calibrate the recognition cascade's reject cosine (vigil/cascade.py) and show what it does at the shipped threshold.

The cascade scores each face with the ensemble's fast (first) member and runs the whole ensemble only for faces whose
best fast score reaches ``reject_cosine``. Through vigil's own path (detector, landmark refiner, aligner, the shipped
ensemble, flip-averaged by default), on the same LFW sample as ``pipelines.recognizer.calibrate``:

1. every clean photo and every degraded-LFW probe is embedded by the whole ensemble; the fast member's embedding of
   a face is the ensemble embedding's first slice (exactly: vigil.ensemble.EnsembleEmbedder.fast_part);
2. ``reject_cosine`` is the fast cosine below which at most ``--max-loss`` of the *watchlist-case* genuine pairs
   that the ensemble accepts at the shipped threshold fall (a clean reference photo against a degraded probe of the
   same person: the case the cascade must not hurt);
3. the report gives, at the shipped threshold, with and without the cascade: TAR and FAR on the clean pairs and on
   the watchlist case, the impostor pairs that pass (the cascade cannot add one: a pair is accepted with it only if it
   is accepted without it), and how many faces the fast member settles alone: per impostor pair, and per stranger
   probe against a watchlist of K people (the largest fast score over every photo of K other people).

    python -m pipelines.recognizer.cascade_calibrate --people 1000 --detections-cache DIR \
        --embeddings-cache DIR --json work/cascade/calib.json [--reject R] [--seed 1]

``--reject R`` checks a given value instead of choosing one (e.g. the shipped one on another seed's sample).
LFW here is evaluation data only: nothing is trained on it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from pipelines.recognizer.calibrate import (
    EmbeddedSet,
    cross_pair_scores,
    embed_variant,
    pair_scores,
    sample_images,
    shipped_threshold,
)
from vigil.errors import VigilError, run_reporting_errors
from vigil.paths import data_path

WATCHLIST_SIZES = (1, 10, 100)


def choose_reject(genuine_ensemble: np.ndarray, genuine_fast: np.ndarray, threshold: float, max_loss: float) -> float:
    """The largest fast cosine r such that at most ``max_loss`` of the genuine pairs the ensemble accepts (score >=
    ``threshold``) have a fast score below r."""
    accepted = np.sort(genuine_fast[genuine_ensemble >= threshold])
    if len(accepted) == 0:
        raise VigilError("no genuine pair passes the threshold: nothing to calibrate on")
    allowed = int(np.floor(max_loss * len(accepted)))  # pairs that may fall below r
    return float(accepted[allowed])


def operating_point(
    genuine: tuple[np.ndarray, np.ndarray], impostor: tuple[np.ndarray, np.ndarray], threshold: float, reject: float
) -> dict:
    """TAR/FAR at ``threshold`` without and with the cascade; each argument is (ensemble scores, fast scores)."""
    (g_ens, g_fast), (i_ens, i_fast) = genuine, impostor
    full_g, full_i = g_ens >= threshold, i_ens >= threshold
    cascade_g, cascade_i = full_g & (g_fast >= reject), full_i & (i_fast >= reject)
    return {
        "genuine_pairs": len(g_ens),
        "impostor_pairs": len(i_ens),
        "tar_full": round(float(full_g.mean()), 4),
        "tar_cascade": round(float(cascade_g.mean()), 4),
        "genuine_lost": int(full_g.sum() - cascade_g.sum()),
        "far_full": float(full_i.mean()),
        "far_cascade": float(cascade_i.mean()),
        "impostors_passing_full": int(full_i.sum()),
        "impostors_passing_cascade": int(cascade_i.sum()),
        "impostor_pairs_settled_by_fast_member": round(float((i_fast < reject).mean()), 4),
        "genuine_pairs_settled_by_fast_member": round(float((g_fast < reject).mean()), 4),
    }


def stranger_probes_settled(
    gallery_fast: np.ndarray,
    gallery_ids: np.ndarray,
    probes_fast: np.ndarray,
    probe_ids: np.ndarray,
    reject: float,
    sizes: tuple[int, ...],
    seed: int,
) -> dict:
    """Per watchlist size K: the share of probes whose best fast score over every photo of K people *other* than
    themselves stays below ``reject`` (a stranger's face the fast member settles alone), K drawn at random per probe."""
    rng = np.random.default_rng(seed)
    people = np.unique(gallery_ids)
    rows_of = {person: np.flatnonzero(gallery_ids == person) for person in people}
    sims = probes_fast @ gallery_fast.T
    out = {}
    for size in sizes:
        settled = 0
        for index, own in enumerate(probe_ids):
            others = people[people != own]
            chosen = rng.choice(others, size=min(size, len(others)), replace=False)
            rows = np.concatenate([rows_of[person] for person in chosen])
            settled += float(sims[index, rows].max()) < reject
        out[str(size)] = round(settled / max(len(probe_ids), 1), 4)
    return out


def embeddings_cache_file(folder: Path, recognizer_label: str, detector_label: str, people: int, seed: int) -> Path:
    """The .npz keeping one sample's embeddings: named by the recognizer *and* the detector that found the faces, so
    embeddings made through another detector (or recognizer, refiner, flip mode) are never reused."""
    name = re.sub(r"[^A-Za-z0-9_.+@-]+", "_", f"{recognizer_label}-{detector_label}-{people}-{seed}")
    return Path(folder) / f"{name}.npz"


def embedded_sets(args: argparse.Namespace):
    """(clean set, degraded set, fast_part) through the runtime's path, cached as .npz when asked."""
    from vigil.ensemble import EnsembleEmbedder
    from vigil.eval.face_source import build_detector, build_recognizer

    recognizer = build_recognizer(args.model, flip_average=args.flip_average, refine_landmarks=True)
    if not isinstance(recognizer.embedder, EnsembleEmbedder):
        raise VigilError(f"{recognizer.path}: the cascade needs an ensemble recognizer")
    fast_part = recognizer.embedder.fast_part
    detector = build_detector(args.detector)
    cache = None
    if args.embeddings_cache is not None:
        cache = embeddings_cache_file(args.embeddings_cache, recognizer.label, detector[1], args.people, args.seed)
        if cache.is_file():
            data = np.load(cache, allow_pickle=False)
            sets = [EmbeddedSet(data[f"{k}_v"], data[f"{k}_id"], data[f"{k}_img"]) for k in ("clean", "degraded")]
            return sets[0], sets[1], fast_part
    images = sample_images(args.lfw or data_path("lfw"), args.people, args.seed)
    lfw = args.lfw or data_path("lfw")
    run = f"calibrate-{args.people}-{args.seed}"
    clean = embed_variant(lfw, images, recognizer, detector, args.detections_cache, run, degraded=False)
    degraded = embed_variant(lfw, images, recognizer, detector, args.detections_cache, f"{run}-degraded", degraded=True)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"{k}_{f}": getattr(s, n) for k, s in (("clean", clean), ("degraded", degraded))
                  for f, n in (("v", "vectors"), ("id", "identities"), ("img", "images"))}  # fmt: skip
        np.savez(cache, **arrays)
    return clean, degraded, fast_part


def calibrate_cascade(args: argparse.Namespace) -> dict:
    clean, degraded, fast_part = embedded_sets(args)
    threshold = args.threshold if args.threshold is not None else shipped_threshold(args.model, args.flip_average)
    if threshold is None:
        raise VigilError("--threshold: the model has no calibrated threshold in the manifest")
    clean_fast, degraded_fast = fast_part(clean.vectors), fast_part(degraded.vectors)
    clean_pairs = (pair_scores(clean.vectors, clean.identities), pair_scores(clean_fast, clean.identities))
    sets = (clean.identities, clean.images, degraded.identities, degraded.images)
    watch_ens = cross_pair_scores(clean.vectors, sets[0], sets[1], degraded.vectors, sets[2], sets[3])
    watch_fast = cross_pair_scores(clean_fast, sets[0], sets[1], degraded_fast, sets[2], sets[3])
    reject = args.reject
    if reject is None:
        reject = choose_reject(watch_ens[0], watch_fast[0], threshold, args.max_loss)
    return {
        "threshold": threshold,
        "reject_cosine": round(reject, 4),
        "chosen": args.reject is None,
        "max_loss": args.max_loss,
        "flip_average": args.flip_average,
        "people": args.people,
        "seed": args.seed,
        "faces": {"clean": len(clean.vectors), "degraded": len(degraded.vectors)},
        "clean": operating_point(
            (clean_pairs[0][0], clean_pairs[1][0]), (clean_pairs[0][1], clean_pairs[1][1]), threshold, reject
        ),
        "watchlist_case": operating_point(
            (watch_ens[0], watch_fast[0]), (watch_ens[1], watch_fast[1]), threshold, reject
        ),
        "stranger_probes_settled_by_fast_member": stranger_probes_settled(
            clean_fast, clean.identities, degraded_fast, degraded.identities, reject, WATCHLIST_SIZES, args.seed
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", type=Path, default=None, help="LFW folder (default: <data>/lfw)")
    ap.add_argument("--people", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=None, help="an ensemble (default: the shipped recognizer)")
    ap.add_argument("--detector", type=Path, default=None)
    ap.add_argument("--detections-cache", type=Path, default=None)
    ap.add_argument("--embeddings-cache", type=Path, default=None, help="folder keeping the embeddings between runs")
    ap.add_argument("--threshold", type=float, default=None, help="default: the manifest's match threshold")
    ap.add_argument("--max-loss", type=float, default=0.005, help="share of accepted watchlist-case pairs it may lose")
    ap.add_argument("--reject", type=float, default=None, help="check this reject cosine instead of choosing one")
    ap.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)

    def body() -> int:
        report = calibrate_cascade(args)
        report["command"] = " ".join(
            ["python -m pipelines.recognizer.cascade_calibrate", *(sys.argv[1:] if argv is None else argv)]
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1))
        return 0

    return run_reporting_errors(body)


if __name__ == "__main__":
    sys.exit(main())
