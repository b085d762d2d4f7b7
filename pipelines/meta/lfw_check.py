"""The LFW View 2 protocol with an embedding adapter on top of the default recognizer (the shipping bar's "clean LFW
not lower by more than 0.1 point").

Every pair image is embedded once through ``vigil eval lfw``'s own path (``vigil.eval.lfw.embed_lfw``: default
detector, landmark refiner, the default recognizer with flip averaging; no confident face -> LFW's mean landmarks)
and kept in ``--embeddings`` (``.npz``); each adapter then maps both sides of every pair and the 10-fold accuracy,
TAR at FAR 1e-3 and the per-fold difference to the plain embeddings are reported. An adapter with test-time tuning
is used as trained (verification pairs have no support set to tune on).

    python -m pipelines.meta.lfw_check --adapter work/meta/runs/final/protonet.npz [...] \\
        --embeddings work/meta/lfw_pairs_clean.npz --detections-cache work/meta/lfw_det --json OUT [--degraded]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vigil.adapter import load_adapter
from vigil.errors import run_reporting_errors
from vigil.paths import data_path, repo_path


def pair_embeddings(path: Path, degraded: bool, detections_cache: Path | None) -> dict[str, np.ndarray]:
    """``first``, ``second`` (P, D), ``same`` (P,), ``fold`` (P,): from ``path`` when it exists, else embedded now."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    from vigil.eval.face_source import build_detector, build_recognizer
    from vigil.eval.lfw import embed_lfw

    recognizer = build_recognizer(None, flip_average=True, refine_landmarks=True)
    detect_batch, detector_label = build_detector(None)
    embedded = embed_lfw(
        data_path("lfw"),
        degraded,
        detect_batch,
        detector_label,
        recognizer.aligner,
        recognizer.embedder,
        recognizer.label,
        detections_cache=detections_cache,
    )
    out = {
        "first": embedded.first,
        "second": embedded.second,
        "same": np.array([p.same for p in embedded.pairs]),
        "fold": np.array([p.fold for p in embedded.pairs]),
        "model": np.array(recognizer.label),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def protocol_row(first: np.ndarray, second: np.ndarray, pairs: dict[str, np.ndarray]) -> tuple[dict, np.ndarray]:
    """(accuracy, std, TAR at FAR 1e-3; the fold accuracies) of the cosine of ``first`` and ``second`` rows."""
    from vigil.eval.verification import cosine_scores, kfold_accuracy, tar_at_far

    scores = cosine_scores(first, second)
    folds = kfold_accuracy(scores, pairs["same"], pairs["fold"])
    tar = tar_at_far(scores, pairs["same"], 1e-3)
    return {
        "accuracy": round(folds.mean, 6),
        "accuracy_std": round(folds.std, 6),
        "tar_at_far_1e-3": round(tar.tar, 6),
    }, folds.fold_accuracies


def compare(pairs: dict[str, np.ndarray], adapters: list[Path]) -> list[dict]:
    """The plain embeddings' row, then one per adapter with its per-fold difference (mean, standard error, wins)."""
    base, base_folds = protocol_row(pairs["first"], pairs["second"], pairs)
    rows = [{"method": "mean", **base}]
    for path in adapters:
        adapter = load_adapter(path)
        row, folds = protocol_row(adapter.apply(pairs["first"]), adapter.apply(pairs["second"]), pairs)
        diff = folds - base_folds
        rows.append(
            {
                "method": adapter.method,
                "adapter": str(path),
                **row,
                "delta_accuracy": round(float(diff.mean()), 6),
                "delta_accuracy_se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 6),
                "folds_better": int((diff > 0).sum()),
                "folds_worse": int((diff < 0).sum()),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adapter", type=Path, action="append", default=[])
    ap.add_argument("--embeddings", type=Path, required=True, help="pair embeddings (.npz), made on the first run")
    ap.add_argument("--detections-cache", type=Path, default=None)
    ap.add_argument("--degraded", action="store_true", help="the degraded LFW (vigil.eval.degrade_lfw)")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    return run_reporting_errors(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    cache = None if args.detections_cache is None else repo_path(args.detections_cache)
    pairs = pair_embeddings(repo_path(args.embeddings), args.degraded, cache)
    rows = compare(pairs, args.adapter)
    out = repo_path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"variant": "degraded" if args.degraded else "clean", "rows": rows}, indent=1) + "\n")
    for r in rows:
        delta = (
            f" ({100 * r['delta_accuracy']:+.2f}, SE {100 * r['delta_accuracy_se']:.2f})"
            if "delta_accuracy" in r
            else ""
        )
        print(
            f"{r['method']:<18} LFW {100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}{delta}, "
            f"TAR@1e-3 {100 * r['tar_at_far_1e-3']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
