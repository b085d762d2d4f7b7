"""Meta-train the embedding adapter (``vigil.adapter``) on cached embeddings of the training identities.

Four ways to train the same adapter on the same data (clean photos and degraded views of the split's ``train``
identities, ``pipelines.meta.splits``), with the same budget, optimiser (AdamW, linear warm-up then cosine decay),
weight decay (on the residual, i.e. toward the identity map) and early stopping on the ``val`` identities:

* ``protonet``: each step is one open-set episode (``vigil.eval.episodes``; ``TrainConfig.episode``, the benchmark's
  ``Geometry`` and flags, with K drawn from 1..``--k-max``): the prototypical loss of its queries (degraded views of
  other photos of the listed people, and impostors, whose target is an "unknown" class at a learnt cosine) against
  the prototypes of the clean support;
* ``reptile``: a copy of the adapter takes ``inner_steps`` SGD steps on the episode's closed-set task (prototypes from
  the clean support, every degraded view of the episode's listed people as queries); the adapter moves toward it
  (``pipelines.meta.updates``). At test time it takes the same steps on the support task
  (``vigil.adapter.fine_tune_on_support``: the K photos and their degraded views, all a site has);
* ``fomaml``: first-order MAML: the copy adapts on the support task (as at test time), the open-set query loss is
  taken at the adapted parameters and its gradient applied to the adapter;
* ``batch_control``: ordinary mini-batches of the same embeddings with a cosine classifier over the training
  identities (weights imprinted from each identity's mean clean embedding). It tells whether the episodes, not the
  extra parameters, do the work.

The budget counts adapter row-passes (embeddings through the adapter with a gradient, inner steps included), so a
Reptile step, which runs ``inner_steps`` passes over its episode, costs that many. Validation (every
``eval_every`` rows): DIR at FAR 1e-2 at K=1 on fixed 20-way episodes of the ``val`` identities, scored exactly as
``vigil eval fewshot`` does (test-time tuning included); the best checkpoint is kept and training stops after
``patience`` evaluations without a gain.

``--method all`` trains the four and also writes the plain fine-tuning rows: ``mean_ft`` (the identity adapter with
the same test-time tuning as reptile/fomaml) and ``batch_control_ft`` (the control's adapter with it).

    python -m pipelines.meta.train --pool work/meta/cache/celeba.npz --split work/meta/split.json --method all \\
        --out work/meta/runs/r1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from vigil.adapter import (
    DEFAULT_SCALE,
    Adapter,
    SupportTuning,
    init_params,
    prototypical_loss,
    save_adapter,
    support_loss,
    to_numpy,
    to_torch,
)
from vigil.embed import unit_rows
from vigil.errors import VigilError, run_reporting_errors
from vigil.eval.episodes import EmbeddingPool, EpisodeArrays, EpisodeSampler, episode_arrays, load_pool
from vigil.eval.fewshot import PooledScores, dir_at_far, read_split, score_episode
from vigil.eval.geometry import Geometry, add_geometry_arguments, geometry_from_args

METHODS = ("protonet", "reptile", "fomaml", "batch_control")
PLAIN_FINE_TUNE = {"mean_ft": None, "batch_control_ft": "batch_control"}  # row -> adapter it tunes (None: identity)


# The training episodes: the benchmark's watchlist (vigil.eval.geometry) with fewer impostors per episode (each
# step is one episode: 20 strangers keep a step cheap); ``k_shot`` is the largest K a step draws (--k-max).
TRAIN_GEOMETRY = Geometry(k_shot=5, impostor_identities=20)
# Validation scores K = 1 episodes with the benchmark's number of impostors (vigil eval fewshot's default).
VAL_IMPOSTOR_IDENTITIES = Geometry().impostor_identities


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run; ``episode`` is the training episodes' geometry, ``episode.k_shot``
    the largest K a step draws (each step draws K uniformly from 1..``episode.k_shot``)."""

    kind: str = "linear"
    hidden: int = 256
    budget_rows: int = 1_500_000
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    episode: Geometry = TRAIN_GEOMETRY
    inner_steps: int = 5
    inner_lr: float = 0.5
    inner_scale: float = DEFAULT_SCALE
    batch_size: int = 200
    eval_every_rows: int = 75_000
    patience: int = 6
    val_episodes: int = 200
    val_far: float = 1e-2
    seed: int = 0


@dataclass
class OuterState:
    """What the outer optimiser updates: the adapter and the method's extras (temperature, unknown, classifier)."""

    params: dict
    extras: dict
    optimiser: Any

    def gradients(self, loss: Any) -> dict:
        """d loss / d every tensor the outer optimiser updates (adapter and extras), by name."""
        import torch

        leaves = {**self.params, **self.extras}
        return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))

    def step(self, grads: dict) -> None:
        for name, tensor in {**self.params, **self.extras}.items():
            if name in grads:
                tensor.grad = grads[name]
        self.optimiser.step()
        self.optimiser.zero_grad(set_to_none=True)


def lr_factor(rows: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_fraction`` of the budget, then cosine decay to 0 at its end."""
    warm = max(1.0, cfg.warmup_fraction * cfg.budget_rows)
    if rows < warm:
        return (rows + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (rows - warm) / max(1.0, cfg.budget_rows - warm))))


def make_state(method: str, dim: int, cfg: TrainConfig, train: EmbeddingPool) -> OuterState:
    import torch

    params = to_torch(init_params(dim, cfg.kind, cfg.hidden, cfg.seed))
    extras = {"log_scale": torch.tensor(math.log(cfg.inner_scale), requires_grad=True)}
    if method in ("protonet", "fomaml"):
        extras["unknown"] = torch.tensor(0.7, requires_grad=True)
    if method == "batch_control":
        extras["classes"] = torch.tensor(class_means(train)[1], requires_grad=True)
    if method == "reptile":
        extras = {}
    groups = [{"params": list(params.values()), "weight_decay": cfg.weight_decay}]
    if extras:
        groups.append({"params": list(extras.values()), "weight_decay": 0.0})
    return OuterState(params, extras, torch.optim.AdamW(groups, lr=cfg.lr))


def class_means(pool: EmbeddingPool) -> tuple[list[str], np.ndarray]:
    names = sorted(pool.identity_set())
    means = np.stack([pool.clean[(pool.identities == n) & pool.clean_found].mean(axis=0) for n in names])
    return names, unit_rows(means)


def episode_tensors(a: EpisodeArrays):
    import torch

    return torch.as_tensor(a.support), torch.as_tensor(a.queries), torch.as_tensor(a.labels)


def task_views(a: EpisodeArrays):
    """Reptile's inner task: every degraded view of the listed people in the episode (support photos' and queries)."""
    import torch

    from vigil.adapter import support_task

    s, q, y = support_task(a.support, a.support_views, a.support_view_found)
    listed = a.labels >= 0
    return s, torch.cat([q, torch.as_tensor(a.queries[listed])]), torch.cat([y, torch.as_tensor(a.labels[listed])])


def task_rows(support_shape: tuple[int, ...], queries: int) -> int:
    """Adapter row-passes of one pass over a task: every support embedding (N, K, ...) and every query."""
    return int(support_shape[0] * support_shape[1] + queries)


def protonet_grads(state: OuterState, a: EpisodeArrays, cfg: TrainConfig) -> tuple[dict, int, float]:
    s, q, y = episode_tensors(a)
    loss = prototypical_loss(state.params, s, q, y, state.extras["log_scale"].exp(), state.extras["unknown"])
    return state.gradients(loss), task_rows(s.shape, len(q)), float(loss.detach())


def reptile_grads(state: OuterState, a: EpisodeArrays, cfg: TrainConfig) -> tuple[dict, int, float]:
    from pipelines.meta.updates import reptile_direction
    from vigil.adapter import inner_adapt

    s, q, y = task_views(a)
    adapted = inner_adapt(
        state.params, lambda p: prototypical_loss(p, s, q, y, cfg.inner_scale), cfg.inner_steps, cfg.inner_lr
    )
    loss = float(prototypical_loss(adapted, s, q, y, cfg.inner_scale).detach())
    rows = cfg.inner_steps * task_rows(s.shape, len(q))
    return reptile_direction(state.params, adapted), rows, loss


def fomaml_grads(state: OuterState, a: EpisodeArrays, cfg: TrainConfig) -> tuple[dict, int, float]:
    from pipelines.meta.updates import first_order_meta_gradient

    s, q, y = episode_tensors(a)
    grads, _, loss = first_order_meta_gradient(
        state.params,
        support_loss(a.support, a.support_views, a.support_view_found, cfg.inner_scale),  # as test-time tuning
        lambda p: prototypical_loss(p, s, q, y, state.extras["log_scale"].exp(), state.extras["unknown"]),
        cfg.inner_steps,
        cfg.inner_lr,
        also=state.extras,
    )
    support_rows = task_rows(a.support.shape, int(a.support_view_found.sum()))
    return grads, cfg.inner_steps * support_rows + task_rows(s.shape, len(q)), loss


class BatchTable:
    """Every training embedding (clean and found degraded views) with its identity, for ordinary mini-batches."""

    def __init__(self, pool: EmbeddingPool) -> None:
        names = class_means(pool)[0]
        index = {n: i for i, n in enumerate(names)}
        labels = np.array([index[n] for n in pool.identities])
        found = [pool.clean_found] + list(pool.view_found & pool.clean_found[None, :])
        vectors = [pool.clean] + list(pool.views)
        self.x = np.concatenate([v[f] for v, f in zip(vectors, found)]).astype(np.float32)
        self.y = np.concatenate([labels[f] for f in found])

    def batch(self, rng: np.random.Generator, size: int):
        import torch

        rows = rng.choice(len(self.y), size=size, replace=False)
        return torch.as_tensor(self.x[rows]), torch.as_tensor(self.y[rows])


def batch_grads(
    state: OuterState, table: BatchTable, rng: np.random.Generator, cfg: TrainConfig
) -> tuple[dict, int, float]:
    import torch.nn.functional as F

    from vigil.adapter import forward

    x, y = table.batch(rng, cfg.batch_size)
    logits = state.extras["log_scale"].exp() * forward(state.params, x) @ F.normalize(state.extras["classes"], dim=1).T
    loss = F.cross_entropy(logits, y)
    return state.gradients(loss), len(y), float(loss.detach())


def as_adapter(method: str, params: dict, cfg: TrainConfig, train_ids: frozenset[str], meta: dict) -> Adapter:
    tta = SupportTuning(cfg.inner_steps, cfg.inner_lr) if method in ("reptile", "fomaml") else None
    return Adapter(to_numpy(params), method, cfg.inner_scale, tta, train_ids, meta)


def validate(adapter: Adapter, val_arrays: list[EpisodeArrays], far: float) -> float:
    return dir_at_far(PooledScores.of([score_episode(a, adapter) for a in val_arrays]), far)[0]


def val_geometry(episode: Geometry, eligible: int) -> Geometry:
    """Validation's episodes: the training geometry at K = 1 with the benchmark's impostors, and at most
    ``eligible - 2`` people listed (some of the ``eligible`` val identities are left to be impostors)."""
    return replace(
        episode, n_way=min(episode.n_way, eligible - 2), k_shot=1, impostor_identities=VAL_IMPOSTOR_IDENTITIES
    )


def val_episodes(val: EmbeddingPool, cfg: TrainConfig) -> list[EpisodeArrays]:
    sampler = EpisodeSampler(val)
    geometry = val_geometry(cfg.episode, len(sampler.eligible(1)))
    return sampler.episode_arrays(geometry, cfg.val_episodes, seed=1000 + cfg.seed)


EPISODIC_GRADS = {"protonet": protonet_grads, "reptile": reptile_grads, "fomaml": fomaml_grads}


def one_step(
    method: str,
    state: OuterState,
    sampler: EpisodeSampler,
    table: BatchTable | None,
    rng: np.random.Generator,
    cfg: TrainConfig,
) -> tuple[dict, int, float]:
    """(gradients, rows used, loss) of one training step: one episode (:func:`training_episode`), or one
    mini-batch."""
    if table is not None:
        return batch_grads(state, table, rng, cfg)
    return EPISODIC_GRADS[method](state, training_episode(sampler, cfg.episode, rng), cfg)


def training_episode(sampler: EpisodeSampler, episode: Geometry, rng: np.random.Generator) -> EpisodeArrays:
    """One training step's episode: ``episode`` with K drawn uniformly from 1..``episode.k_shot``."""
    k = int(rng.integers(1, episode.k_shot + 1))
    return episode_arrays(sampler.pool, sampler.sample(episode.with_k_shot(k), rng))


@dataclass
class Progress:
    """Validation bookkeeping: the best adapter so far, evaluations since it, the curves."""

    best: Adapter
    best_score: float
    since_best: int = 0
    next_eval: int = 0
    val: list = field(default_factory=list)
    loss: list = field(default_factory=list)

    def record(self, rows: int, candidate: Adapter, score: float, losses: list[float]) -> None:
        self.val.append((rows, round(score, 5)))
        self.loss.append((rows, round(float(np.mean(losses)), 5)))
        if score > self.best_score:
            self.best, self.best_score, self.since_best = candidate, score, 0
        else:
            self.since_best += 1


def train_method(
    method: str,
    train: EmbeddingPool,
    val_arrays: list[EpisodeArrays],
    cfg: TrainConfig,
    log: Callable[[str], None] = print,
) -> tuple[Adapter, dict]:
    """Train one method within the budget; (best adapter on validation, history)."""
    import torch

    torch.set_num_threads(1)  # tiny matrices: threads only fight over the shared cores
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, METHODS.index(method)])
    state = make_state(method, train.dim, cfg, train)
    sampler, table = EpisodeSampler(train), BatchTable(train) if method == "batch_control" else None
    train_ids = frozenset(train.identity_set())
    start = as_adapter(method, state.params, cfg, train_ids, {})
    progress = Progress(start, validate(start, val_arrays, cfg.val_far), next_eval=cfg.eval_every_rows)
    progress.val.append((0, round(progress.best_score, 5)))
    rows, t0 = 0, time.monotonic()
    losses: list[float] = []
    while rows < cfg.budget_rows and progress.since_best < cfg.patience:
        grads, used, loss = one_step(method, state, sampler, table, rng, cfg)
        for group in state.optimiser.param_groups:
            group["lr"] = cfg.lr * lr_factor(rows, cfg)
        state.step(grads)
        rows, losses = rows + used, losses + [loss]
        if rows >= progress.next_eval or rows >= cfg.budget_rows:
            progress.next_eval += cfg.eval_every_rows
            candidate = as_adapter(method, state.params, cfg, train_ids, {})
            progress.record(rows, candidate, validate(candidate, val_arrays, cfg.val_far), losses)
            losses = []
            log(
                f"  {method}: {rows} rows, loss {progress.loss[-1][1]:.4f}, val DIR@{cfg.val_far:g} "
                f"{progress.val[-1][1]:.4f} (start {progress.val[0][1]:.4f}, best {progress.best_score:.4f}), "
                f"{time.monotonic() - t0:.0f} s"
            )
    extras = {k: float(v.detach()) for k, v in state.extras.items() if v.ndim == 0}
    history = {
        "val": progress.val,
        "loss": progress.loss,
        "rows": rows,
        "seconds": round(time.monotonic() - t0, 1),
        "best_val": progress.best_score,
        "extras": extras,
    }
    return progress.best, history


def plain_fine_tune(row: str, base: Adapter | None, dim: int, cfg: TrainConfig) -> Adapter:
    """The plain test-time fine-tuning rows: ``base`` (or the identity) with reptile/fomaml's test-time tuning."""
    params = init_params(dim, cfg.kind, cfg.hidden, cfg.seed) if base is None else base.params
    ids = frozenset() if base is None else base.train_identities
    return Adapter(params, row, cfg.inner_scale, SupportTuning(cfg.inner_steps, cfg.inner_lr), ids, {})


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=Path, required=True, help="embedding cache holding the train and val identities")
    ap.add_argument("--split", type=Path, required=True)
    ap.add_argument(
        "--method", default="all", help=f"all, or a comma-separated list of {', '.join(METHODS)} (trained in turn)"
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--tune-tta", help="STEPS:LR,...: only score the identity adapter with each test-time tuning on val"
    )
    add_config_arguments(ap, TrainConfig())
    args = ap.parse_args(argv)
    args.command = "python -m pipelines.meta.train " + " ".join(sys.argv[1:] if argv is None else argv)
    return run_reporting_errors(lambda: _train(args))


def parse_methods(text: str) -> tuple[str, ...]:
    """``all`` or a comma-separated list of :data:`METHODS` (order kept, repeats dropped)."""
    if text == "all":
        return METHODS
    methods = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise VigilError(f"--method: expected 'all' or a comma-separated list of {', '.join(METHODS)}, got {text!r}")
    return methods


def add_config_arguments(ap: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """A flag per :class:`TrainConfig` field (``--lr``, ...); the episode geometry's flags are the benchmark's
    (:func:`vigil.eval.geometry.add_geometry_arguments`) plus ``--k-max``, its ``k_shot``."""
    for f in fields(TrainConfig):
        if f.name != "episode":
            default = getattr(defaults, f.name)
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(default), default=default)
    add_geometry_arguments(ap, defaults.episode)
    ap.add_argument("--k-max", type=int, default=defaults.episode.k_shot, help="training episodes draw K from 1..this")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of the flags of :func:`add_config_arguments`."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "episode"}
    return TrainConfig(**given, episode=geometry_from_args(args, k_shot=args.k_max))


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    pool = load_pool(args.pool)
    train_ids, val_ids = read_split(args.split, "train"), read_split(args.split, "val")
    if train_ids & (read_split(args.split, "test") | val_ids):
        raise VigilError(f"{args.split}: the train role shares identities with val or test")
    train, val = pool.restrict(train_ids), pool.restrict(val_ids)
    if not len(train.files) or not len(val.files):
        raise VigilError(f"{args.pool}: holds no train or no val identities of {args.split}")
    val_arrays = val_episodes(val, cfg)
    if args.tune_tta:
        return _tune_tta(args.tune_tta, val_arrays, pool.dim, cfg)
    methods = parse_methods(args.method)
    out = Path(args.out)
    trained: dict[str, Adapter] = {}
    for method in methods:
        adapter, history = train_method(method, train, val_arrays, cfg)
        meta = {
            "command": args.command,
            "config": asdict(cfg),
            "history": history,
            "pool": str(args.pool),
            "split": str(args.split),
        }
        trained[method] = replace(adapter, meta=meta)
        save_adapter(out / f"{method}.npz", trained[method])
        (out / f"{method}.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(
            f"{method}: best val DIR@{cfg.val_far:g} {history['best_val']:.4f} after {history['rows']} rows, "
            f"{history['seconds']} s"
        )
    for row, base in PLAIN_FINE_TUNE.items():
        if base is None or base in trained:  # the identity's row is written by every run, the control's with it
            adapter = plain_fine_tune(row, trained[base] if base else None, pool.dim, cfg)
            save_adapter(
                out / f"{row}.npz",
                replace(adapter, meta={"command": args.command, "config": asdict(cfg), "base": base}),
            )
    return 0


def _tune_tta(grid: str, val_arrays: list[EpisodeArrays], dim: int, cfg: TrainConfig) -> int:
    """Plain test-time fine-tuning of the identity adapter on the val episodes, for each ``steps:lr`` of ``grid``."""
    import torch

    torch.set_num_threads(1)
    plain = validate(Adapter(init_params(dim), "mean"), val_arrays, cfg.val_far)
    print(f"identity, no tuning: val DIR@{cfg.val_far:g} {plain:.4f}")
    for item in grid.split(","):
        steps, lr = item.split(":")
        tuned = replace(cfg, inner_steps=int(steps), inner_lr=float(lr))
        score = validate(plain_fine_tune("mean_ft", None, dim, tuned), val_arrays, cfg.val_far)
        print(f"steps {steps} lr {lr}: val DIR@{cfg.val_far:g} {score:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
