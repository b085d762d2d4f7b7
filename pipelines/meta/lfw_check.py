"""The LFW View 2 protocol with an embedding adapter on top of the default recognizer (the shipping bar's "clean LFW
not lower by more than 0.1 point").

Every pair image is embedded once through ``vigil eval lfw``'s own path (``vigil.eval.lfw.embed_lfw``: default
detector, landmark refiner, the default recognizer with flip averaging; no confident face -> LFW's mean landmarks)
and kept in ``--embeddings`` (``.npz``); each adapter then maps both sides of every pair and the 10-fold accuracy,
TAR at FAR 1e-3 and the per-fold difference to the plain embeddings are reported. An adapter with test-time tuning
is used as trained (verification pairs have no support set to tune on).

Embedding the 7,701 LFW pair images takes hours on two shared CPU cores, so ``--pool`` gives a cheap stand-in from
an embedding cache instead: every pair of clean photos of the same held-out person (``--role``'s identities of
``--split``) and as many pairs of different people, in 10 folds of people (:func:`pool_pairs`). It answers the same
question (does the adapter hurt clean-photo verification?) on other pairs: not the LFW protocol's figure.

    python -m pipelines.meta.lfw_check --adapter work/meta/runs/final/protonet.npz [...] \\
        --embeddings work/meta/lfw_pairs_clean.npz --detections-cache work/meta/lfw_det --json OUT [--degraded]
    python -m pipelines.meta.lfw_check --adapter ... --pool work/meta/cache/lfw.npz --split work/meta/split.json \
        --json OUT
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from vigil.adapter import load_adapter
from vigil.errors import VigilError, run_reporting_errors
from vigil.eval.episodes import EmbeddingPool, load_pool
from vigil.eval.fewshot import read_split
from vigil.paths import repo_path


def pair_embeddings(path: Path, degraded: bool, detections_cache: Path | None) -> dict[str, np.ndarray]:
    """``first``, ``second`` (P, D), ``same`` (P,), ``fold`` (P,): from ``path`` when it exists, else embedded now."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    from vigil.eval.face_source import build_recognizer
    from vigil.eval.lfw import embed_lfw_default_detector

    recognizer = build_recognizer(None, flip_average=True, refine_landmarks=True)
    embedded = embed_lfw_default_detector(recognizer, degraded, detections_cache)
    out: dict[str, Any] = {
        "first": embedded.first,
        "second": embedded.second,
        "same": np.array([p.same for p in embedded.pairs]),
        "fold": np.array([p.fold for p in embedded.pairs]),
        "model": np.array(recognizer.label),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def pool_pairs(pool: EmbeddingPool, seed: int = 0, folds: int = 10) -> dict[str, np.ndarray]:
    """Clean-photo verification pairs of a pool: every same-person pair, then as many different-person pairs drawn
    at random; ``fold`` is the fold of the first photo's person (people dealt to ``folds`` folds at random)."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(pool.clean_found)
    names = pool.identities[rows]
    people = sorted(set(names.tolist()))
    fold_of = dict(zip(people, rng.permutation(len(people)) % folds))
    same = [(a, b) for n in people for a, b in combinations(rows[names == n].tolist(), 2)]
    if not same or len(people) < 2:
        raise VigilError(f"{pool.name}: needs two people and a person with two clean photos for verification pairs")
    different: list[tuple[int, int]] = []
    while len(different) < len(same):
        a, b = rng.choice(rows, size=2, replace=False)
        if pool.identities[a] != pool.identities[b]:
            different.append((int(a), int(b)))
    pairs = np.array(same + different)
    return {
        "first": pool.clean[pairs[:, 0]],
        "second": pool.clean[pairs[:, 1]],
        "same": np.arange(len(pairs)) < len(same),
        "fold": np.array([fold_of[str(pool.identities[a])] for a in pairs[:, 0]]),
    }


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
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", type=Path, help="LFW pair embeddings (.npz), made on the first run")
    source.add_argument("--pool", type=Path, help="instead: clean-photo pairs of an embedding cache's people")
    ap.add_argument("--split", type=Path, help="with --pool: the identity split whose --role people are paired")
    ap.add_argument("--role", default="test", choices=("test", "val"))
    ap.add_argument("--detections-cache", type=Path, default=None)
    ap.add_argument("--degraded", action="store_true", help="the degraded LFW (vigil.eval.degrade_lfw)")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    return run_reporting_errors(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.pool is not None:
        if args.split is None:
            raise VigilError("--pool needs --split (whose people are paired)")
        pool = load_pool(args.pool)
        pairs = pool_pairs(pool.restrict(pool.identity_set() & read_split(args.split, args.role)))
        variant = f"clean photo pairs of {args.pool}'s {args.role} people"
    else:
        cache = None if args.detections_cache is None else repo_path(args.detections_cache)
        pairs = pair_embeddings(repo_path(args.embeddings), args.degraded, cache)
        variant = "degraded" if args.degraded else "clean"
    rows = compare(pairs, args.adapter)
    out = repo_path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"variant": variant, "pairs": int(len(pairs["same"])), "same": int(pairs["same"].sum()), "rows": rows}
    out.write_text(json.dumps(summary, indent=1) + "\n")
    label = "LFW" if args.pool is None else "pairs"
    for r in rows:
        delta = (
            f" ({100 * r['delta_accuracy']:+.2f}, SE {100 * r['delta_accuracy_se']:.2f})"
            if "delta_accuracy" in r
            else ""
        )
        print(
            f"{r['method']:<18} {label} {100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}{delta}, "
            f"TAR@1e-3 {100 * r['tar_at_far_1e-3']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
