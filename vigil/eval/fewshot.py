"""`vigil eval fewshot`: open-set N-way K-shot identification on cached embeddings, one row per method and K.

    vigil eval fewshot --pool work/meta/cache/lfw.npz --pool work/meta/cache/celeba.npz --split work/meta/split.json \\
        [--adapter work/meta/runs/final/protonet.npz ...] [--k 1 3 5] [--episodes 500] --json OUT

Each pool (an embedding cache of ``pipelines.meta.embed_cache``) is cut to the split file's ``test`` identities
(``--role``); episodes are drawn once per pool and K (:mod:`vigil.eval.episodes`: N listed people enrolled from K
clean photos, degraded camera views of other photos of them, and of people not on the list) and every method scores
exactly the same episodes. An adapter trained on any identity it would be tested on is refused.

Methods: ``mean`` (today's watchlist: the re-normalised mean of the K photo embeddings, cosine) is always scored;
each ``--adapter`` file adds the row its ``method`` names (``protonet``, ``reptile``, ``fomaml``, ``batch_control``,
...): support and queries go through the adapter, and an adapter with test-time tuning is first fine-tuned on the
episode's support task (:func:`vigil.adapter.fine_tune_on_support`: the enrolment photos and their degraded views).

Metrics, pooled over the episodes of one pool, K and method:

* ``rank1``: share of the listed people's camera faces whose best-scoring prototype is their own (closed set);
* ``dir_far_1e-2`` / ``dir_far_1e-3``: detection-and-identification rate at a false-alarm rate: the threshold ``t``
  is the order statistic of the impostor queries' best scores that lets at most ``floor(FAR x impostors)`` of them
  through (``score > t``, the rule of :func:`vigil.eval.verification.tar_at_far`); DIR is the share of the listed
  people's faces whose best prototype is their own *and* scores above ``t``;
* 95 % intervals: percentile bootstrap over episodes (episodes resampled with replacement, thresholds recomputed);
  ``delta_*_vs_mean``: the same for the paired difference to ``mean`` on the same resampled episodes.

Writes OUT (JSON: ``setup`` and ``rows``) and OUT with ``.png`` (rank-1 and DIR at FAR 1e-3 against K).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vigil.adapter import Adapter, fine_tune_on_support, load_adapter
from vigil.embed import unit_rows
from vigil.errors import VigilError
from vigil.eval.episodes import EmbeddingPool, EpisodeArrays, EpisodeSampler, load_pool
from vigil.eval.geometry import Geometry, geometry_from_args

FARS = (1e-2, 1e-3)
MEAN = "mean"


def far_key(far: float) -> str:
    return f"dir_far_{far:.0e}".replace("e-0", "e-")


@dataclass(frozen=True)
class EpisodeScores:
    """One episode under one method: per listed person's query, whether its best prototype is its own and that
    best score; per impostor query, its best score."""

    correct: np.ndarray  # (G,) bool
    genuine_top: np.ndarray  # (G,) float
    impostor_top: np.ndarray  # (I,) float


def score_episode(arrays: EpisodeArrays, adapter: Adapter | None) -> EpisodeScores:
    """Prototypes from the support, cosine to every query; ``adapter`` None is the plain mean prototype."""
    if adapter is not None:
        adapter = fine_tune_on_support(adapter, arrays.support, arrays.support_views, arrays.support_view_found)
    embed = unit_rows if adapter is None else adapter.apply
    protos = unit_rows(embed(arrays.support).mean(axis=1))
    scores = embed(arrays.queries) @ protos.T
    best, top = scores.argmax(axis=1), scores.max(axis=1)
    genuine = arrays.labels >= 0
    return EpisodeScores(best[genuine] == arrays.labels[genuine], top[genuine], top[~genuine])


@dataclass(frozen=True)
class PooledScores:
    """Episode scores concatenated, each value tagged with its episode (for the bootstrap)."""

    correct: np.ndarray
    genuine_top: np.ndarray
    genuine_episode: np.ndarray
    impostor_top: np.ndarray  # sorted from the highest
    impostor_episode: np.ndarray
    episodes: int

    @classmethod
    def of(cls, scores: Sequence[EpisodeScores]) -> PooledScores:
        """Concatenated; impostor scores sorted from the highest (thresholds then need no sort per resample)."""

        def tag(arrays: list[np.ndarray]) -> np.ndarray:
            return np.concatenate([np.full(len(a), i) for i, a in enumerate(arrays)] or [np.zeros(0)]).astype(np.int64)

        impostor = np.concatenate([s.impostor_top for s in scores])
        order = np.argsort(-impostor, kind="stable")
        return cls(
            np.concatenate([s.correct for s in scores]).astype(bool),
            np.concatenate([s.genuine_top for s in scores]),
            tag([s.correct for s in scores]),
            impostor[order],
            tag([s.impostor_top for s in scores])[order],
            len(scores),
        )


def open_set_threshold(impostor: np.ndarray, far: float, weights: np.ndarray | None = None) -> float:
    """The threshold ``t`` that lets at most ``floor(far x total weight)`` of the impostor scores (each counted
    ``weights`` times; once by default) through ``score > t`` (the order-statistic rule; +inf with no impostor)."""
    order = np.argsort(-np.asarray(impostor, np.float64), kind="stable")
    return _threshold_sorted(np.asarray(impostor)[order], far, None if weights is None else np.asarray(weights)[order])


def _threshold_sorted(descending: np.ndarray, far: float, weights: np.ndarray | None) -> float:
    if len(descending) == 0:
        return float("inf")
    cumulative = np.cumsum(np.ones(len(descending)) if weights is None else np.asarray(weights, np.float64))
    allowed = np.floor(far * cumulative[-1] + 1e-9)
    index = int(np.searchsorted(cumulative, allowed, side="right"))
    return float(descending[min(index, len(descending) - 1)])


def rank1(p: PooledScores, episode_weights: np.ndarray | None = None) -> float:
    w = np.ones(len(p.correct)) if episode_weights is None else episode_weights[p.genuine_episode]
    return float((w * p.correct).sum() / max(w.sum(), 1e-12))


def dir_at_far(p: PooledScores, far: float, episode_weights: np.ndarray | None = None) -> tuple[float, float]:
    """(DIR, threshold) at ``far`` (module docstring)."""
    w_imp = None if episode_weights is None else episode_weights[p.impostor_episode]
    threshold = _threshold_sorted(p.impostor_top, far, w_imp)
    w = np.ones(len(p.correct)) if episode_weights is None else episode_weights[p.genuine_episode]
    hit = p.correct & (p.genuine_top > threshold)
    return float((w * hit).sum() / max(w.sum(), 1e-12)), threshold


def statistics(p: PooledScores, episode_weights: np.ndarray | None = None) -> dict[str, float]:
    out = {"rank1": rank1(p, episode_weights)}
    for far in FARS:
        out[far_key(far)] = dir_at_far(p, far, episode_weights)[0]
    return out


def bootstrap_weights(episodes: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, episodes) counts: how often each episode is drawn in each resample (with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(episodes, np.full(episodes, 1.0 / episodes), size=resamples).astype(np.float64)


def summarise(methods: dict[str, PooledScores], resamples: int, seed: int) -> dict[str, dict]:
    """Point figures, 95 % intervals and paired differences to ``mean`` for each method (same resamples)."""
    any_scores = next(iter(methods.values()))
    weights = bootstrap_weights(any_scores.episodes, resamples, seed)
    boot = {name: [statistics(p, w) for w in weights] for name, p in methods.items()}
    out = {}
    for name, p in methods.items():
        row: dict[str, float | list[float]] = {}
        for key, value in statistics(p).items():
            samples = np.array([b[key] for b in boot[name]])
            row[key] = round(value, 5)
            row[f"{key}_ci95"] = [round(float(v), 5) for v in np.percentile(samples, [2.5, 97.5])]
            if MEAN in methods and name != MEAN:
                diff = samples - np.array([b[key] for b in boot[MEAN]])
                row[f"delta_{key}_vs_mean"] = round(value - statistics(methods[MEAN])[key], 5)
                row[f"delta_{key}_vs_mean_ci95"] = [round(float(v), 5) for v in np.percentile(diff, [2.5, 97.5])]
        row[f"threshold_{far_key(FARS[-1])[4:]}"] = round(dir_at_far(p, FARS[-1])[1], 5)
        out[name] = row
    return out


def check_disjoint(adapter: Adapter, path: Path, identities: set[str]) -> None:
    """VigilError when ``adapter`` was trained on any of ``identities`` (the identities it is about to be tested on)."""
    shared = adapter.train_identities & identities
    if shared:
        raise VigilError(f"{path}: adapter trained on {len(shared)} of the test identities (e.g. {sorted(shared)[0]})")


def read_split(path: Path, role: str) -> set[str]:
    """The identities of ``role`` in a split file (``{"roles": {"train": [...], "val": [...], "test": [...]}}``)."""
    try:
        roles = json.loads(Path(path).read_text(encoding="utf-8"))["roles"]
        return {str(i) for i in roles[role]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VigilError(f"{path}: cannot read the identity split's role {role!r} ({exc.__class__.__name__})") from None


def evaluate_pool(
    pool: EmbeddingPool, adapters: dict[str, Adapter], geometry: Geometry, episodes: int, seed: int, resamples: int
) -> list[dict]:
    """One row per method for one pool and K."""
    arrays = EpisodeSampler(pool).episode_arrays(geometry, episodes, seed)
    methods: dict[str, Adapter | None] = {MEAN: None, **adapters}
    pooled = {name: PooledScores.of([score_episode(a, adapter) for a in arrays]) for name, adapter in methods.items()}
    summary = summarise(pooled, resamples, seed)
    rows = []
    for name, p in pooled.items():
        rows.append(
            {
                "pool": pool.name,
                "method": name,
                "k": geometry.k_shot,
                "n_way": geometry.n_way,
                "episodes": episodes,
                "genuine_queries": int(len(p.correct)),
                "impostor_queries": int(len(p.impostor_top)),
                "identities": len(pool.identity_set()),
                **summary[name],
            }
        )
    return rows


def run_benchmark(
    pools: list[EmbeddingPool],
    adapters: dict[str, Adapter],
    ks: Sequence[int],
    base: Geometry,
    episodes: int,
    seed: int,
    resamples: int,
) -> list[dict]:
    rows = []
    for pool in pools:
        for k in ks:
            rows.extend(evaluate_pool(pool, adapters, base.with_k_shot(k), episodes, seed, resamples))
    return rows


def plot_rows(png: Path, rows: list[dict]) -> None:
    """Per pool: rank-1 and DIR at FAR 1e-3 against K, one line per method with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    pools = list(dict.fromkeys(r["pool"] for r in rows))
    figure = Figure(figsize=(10, 3.6 * len(pools)), dpi=100)
    axes = np.atleast_2d(figure.subplots(len(pools), 2))
    metrics = ("rank1", far_key(FARS[-1]))
    for pool, ax_row in zip(pools, axes):
        for ax, metric in zip(ax_row, metrics):
            for method in dict.fromkeys(r["method"] for r in rows):
                line = sorted((r for r in rows if r["pool"] == pool and r["method"] == method), key=lambda r: r["k"])
                ks = np.array([r["k"] for r in line])
                values = np.array([100 * r[metric] for r in line])
                ci = np.array(
                    [
                        [100 * r[metric] - 100 * r[f"{metric}_ci95"][0], 100 * r[f"{metric}_ci95"][1] - 100 * r[metric]]
                        for r in line
                    ]
                ).T
                ax.errorbar(ks, values, yerr=ci, marker="o", capsize=3, label=method)
            ax.set_title(f"{pool}: {metric}", fontsize=9)
            ax.set_xlabel("K (clean photos per person)")
            ax.set_ylabel("%")
            ax.grid(True, alpha=0.3)
        ax_row[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(str(png))


def run_cli(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)  # test-time tuning runs on tiny matrices: more threads only fight over the cores
    started = time.monotonic()
    identities = read_split(args.split, args.role)
    pools = []
    for path in args.pool:
        pool = load_pool(path, args.min_face_px)
        pool = pool.restrict(pool.identity_set() & identities)
        if not len(pool.files):
            raise VigilError(f"{path}: none of its identities has the role {args.role!r} in {args.split}")
        pools.append(pool)
    tested = set().union(*(p.identity_set() for p in pools))
    adapters: dict[str, Adapter] = {}
    for path in args.adapter or []:
        adapter = load_adapter(path)
        check_disjoint(adapter, path, tested)
        if adapter.method in adapters or adapter.method == MEAN:
            raise VigilError(f"{path}: a second adapter for the method {adapter.method!r}")
        adapters[adapter.method] = adapter
    base = geometry_from_args(args, k_shot=1)
    rows = run_benchmark(pools, adapters, args.k, base, args.episodes, args.seed, args.resamples)
    setup = {
        "pools": [str(p) for p in args.pool],
        "split": str(args.split),
        "role": args.role,
        "adapters": {m: str(p) for m, p in zip(adapters, args.adapter or [])},
        "geometry": asdict(base) | {"k": list(args.k)},
        "episodes": args.episodes,
        "seed": args.seed,
        "bootstrap_resamples": args.resamples,
        "min_face_px": args.min_face_px,
        "seconds": round(time.monotonic() - started, 1),
    }
    write_fewshot_report(Path(args.json), setup, rows)
    for r in rows:
        print(
            f"{r['pool']:>8} K={r['k']} {r['method']:<16} rank-1 {100 * r['rank1']:5.1f} "
            f"DIR@1e-2 {100 * r['dir_far_1e-2']:5.1f} DIR@1e-3 {100 * r['dir_far_1e-3']:5.1f} "
            f"[{100 * r['dir_far_1e-3_ci95'][0]:.1f}, {100 * r['dir_far_1e-3_ci95'][1]:.1f}]"
        )
    return 0


def write_fewshot_report(path: Path, setup: dict, rows: list[dict]) -> None:
    png = path.with_suffix(".png")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"setup": setup | {"plot": str(png)}, "rows": rows}, indent=1) + "\n", encoding="utf-8"
        )
        plot_rows(png, rows)
    except OSError as exc:
        raise VigilError(f"{path}: cannot write the report ({exc.strerror or exc.__class__.__name__})") from None
