"""Transfer learning of the dlib face ResNet to CCTV faces: four regimes with the same budget and seed.

    python -m pipelines.recognizer.finetune --config pipelines/recognizer/config/finetune.yaml \
        --regime a_frozen [--epochs N] [--max-steps N] [--time-budget-s S] [--device auto] [--resume]

Regimes (``regimes:`` in the YAML):

* ``a_frozen``      frozen backbone + a residual 128->128 projection (initialised to identity) + head;
* ``b_last_stages`` level1 + level0 (+ fc) unfrozen + projection;
* ``c_full``        everything trainable, backbone at ``backbone_lr_mult`` x the learning rate;
* ``d_lora``        backbone frozen, LoRA (low-rank residual convs, merged at export) on the stages' convs + projection.

Loss per batch (train identities of the CelebA chips, each sample degraded by ``degrade.Degrader``):
``margin_weight * margin-CE(head(e_deg), y) + consistency_weight * (1 - cos(e_clean, src_clean))
+ distill_weight * (1 - cos(e_deg, src_clean))
+ relational_weight * mean_{i != j} (cos(e_deg_i, e_deg_j) - cos(src_clean_i, src_clean_j))^2
+ mixed_relational_weight * mean_{i != j} (cos(e_deg_i, e_clean_j) - cos(src_clean_i, src_clean_j))^2``
where ``e_*`` are the fine-tuned embeddings of the degraded / clean view and ``src_clean`` is the frozen source
model's embedding of the clean view (the anti-forgetting term); the relational term keeps the batch's pairwise
similarities (mostly impostor pairs) where the source model puts them on clean faces. AdamW, linear warm-up then
cosine decay.

Validation (each epoch, on the VALIDATION identities only; never LFW): embeddings of the clean chips and of one
fixed, seeded degraded view of each chip; all pairs among them: ``clean`` (clean vs clean), ``degraded`` (degraded
vs degraded) and ``mixed`` (clean gallery vs degraded probe), each with ROC AUC, balanced accuracy at the best
threshold and TAR at FAR 1e-3. Early stopping and the best checkpoint follow ``select_metric``.

Outputs in ``<out>/<regime>/``: ``last.pt`` (resume), ``best.pt`` (plain DlibResNet state_dict with LoRA merged
and projection folded into fc), ``metrics.json`` (per-epoch history) and ``model.onnx`` (R1's ``export_onnx``
contract: ``chips`` uint8 [N,150,150,3] BGR -> ``embeddings`` [N,128] unit norm).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from vigil.errors import VigilError, run_reporting_errors
from vigil.paths import repo_path

REGIME_NAMES = ("a_frozen", "b_last_stages", "c_full", "d_lora")
SELECT_METRICS = (
    "degraded_auc",
    "degraded_tar_at_far_1e-3",
    "degraded_balanced_accuracy",
    "mixed_auc",
    "mixed_tar_at_far_1e-3",
    "clean_auc",
)  # mixed: clean view of one chip against the degraded view of another (the watchlist case)


# ------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class RegimeConfig:
    """What is trained: ``trainable`` = backbone module prefixes ("stages.3", "fc", "all"); LoRA when rank > 0."""

    trainable: tuple[str, ...] = ()
    backbone_lr_mult: float = 1.0
    lora_rank: int = 0
    lora_alpha: float = 8.0
    lora_targets: tuple[str, ...] = ("stages.",)
    projection: bool = True


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    max_steps: int | None = None
    time_budget_s: float | None = None
    batch_size: int = 128
    lr: float = 1e-3
    head_lr: float = 1e-2
    weight_decay: float = 5e-2
    warmup_steps: int = 50
    head_warmup_steps: int = 0  # only the margin head learns for this many first steps (the rest waits)
    min_lr_frac: float = 0.01
    grad_clip: float = 5.0
    patience: int = 5
    select_metric: str = "degraded_auc"
    clean_guard: float | None = 0.003  # best epoch needs clean_auc >= source's - clean_guard (None: no guard)
    num_workers: int = 4
    amp: bool = True  # bf16 autocast on CUDA only
    cache_views: int = 0  # regime a on CPU: precompute this many degraded views' frozen embeddings per chip
    p_scene_view: float = 0.5  # with data.scene_views: share of samples whose degraded view is a scene view


@dataclass(frozen=True)
class LossConfig:
    head: str = "arcface"
    margin_weight: float = 1.0  # 0: no identity loss at all (pure distillation towards the source; the head is unused)
    scale: float = 32.0
    margin: float = 0.3
    consistency_weight: float = 1.0
    distill_weight: float = 0.0
    relational_weight: float = 0.0
    mixed_relational_weight: float = (
        0.0  # the same between degraded and clean views (clean reference vs degraded probe)
    )
    head_init: str = "centroids"  # or "random"


@dataclass(frozen=True)
class DataConfig:
    chips: tuple[str, ...] = ("work/recognizer/celeba_chips", "work/carry/recchips")  # first that exists
    source_weights: tuple[str, ...] = ("work/recognizer/dlib_resnet_v1.pt", "work/carry/recsrc/dlib_resnet_v1.pt")
    source_onnx: str | None = "work/recognizer/dlib-resnet-v1-fp32.onnx"  # CPU only: frozen embeddings via onnxruntime
    val_seed: int = 1234
    val_max_chips: int | None = None
    scene_views: tuple[str, ...] = ()  # folders from pipelines.recognizer.scene_views (views concatenated; see prepare)


@dataclass(frozen=True)
class FinetuneConfig:
    seed: int = 0
    out: str = "work/recognizer/regimes"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    degrade: dict = field(default_factory=dict)
    val_degrade: dict = field(default_factory=lambda: {"p_clean": 0.0, "p_flip": 0.0})
    regimes: dict = field(default_factory=dict)

    def regime(self, name: str) -> RegimeConfig:
        if name not in self.regimes:
            raise VigilError(f"config: regime {name!r} not in regimes ({sorted(self.regimes)})")
        return self.regimes[name]


def _build(cls, values: dict | None, where: str):
    """Dataclass ``cls`` from a mapping; unknown keys -> VigilError naming ``where.key``; lists -> tuples, and a
    single string for a list field (``scene_views: work/x``) -> a one-item tuple, not a tuple of characters."""
    values = dict(values or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise VigilError(f"{where}: unknown key(s) {unknown}")
    return cls(**{k: _as_field_value(v, known[k]) for k, v in values.items()})


def _as_field_value(value, field):
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, str) and isinstance(field.default, tuple):
        return (value,)
    return value


def _read_mapping(path: Path) -> dict:
    """YAML (or JSON, for machines without pyyaml: ``--write-json``) -> dict; VigilError on a bad file."""
    if not path.is_file():
        raise VigilError(f"{path}: config not found")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise VigilError(f"{path}: not valid JSON ({exc})") from None
    import yaml

    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise VigilError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise VigilError(f"{path}: expected a mapping at the top level")
    return raw


def load_config(path: Path, overrides: dict | None = None) -> FinetuneConfig:
    """Read the YAML; ``overrides`` = {"train": {...}, ...} from the command line win over the file."""
    raw = _read_mapping(Path(path))
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    unknown = sorted(set(raw) - {f.name for f in fields(FinetuneConfig)})
    if unknown:
        raise VigilError(f"{path}: unknown key(s) {unknown}")
    from pipelines.recognizer.degrade import DegradeConfig

    for key in ("degrade", "val_degrade"):
        try:
            DegradeConfig.from_dict(raw.get(key))
        except (ValueError, TypeError) as exc:
            raise VigilError(f"{path}: {key}: {exc}") from None
    regimes = {
        name: _build(RegimeConfig, spec, f"{path}: regimes.{name}") for name, spec in (raw.get("regimes") or {}).items()
    }
    cfg = FinetuneConfig(
        seed=int(raw.get("seed", 0)),
        out=str(raw.get("out", FinetuneConfig.out)),
        data=_build(DataConfig, raw.get("data"), f"{path}: data"),
        train=_build(TrainConfig, raw.get("train"), f"{path}: train"),
        loss=_build(LossConfig, raw.get("loss"), f"{path}: loss"),
        degrade=dict(raw.get("degrade") or {}),
        val_degrade=dict(raw.get("val_degrade") or {"p_clean": 0.0, "p_flip": 0.0}),
        regimes=regimes,
    )
    if cfg.train.select_metric not in SELECT_METRICS:
        raise VigilError(f"{path}: train.select_metric must be one of {SELECT_METRICS}")
    if not 0.0 <= cfg.train.p_scene_view <= 1.0:
        raise VigilError(f"{path}: train.p_scene_view must be in [0, 1], got {cfg.train.p_scene_view}")
    return cfg


# -------------------------------------------------------------------------------------------- model


def _torch():
    import torch

    return torch


def make_projection(dim: int = 128):
    """Residual projection ``y = x + D x`` (D starts at zero, so it starts as the identity; decays towards it)."""
    torch = _torch()

    module: Any = torch.nn.Module  # torch is imported lazily, so the base class is a runtime value

    class ResidualProjection(module):
        def __init__(self) -> None:
            super().__init__()
            self.delta = torch.nn.Linear(dim, dim, bias=False)
            torch.nn.init.zeros_(self.delta.weight)

        def forward(self, x):
            return x + self.delta(x)

        def matrix(self):
            return torch.eye(dim, device=self.delta.weight.device) + self.delta.weight

    return ResidualProjection()


def build_model(backbone, regime: RegimeConfig):
    """(model, head-free) nn.Module ``backbone -> projection`` set up for ``regime``: LoRA added, grads set.

    ``backbone`` is a DlibResNet (or a stand-in with ``stem``, ``stages``, ``pool``, ``fc`` and the same forward).
    The model's ``forward`` takes float NCHW RGB 0..255 and returns the raw (unnormalised) embedding.
    """
    torch = _torch()
    from pipelines.recognizer.lora import add_lora

    module: Any = torch.nn.Module  # torch is imported lazily, so the base class is a runtime value

    class FineTuneModel(module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.projection = make_projection(backbone.fc.out_features) if regime.projection else torch.nn.Identity()

        def trunk_frozen(self) -> bool:
            return not any(p.requires_grad for p in self.backbone.parameters())

        def forward(self, x):
            if self.trunk_frozen():
                with torch.no_grad():
                    d = self.backbone(x)
                return self.projection(d.float())
            return self.projection(self.backbone(x).float())

        def to_plain(self):
            """A copy of the backbone alone with LoRA merged and the projection folded into fc."""
            from pipelines.recognizer.lora import merge_lora

            plain = copy.deepcopy(self.backbone).float()
            merge_lora(plain)
            if isinstance(self.projection, torch.nn.Identity):
                return plain.eval()
            with torch.no_grad():
                plain.fc.weight.copy_(self.projection.matrix().float() @ plain.fc.weight)
            return plain.eval()

    for p in backbone.parameters():
        p.requires_grad_(False)
    if regime.lora_rank > 0:
        add_lora(backbone, regime.lora_rank, regime.lora_alpha, lambda name: name.startswith(regime.lora_targets))
    for name, p in backbone.named_parameters():
        if (
            ".down." in name
            or ".up." in name
            or "all" in regime.trainable
            or any(name.startswith(prefix + ".") for prefix in regime.trainable)
        ):
            p.requires_grad_(True)
    return FineTuneModel()


def param_groups(model, head, regime: RegimeConfig, train: TrainConfig) -> list[dict]:
    """AdamW groups: head, new parts (projection, LoRA), pretrained backbone (x backbone_lr_mult); no decay on 1-d."""
    buckets: dict[tuple[bool, bool], list] = {(n, m): [] for n in (True, False) for m in (True, False)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            is_new = name.startswith("projection.") or ".down." in name or ".up." in name
            buckets[(is_new, p.ndim > 1)].append(p)
    new, new_1d, old, old_1d = (
        buckets[(True, True)],
        buckets[(True, False)],
        buckets[(False, True)],
        buckets[(False, False)],
    )
    groups = [
        {"params": list(head.parameters()), "lr": train.head_lr, "weight_decay": 0.0, "name": "head"},
        {"params": new, "lr": train.lr, "weight_decay": train.weight_decay, "name": "new"},
        {"params": new_1d, "lr": train.lr, "weight_decay": 0.0, "name": "new_1d"},
        {
            "params": old,
            "lr": train.lr * regime.backbone_lr_mult,
            "weight_decay": train.weight_decay,
            "name": "backbone",
        },
        {"params": old_1d, "lr": train.lr * regime.backbone_lr_mult, "weight_decay": 0.0, "name": "backbone_1d"},
    ]
    return [g for g in groups if g["params"]]


def lr_lambda(warmup_steps: int, total_steps: int, min_frac: float, hold_steps: int = 0):
    """Multiplier per step: 0 for ``hold_steps``, then linear warm-up from ~0 to 1, then cosine down to
    ``min_frac`` at ``total_steps``."""

    def f(step: int) -> float:
        if step < hold_steps:
            return 0.0
        step -= hold_steps
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


# ---------------------------------------------------------------------------------------------- data


def chips_to_input(chips_u8, device):
    """uint8 (B, H, W, 3) BGR tensor -> float32 (B, 3, H, W) RGB 0..255 on ``device`` (channels-last memory)."""
    x = chips_u8.to(device, non_blocking=True).permute(0, 3, 1, 2).flip(1).float()
    return x.contiguous(memory_format=_torch().channels_last)


@dataclass(frozen=True)
class SceneViewSource:
    """Runtime-path degraded chips of the train chips (``scene_views``): ``views`` (K, N, S, S, 3), ``found`` (K, N),
    used for a sample with probability ``p`` when the chip has a found view."""

    views: np.ndarray
    found: np.ndarray
    p: float

    def pick(self, i: int, rng: np.random.Generator) -> np.ndarray | None:
        """A found view of chip ``i`` (uniform over its found views) with probability ``p``, else None."""
        usable = np.flatnonzero(self.found[:, i])
        if len(usable) == 0 or rng.random() >= self.p:
            return None
        return self.views[int(usable[rng.integers(len(usable))]), i]


class TrainViews:
    """Map-style dataset over sample ids ``uid = epoch * N + i``: (degraded chip, clean chip, label, i, flipped).

    The degraded view of ``uid`` is a function of (seed, uid) only, so workers and resumes reproduce it: either a
    scene view (``scenes``, flipped with ``degrade.p_flip``) or ``degrader``'s view of the clean chip.
    The clean view is the chip flipped the same way as the degraded one.
    """

    def __init__(
        self, chips: np.ndarray, labels: np.ndarray, degrader, seed: int, scenes: SceneViewSource | None = None
    ) -> None:
        self.chips, self.labels, self.degrader, self.seed, self.scenes = chips, labels, degrader, seed, scenes

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, uid: int):
        i = int(uid) % len(self.chips)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, int(uid)])
        scene = None if self.scenes is None else self.scenes.pick(i, rng)  # no draw without scenes: old runs reproduce
        if scene is not None:
            flipped = bool(rng.random() < self.degrader.config.p_flip)
            degraded = scene[:, ::-1] if flipped else scene
        else:
            degraded, flipped = self.degrader.degrade_ex(self.chips[i], rng)
        clean = self.chips[i][:, ::-1] if flipped else self.chips[i]
        return np.ascontiguousarray(degraded), np.ascontiguousarray(clean), int(self.labels[i]), i, int(flipped)


def _worker_init(_worker_id: int) -> None:
    """Data workers run single-threaded (torch already sets 1 thread; cv2 was set to 0 by ``main``)."""
    import cv2

    cv2.setNumThreads(0)


class EpochBatches:
    """Batch sampler (runs in the main process): a seeded permutation per epoch, full batches, ids = epoch*N + i."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, min(batch_size, n), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self):
        order = np.random.default_rng([self.seed, 7919, self.epoch]).permutation(self.n)
        for b in range(len(self)):
            yield (self.epoch * self.n + order[b * self.batch_size : (b + 1) * self.batch_size]).tolist()


# ------------------------------------------------------------------------------------------ training


@dataclass
class StepResult:
    loss: float
    cls: float
    consistency: float
    distill: float
    relational: float
    mixed_relational: float


def relational_loss(embeddings, source):
    """Mean squared difference between the pairwise cosine similarities of ``embeddings`` (B, D) and those of the
    source model's unit embeddings ``source`` (B, D), over the B*(B-1) ordered pairs i != j.

    It keeps the fine-tuned model's similarity *structure* (above all the impostor pairs, the low-FAR tail a
    watchlist threshold lives in) where the source model had it, which the per-sample consistency term does not.
    """
    return cross_relational_loss(embeddings, embeddings, source)


def cross_relational_loss(queries, references, source):
    """Like ``relational_loss`` but between two views: cos(queries_i, references_j) against the source's
    cos(source_i, source_j), i != j. With degraded queries and clean references it holds the watchlist case (a
    degraded probe against a clean reference photo of someone else) at the source's clean impostor scores."""
    torch = _torch()
    import torch.nn.functional as F

    q = F.normalize(queries.float(), dim=1)
    r = F.normalize(references.float(), dim=1)
    s = F.normalize(source.float(), dim=1)
    off_diagonal = ~torch.eye(len(q), dtype=torch.bool, device=q.device)
    return ((q @ r.T - s @ s.T)[off_diagonal] ** 2).mean()


def train_step(
    model,
    head,
    optimizer,
    batch,
    src_table,
    loss_cfg: LossConfig,
    device,
    amp: bool = False,
    grad_clip: float = 0.0,
    scheduler=None,
    cached=None,
) -> StepResult:
    """One optimisation step. ``batch`` = (degraded u8, clean u8, labels, index, flipped) tensors;
    ``src_table`` (2, N, D) frozen source embeddings (unit norm) of the clean chips [unflipped, flipped];
    ``cached`` (B, D) frozen embeddings of the degraded views (regime a's CPU route) replaces the trunk."""
    torch = _torch()
    import torch.nn.functional as F

    degraded, clean, labels, index, flipped = batch
    labels = labels.to(device)
    src = src_table[flipped.to(src_table.device), index.to(src_table.device)].to(device)
    model.train()
    frozen = model.trunk_frozen()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp and str(device).startswith("cuda") else _null()
    with autocast:
        if frozen:  # the trunk is the source model: its clean embedding is src, only the projection runs
            if cached is not None:
                d = cached.to(device)
            else:
                with torch.no_grad():
                    d = model.backbone(chips_to_input(degraded, device))
            e_deg, e_clean = model.projection(d.float()), model.projection(src)
        elif loss_cfg.consistency_weight > 0 or loss_cfg.mixed_relational_weight > 0:  # the clean view is needed
            e = model(chips_to_input(torch.cat([degraded, clean]), device))
            e_deg, e_clean = e[: len(labels)], e[len(labels) :]
        else:
            e_deg, e_clean = model(chips_to_input(degraded, device)), None
    e_deg = e_deg.float()
    cls = F.cross_entropy(head(e_deg, labels), labels) if loss_cfg.margin_weight > 0 else e_deg.new_zeros(())
    cons = (1 - F.cosine_similarity(e_clean.float(), src, dim=1)).mean() if e_clean is not None else cls.new_zeros(())
    dist = (1 - F.cosine_similarity(e_deg, src, dim=1)).mean()
    rel = relational_loss(e_deg, src) if loss_cfg.relational_weight > 0 and len(labels) > 1 else cls.new_zeros(())
    use_mixed = loss_cfg.mixed_relational_weight > 0 and len(labels) > 1
    mixed = cross_relational_loss(e_deg, e_clean.float(), src) if use_mixed else cls.new_zeros(())
    loss = (
        loss_cfg.margin_weight * cls
        + loss_cfg.consistency_weight * cons
        + loss_cfg.distill_weight * dist
        + loss_cfg.relational_weight * rel
        + loss_cfg.mixed_relational_weight * mixed
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return StepResult(*(float(t.detach()) for t in (loss, cls, cons, dist, rel, mixed)))


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# -------------------------------------------------------------------------------------------- metrics


def pair_metrics(a: np.ndarray, b: np.ndarray, labels_a: np.ndarray, labels_b: np.ndarray, same_set: bool) -> dict:
    """ROC AUC, balanced accuracy at the best threshold, TAR at FAR 1e-3 over all pairs of unit embeddings.

    ``same_set``: a and b are the same chips (use pairs i < j); otherwise all pairs (i, j) with i != j.
    """
    scores = a @ b.T
    same = labels_a[:, None] == labels_b[None, :]
    n = len(a)
    mask = np.triu(np.ones((n, n), bool), 1) if same_set else ~np.eye(n, dtype=bool)
    s, y = scores[mask].astype(np.float64), same[mask]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return {
            "auc": float("nan"),
            "balanced_accuracy": float("nan"),
            "tar_at_far_1e-3": float("nan"),
            "pairs_pos": n_pos,
            "pairs_neg": n_neg,
        }
    order = np.argsort(-s, kind="stable")
    y_sorted = y[order]
    tp = np.cumsum(y_sorted) / n_pos
    fp = np.cumsum(~y_sorted) / n_neg
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # tie-averaged ranks, 1-based
    auc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    negatives = np.sort(s[~y])[::-1]
    k = int(np.floor(1e-3 * n_neg))
    threshold = negatives[k] if k < n_neg else -np.inf
    return {
        "auc": float(auc),
        "balanced_accuracy": float(np.max((tp + 1 - fp) / 2)),
        "tar_at_far_1e-3": float(np.mean(s[y] > threshold)),
        "pairs_pos": n_pos,
        "pairs_neg": n_neg,
    }


def validation_metrics(clean: np.ndarray, degraded: np.ndarray, labels: np.ndarray) -> dict:
    """Flat dict ``<variant>_<metric>`` for variants clean, degraded, mixed (clean gallery vs degraded probe)."""
    out = {}
    for variant, (a, b, same_set) in {
        "clean": (clean, clean, True),
        "degraded": (degraded, degraded, True),
        "mixed": (clean, degraded, False),
    }.items():
        for key, value in pair_metrics(a, b, labels, labels, same_set).items():
            out[f"{variant}_{key}"] = value
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------------------- embedders


class FrozenSource:
    """Unit embeddings of uint8 BGR chips by the frozen source model: torch on the device, or onnxruntime on CPU."""

    def __init__(self, source_model, device, onnx_path: Path | None, batch_size: int = 128) -> None:
        self.model, self.device, self.batch_size = source_model, device, batch_size
        self.session = None
        if onnx_path is not None and not str(device).startswith("cuda") and onnx_path.is_file():
            import onnxruntime as ort

            self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def embed(self, chips: np.ndarray) -> np.ndarray:
        if self.session is not None:
            return np.concatenate(
                [self.session.run(None, {"chips": chips[i : i + 64]})[0] for i in range(0, len(chips), 64)]
            )
        return embed_chips(self.model, chips, self.device, self.batch_size)


def embed_chips(model, chips: np.ndarray, device, batch_size: int = 128) -> np.ndarray:
    """Unit embeddings (N, D) float32 of uint8 BGR chips with a float-NCHW-RGB model, no grad."""
    torch = _torch()
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(chips), batch_size):
            x = chips_to_input(torch.from_numpy(np.ascontiguousarray(chips[i : i + batch_size])), device)
            out.append(model(x).float().cpu().numpy())
    return _unit(np.concatenate(out)) if out else np.zeros((0, 128), np.float32)


# ------------------------------------------------------------------------------------------- runner


def resolve_device(name: str):
    """``auto`` -> cuda when available, else cpu. TF32 matmuls/convs are allowed on CUDA."""
    torch = _torch()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VigilError(f"--device {name}: CUDA is not available")
    if name.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return torch.device(name)


def _first_existing(candidates: tuple[str, ...], what: str) -> Path:
    for c in candidates:
        p = repo_path(c)
        if p.exists():
            return p
    raise VigilError(f"{what}: none of {list(candidates)} exists")


def load_source_backbone(cfg: FinetuneConfig):
    """DlibResNet with the converted weights (``data.source_weights``, first that exists)."""
    torch = _torch()
    from pipelines.recognizer.network import DlibResNet

    path = _first_existing(cfg.data.source_weights, "data.source_weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt file
        raise VigilError(f"{path}: cannot read state_dict ({type(exc).__name__})") from None
    model = DlibResNet()
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise VigilError(f"{path}: state_dict does not fit DlibResNet ({str(exc).splitlines()[0]})") from None
    return model.eval()


@dataclass
class Prepared:
    """Everything a regime run needs that does not depend on the regime (computed once per process)."""

    train_chips: np.ndarray
    train_labels: np.ndarray
    val_clean: np.ndarray
    val_degraded: np.ndarray
    val_labels: np.ndarray
    src_table: Any  # torch (2, N, D)
    src_val_clean: np.ndarray
    src_val_degraded: np.ndarray
    num_classes: int
    chips_path: str
    timings_s: dict
    train_scenes: SceneViewSource | None = None
    val_degraded_from_scenes: int = 0  # validation chips whose degraded view is a scene view (the rest: Degrader)


def prepare(cfg: FinetuneConfig, device, log) -> Prepared:
    """Load chips, split, degrade the validation chips once, embed clean train/val chips with the source."""
    torch = _torch()
    from pipelines.recognizer.degrade import DegradeConfig, Degrader
    from pipelines.recognizer.faces_dataset import load_chip_set

    t0 = time.monotonic()
    chips_path = _first_existing(cfg.data.chips, "data.chips")
    full = load_chip_set(chips_path)
    train, val = full.subset("train"), full.subset("val")
    if cfg.data.val_max_chips is not None and len(val.chips) > cfg.data.val_max_chips:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(val.chips), cfg.data.val_max_chips, replace=False))
        val = type(val)(
            val.chips[keep], val.labels[keep], val.identities, val.split[keep], [val.files[i] for i in keep]
        )
    train_scenes, val_from_scenes = None, 0
    if cfg.data.scene_views:
        folders = [_required_path(f, "data.scene_views") for f in cfg.data.scene_views]
        train, val, train_scenes, val_scene = _with_scene_views(folders, train, val, cfg.train.p_scene_view)
    val_degraded = Degrader(DegradeConfig.from_dict(cfg.val_degrade)).degrade_batch(val.chips, cfg.data.val_seed)
    if cfg.data.scene_views:
        assert train_scenes is not None and val_scene is not None  # made above with the same condition
        val_from_scenes = int(val_scene.found[0].sum())
        val_degraded[val_scene.found[0]] = val_scene.views[0][val_scene.found[0]]
        log(
            f"scene views {cfg.data.scene_views}: train chips with a found view "
            f"{int(train_scenes.found.any(axis=0).sum())}/{len(train.chips)}, "
            f"validation degraded views from scenes {val_from_scenes}/{len(val.chips)}"
        )
    log(
        f"chips {chips_path}: train {len(train.chips)} chips / {len(train.identities)} ids, val {len(val.chips)} "
        f"chips / {len(val.identities)} ids"
    )
    t1 = time.monotonic()
    source = FrozenSource(
        load_source_backbone(cfg).to(device).to(memory_format=torch.channels_last),
        device,
        _opt_path(cfg.data.source_onnx),
    )
    src = np.stack([source.embed(train.chips), source.embed(np.ascontiguousarray(train.chips[:, :, ::-1]))])
    src_val_clean, src_val_deg = source.embed(val.chips), source.embed(val_degraded)
    t2 = time.monotonic()
    log(f"source embeddings of {2 * len(train.chips) + 2 * len(val.chips)} chips: {t2 - t1:.1f} s")
    return Prepared(
        train.chips,
        train.labels,
        val.chips,
        val_degraded,
        val.labels,
        torch.from_numpy(src).to(device),
        src_val_clean,
        src_val_deg,
        len(train.identities),
        str(chips_path),
        {"load_s": t1 - t0, "source_embed_s": t2 - t1},
        train_scenes,
        val_from_scenes,
    )


def _with_scene_views(folders: list[Path], train, val, p: float):
    """Replace both splits' clean chips by the scene-view folders' (the runtime's detector + template) and return
    (train, val, the train chips' SceneViewSource, the validation chips' SceneViews); the folders' views are
    concatenated, and validation uses the first view."""
    from dataclasses import replace

    from pipelines.recognizer import scene_views

    views = scene_views.concat_views([scene_views.load(f) for f in folders])
    tv, vv = views.take(train.files), views.take(val.files)
    train, val = replace(train, chips=tv.clean), replace(val, chips=vv.clean)
    return train, val, SceneViewSource(np.ascontiguousarray(tv.views), tv.found, p), vv


def _opt_path(p: str | None) -> Path | None:
    if not p:
        return None
    return repo_path(p)


def _required_path(p: str | None, key: str) -> Path:
    """``p`` under the repo; VigilError naming the config ``key`` when it is not set."""
    path = _opt_path(p)
    if path is None:
        raise VigilError(f"config: {key} is not set")
    return path


def cache_degraded_views(
    prep: Prepared, cfg: FinetuneConfig, views: int, source: FrozenSource, degrader, log
) -> tuple[np.ndarray, np.ndarray]:
    """(views, N, D) frozen embeddings of ``views`` degraded views per train chip (regime a, CPU route).

    View k of chip i is sample id ``k * N + i`` (the same ids as epochs' ``uid``) with its own flip; the flip
    of each view is returned in the second array so the clean target matches."""
    n = len(prep.train_chips)
    feats = np.zeros((views, n, 128), np.float32)
    flips = np.zeros((views, n), np.int64)
    dataset = TrainViews(prep.train_chips, prep.train_labels, degrader, cfg.seed)
    t0 = time.monotonic()
    for k in range(views):
        batch = [dataset[k * n + i] for i in range(n)]
        feats[k] = source.embed(np.stack([b[0] for b in batch]))
        flips[k] = [b[4] for b in batch]
        log(f"cached view {k + 1}/{views} ({time.monotonic() - t0:.0f} s)")
    return feats, flips


@dataclass
class _Training:
    """One regime's training objects, built by :func:`_start_training` (the pieces :func:`run_regime` drives)."""

    name: str
    out_dir: Path
    model: Any
    head: Any
    optimizer: Any
    scheduler: Any
    sampler: EpochBatches
    degrader: Any
    steps_per_epoch: int
    total_steps: int
    trainable: int


def _start_training(cfg: FinetuneConfig, name: str, prep: Prepared, device: Any) -> _Training:
    """Seed, model, margin head, optimizer, the epoch sampler and the two learning-rate schedules of one regime."""
    torch = _torch()
    from pipelines.recognizer.degrade import DegradeConfig, Degrader
    from pipelines.recognizer.heads import MarginHead

    regime, tc = cfg.regime(name), cfg.train
    out_dir = _required_path(cfg.out, "out") / name
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_model(load_source_backbone(cfg), regime).to(device)
    model.backbone.to(memory_format=torch.channels_last)
    head = MarginHead(prep.num_classes, 128, cfg.loss.head, cfg.loss.scale, cfg.loss.margin).to(device)
    if cfg.loss.head_init == "centroids":
        head.init_from_centroids(prep.src_table[0].cpu().numpy(), prep.train_labels)
    optimizer = torch.optim.AdamW(param_groups(model, head, regime, tc), lr=tc.lr, weight_decay=tc.weight_decay)
    degrader = Degrader(DegradeConfig.from_dict(cfg.degrade))
    sampler = EpochBatches(len(prep.train_chips), tc.batch_size, cfg.seed)
    steps_per_epoch = len(sampler)
    total_steps = (
        tc.epochs * steps_per_epoch if tc.max_steps is None else min(tc.max_steps, tc.epochs * steps_per_epoch)
    )
    warmup = min(tc.warmup_steps, max(1, total_steps // 5))
    hold = min(tc.head_warmup_steps, total_steps // 3)
    head_schedule = lr_lambda(warmup, total_steps, tc.min_lr_frac)
    body_schedule = lr_lambda(warmup, total_steps - hold, tc.min_lr_frac, hold_steps=hold)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [head_schedule if g["name"] == "head" else body_schedule for g in optimizer.param_groups]
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return _Training(
        name, out_dir, model, head, optimizer, scheduler, sampler, degrader, steps_per_epoch, total_steps, trainable
    )


def _resume_state(run: _Training, device: Any, resume: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """The training state (epoch, step, history, best, since_best): from ``last.pt`` when resuming, else fresh."""
    state: dict[str, Any] = {"epoch": 0, "global_step": 0, "history": [], "best": None, "since_best": 0}
    last = run.out_dir / "last.pt"
    if resume and last.is_file():
        ck = _torch().load(last, map_location=device, weights_only=False)
        run.model.load_state_dict(ck["model"])
        run.head.load_state_dict(ck["head"])
        run.optimizer.load_state_dict(ck["optimizer"])
        run.scheduler.load_state_dict(ck["scheduler"])
        state = ck["state"]
        log(f"[{run.name}] resumed at epoch {state['epoch']} step {state['global_step']}")
    return state


def _validation(run: _Training, prep: Prepared, device: Any, frozen: bool) -> Callable[[], dict]:
    """The epoch's validation: all pairs of the CelebA validation chips, clean and degraded."""
    torch = _torch()
    model = run.model

    def evaluate() -> dict:
        if frozen:  # the model is projection(source): reuse the source's validation embeddings
            with torch.no_grad():

                def proj(e):
                    return _unit(model.projection(torch.from_numpy(e).to(device)).float().cpu().numpy())

                return validation_metrics(proj(prep.src_val_clean), proj(prep.src_val_degraded), prep.val_labels)
        return validation_metrics(
            embed_chips(model, prep.val_clean, device), embed_chips(model, prep.val_degraded, device), prep.val_labels
        )

    return evaluate


def _train_loader(run: _Training, cfg: FinetuneConfig, prep: Prepared, device: Any) -> Any:
    """The DataLoader of degraded training views (used when views are not cached)."""
    tc = cfg.train
    return _torch().utils.data.DataLoader(
        TrainViews(prep.train_chips, prep.train_labels, run.degrader, cfg.seed, prep.train_scenes),
        batch_sampler=run.sampler,
        num_workers=tc.num_workers,
        persistent_workers=tc.num_workers > 0,
        pin_memory=str(device).startswith("cuda"),
        worker_init_fn=_worker_init,
    )


@dataclass
class _EpochSums:
    """Loss sums of one epoch (loss, cls, consistency, distill, relational, mixed relational) and its counts."""

    sums: np.ndarray
    steps: int = 0
    samples: int = 0
    out_of_time: bool = False


def _train_epoch(
    run: _Training,
    cfg: FinetuneConfig,
    prep: Prepared,
    device: Any,
    state: dict[str, Any],
    batches: Any,
    cached: Any,
    t_start: float,
) -> _EpochSums:
    """One pass over ``batches`` (stops early at the step budget or the time budget); updates ``global_step``."""
    tc = cfg.train
    epoch = _EpochSums(np.zeros(6))
    for batch in batches:
        view = None
        if cached is not None:
            batch, view = batch
        r = train_step(
            run.model,
            run.head,
            run.optimizer,
            batch,
            prep.src_table,
            cfg.loss,
            device,
            tc.amp,
            tc.grad_clip,
            run.scheduler,
            view,
        )
        epoch.sums += (r.loss, r.cls, r.consistency, r.distill, r.relational, r.mixed_relational)
        epoch.steps += 1
        epoch.samples += len(batch[2])
        state["global_step"] += 1
        if not math.isfinite(r.loss):
            raise VigilError(f"[{run.name}] loss is not finite at step {state['global_step']}")
        if state["global_step"] >= run.total_steps:
            break
        if tc.time_budget_s is not None and time.monotonic() - t_start > tc.time_budget_s:
            epoch.out_of_time = True
            break
    return epoch


def _epoch_row(
    run: _Training, state: dict[str, Any], epoch: int, sums: _EpochSums, train_s: float, metrics: dict
) -> dict:
    steps = max(sums.steps, 1)
    return {
        "epoch": epoch,
        "step": state["global_step"],
        "train_samples_per_s": sums.samples / max(train_s, 1e-9),
        "loss": sums.sums[0] / steps,
        "loss_cls": sums.sums[1] / steps,
        "loss_consistency": sums.sums[2] / steps,
        "loss_distill": sums.sums[3] / steps,
        "loss_relational": sums.sums[4] / steps,
        "loss_mixed_relational": sums.sums[5] / steps,
        "lr": _group_lr(run.optimizer, "new"),
        "partial_epoch": sums.steps < run.steps_per_epoch,
        **metrics,
    }


def _keep_epoch(run: _Training, cfg: FinetuneConfig, state: dict[str, Any], row: dict) -> None:
    """Add the epoch to the history, keep the best model (clean guard permitting), save the ``last.pt`` checkpoint."""
    tc = cfg.train
    state["history"].append(row)
    guard_ok = tc.clean_guard is None or row["clean_auc"] >= state["history"][0]["clean_auc"] - tc.clean_guard
    if guard_ok and row[tc.select_metric] > state["best"]["metric"]:
        state["best"] = {"epoch": row["epoch"], "metric": row[tc.select_metric]}
        state["since_best"] = 0
        _save_best(run.model, run.out_dir)
    else:
        state["since_best"] += 1
    _torch().save(
        {
            "model": run.model.state_dict(),
            "head": run.head.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "state": state,
            "regime": run.name,
        },
        run.out_dir / "last.pt",
    )


def _train_epochs(
    run: _Training,
    cfg: FinetuneConfig,
    prep: Prepared,
    device: Any,
    state: dict[str, Any],
    evaluate: Callable[[], dict],
    cached: Any,
    log: Callable[[str], None],
) -> tuple[str, float]:
    """Epochs until the epoch count, the step budget, early stopping or the time budget; (stop reason, start time)."""
    torch, tc = _torch(), cfg.train
    loader = _train_loader(run, cfg, prep, device) if cached is None else None
    t_start = time.monotonic()
    while state["epoch"] < tc.epochs:
        if state["global_step"] >= run.total_steps:
            return "max_steps", t_start
        if state["since_best"] >= tc.patience:
            return "early_stopping", t_start
        epoch = state["epoch"] + 1
        run.sampler.set_epoch(epoch)
        t_epoch = time.monotonic()
        batches = loader if loader is not None else _cached_batches(run.sampler, prep, cached, epoch, torch)
        sums = _train_epoch(run, cfg, prep, device, state, batches, cached, t_start)
        train_s = time.monotonic() - t_epoch
        metrics = evaluate()
        state["epoch"] = epoch
        row = _epoch_row(run, state, epoch, sums, train_s, metrics)
        _keep_epoch(run, cfg, state, row)
        log(
            f"[{run.name}] epoch {epoch} steps {sums.steps} {row['train_samples_per_s']:.0f} samples/s "
            f"loss {row['loss']:.3f} (cls {row['loss_cls']:.3f} cons {row['loss_consistency']:.4f}) " + _fmt(metrics)
        )
        if sums.out_of_time:
            return "time_budget", t_start
    return "epochs", t_start


def run_regime(cfg: FinetuneConfig, name: str, prep: Prepared, device, resume: bool, export: bool, log) -> dict:
    """Train one regime; returns its metrics dict (also written to ``<out>/<name>/metrics.json``)."""
    tc = cfg.train
    run = _start_training(cfg, name, prep, device)
    state = _resume_state(run, device, resume, log)
    frozen = run.model.trunk_frozen()
    cached = None
    if frozen and tc.cache_views > 0:
        if prep.train_scenes is not None:
            raise VigilError(
                f"[{name}] train.cache_views caches Degrader views only: set it to 0 with data.scene_views"
            )
        source = FrozenSource(run.model.backbone, device, _opt_path(cfg.data.source_onnx))
        cached = cache_degraded_views(prep, cfg, tc.cache_views, source, run.degrader, log)
    log(
        f"[{name}] trainable parameters {run.trainable}, steps/epoch {run.steps_per_epoch}, "
        f"total steps {run.total_steps}, device {device}"
    )
    evaluate = _validation(run, prep, device, frozen)
    if not state["history"]:
        m0 = evaluate()
        state["history"].append({"epoch": 0, "step": 0, **m0})
        state["best"] = {"epoch": 0, "metric": m0[tc.select_metric]}
        _save_best(run.model, run.out_dir)
        log(f"[{name}] epoch 0 (source): " + _fmt(m0))
    stop_reason, t_start = _train_epochs(run, cfg, prep, device, state, evaluate, cached, log)
    result = {
        "regime": name,
        "regime_config": asdict(cfg.regime(name)),
        "seed": cfg.seed,
        "device": str(device),
        "trainable_parameters": run.trainable,
        "steps_per_epoch": run.steps_per_epoch,
        "total_steps_planned": run.total_steps,
        "stop_reason": stop_reason,
        "select_metric": tc.select_metric,
        "best_epoch": state["best"]["epoch"],
        "best": next(h for h in state["history"] if h["epoch"] == state["best"]["epoch"]),
        "source": state["history"][0],
        "history": state["history"],
        "chips": prep.chips_path,
        "train_config": asdict(tc),
        "loss_config": asdict(cfg.loss),
        "degrade": cfg.degrade,
        "train_wall_s": time.monotonic() - t_start,
        "cached_views": tc.cache_views if cached is not None else 0,
        "validation": "all pairs among the CelebA validation identities' chips (never LFW)",
        "scene_views": cfg.data.scene_views,
        "val_degraded_from_scenes": prep.val_degraded_from_scenes,
    }
    if export:
        result["onnx"] = str(export_best(run.out_dir))
    (run.out_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    return result


def _cached_batches(sampler, prep: Prepared, cached, epoch: int, torch):
    """Batches for the CPU feature-cache route: view ``epoch % K`` of each chip (with that view's flip)."""
    feats, flips = cached
    k = (epoch - 1) % len(feats)
    for ids in sampler:
        idx = np.asarray(ids) % len(prep.train_chips)
        flipped = torch.from_numpy(flips[k, idx])
        dummy = torch.zeros(len(idx), 1, dtype=torch.uint8)
        batch = (dummy, dummy, torch.from_numpy(prep.train_labels[idx]), torch.from_numpy(idx), flipped)
        yield batch, torch.from_numpy(feats[k, idx])


def _group_lr(optimizer, name: str) -> float:
    for group in optimizer.param_groups:
        if group.get("name") == name:
            return float(group["lr"])
    return float(optimizer.param_groups[0]["lr"])


def _save_best(model, out_dir: Path) -> None:
    torch = _torch()
    torch.save({k: v.cpu() for k, v in model.to_plain().state_dict().items()}, out_dir / "best.pt")


def export_best(out_dir: Path) -> Path:
    """ONNX (R1's contract, fp16 weights) of ``best.pt`` -> ``<out_dir>/model.onnx``."""
    torch = _torch()
    from pipelines.recognizer.convert import export_onnx
    from pipelines.recognizer.network import DlibResNet

    model = DlibResNet()
    model.load_state_dict(torch.load(out_dir / "best.pt", map_location="cpu", weights_only=True))
    return export_onnx(
        model.eval(), out_dir / "model.onnx", fp16_weights=True, metadata={"vigil.finetune_regime": out_dir.name}
    )


def export_last(cfg: FinetuneConfig, name: str) -> Path:
    """ONNX of a regime's *last* checkpoint (``last.pt``: the equal-budget end point, whatever the selection picked)
    -> ``<out>/<name>/model_last.onnx``."""
    torch = _torch()
    from pipelines.recognizer.convert import export_onnx

    out_dir = _required_path(cfg.out, "out") / name
    if not (out_dir / "last.pt").is_file():
        raise VigilError(f"{out_dir / 'last.pt'}: no checkpoint (train the regime first)")
    model = build_model(load_source_backbone(cfg), cfg.regime(name))
    ck = torch.load(out_dir / "last.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(ck["model"])
    meta = {"vigil.finetune_regime": name, "vigil.finetune_epoch": str(ck["state"]["epoch"])}
    return export_onnx(model.to_plain(), out_dir / "model_last.onnx", fp16_weights=True, metadata=meta)


def collect(run_dir: Path, dest: Path, names: list[str]) -> dict:
    """Gather finished regimes for shipping back from a GPU run (at most len(names) + 2 files):

    ``summary.json`` (every regime's metrics.json), ``<regime>.onnx`` (fp16 weights) per regime and
    ``best_regime.pt`` (the plain float16 state_dict of the regime with the best selection metric)."""
    torch = _torch()
    dest.mkdir(parents=True, exist_ok=True)
    summary, best = {}, None
    for name in names:
        metrics = run_dir / name / "metrics.json"
        if not metrics.is_file():
            summary[name] = {"error": f"{metrics} missing (the regime did not finish)"}
            continue
        result = json.loads(metrics.read_text())
        summary[name] = result
        onnx_path = run_dir / name / "model.onnx"
        if onnx_path.is_file():
            (dest / f"{name}.onnx").write_bytes(onnx_path.read_bytes())
        score = result["best"][result["select_metric"]]
        if best is None or score > best[1]:
            best = (name, score)
    if best is not None:
        state = torch.load(run_dir / best[0] / "best.pt", map_location="cpu", weights_only=True)
        torch.save({k: v.half() for k, v in state.items()}, dest / "best_regime.pt")
        summary["best_regime"] = {"name": best[0], "select_metric_value": best[1]}
    (dest / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _fmt(m: dict) -> str:
    return " ".join(
        f"{v}_{k} {m[f'{v}_{k}']:.4f}" for v in ("clean", "degraded", "mixed") for k in ("auc", "tar_at_far_1e-3")
    )


# ----------------------------------------------------------------------------------------------- CLI


def parse_key_values(items: list[str], option: str) -> dict:
    """``["a=1", "b=[2, 3]"]`` -> ``{"a": 1, "b": [2, 3]}`` (values read as YAML); a malformed item names the option."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise VigilError(f"{option} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise VigilError(f"{option} {item!r}: the value is not valid YAML") from None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=Path("pipelines/recognizer/config/finetune.yaml"))
    ap.add_argument("--regime", default="all", help="a regime name, a comma list, or 'all'")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--time-budget-s", type=float, help="per regime, this invocation")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--cache-views", type=int, help="regime a on CPU: degraded views cached per chip")
    ap.add_argument(
        "--select-metric", choices=SELECT_METRICS, help="validation metric for the best checkpoint and early stopping"
    )
    ap.add_argument("--consistency-weight", type=float, help="overrides loss.consistency_weight")
    ap.add_argument("--relational-weight", type=float, help="overrides loss.relational_weight")
    ap.add_argument("--distill-weight", type=float, help="overrides loss.distill_weight")
    ap.add_argument("--mixed-relational-weight", type=float, help="overrides loss.mixed_relational_weight")
    ap.add_argument(
        "--margin-weight", type=float, help="overrides loss.margin_weight (0: distillation only, no identity loss)"
    )
    ap.add_argument(
        "--degrade",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="overrides one degrade.KEY of the config (YAML value), e.g. --degrade p_occlude=0.3; repeatable",
    )
    ap.add_argument("--val-max-chips", type=int)
    ap.add_argument("--chips", help="chip cache folder or carry pack (overrides data.chips)")
    ap.add_argument(
        "--scene-views",
        nargs="+",
        help="scene-view folder(s) (pipelines.recognizer.scene_views; overrides data.scene_views)",
    )
    ap.add_argument(
        "--p-scene-view", type=float, help="share of samples trained on a scene view (overrides train.p_scene_view)"
    )
    ap.add_argument("--out", help="output folder (overrides out)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--write-json", type=Path, help="write the config as JSON here and exit")
    ap.add_argument("--collect-into", type=Path, help="gather finished regimes of --out into this folder and exit")
    ap.add_argument(
        "--export-last", action="store_true", help="export each regime's last checkpoint (model_last.onnx) and exit"
    )
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    return run_reporting_errors(lambda: _run_finetune(args, log))


def _run_finetune(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    import cv2

    cv2.setNumThreads(0)  # before any cv2 call: a cv2 thread pool in this process can deadlock forked workers
    torch = _torch()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {
        "train": {
            "epochs": args.epochs,
            "max_steps": args.max_steps,
            "time_budget_s": args.time_budget_s,
            "batch_size": args.batch_size,
            "num_workers": args.workers,
            "cache_views": args.cache_views,
            "select_metric": args.select_metric,
            "p_scene_view": args.p_scene_view,
        },
        "data": {
            "val_max_chips": args.val_max_chips,
            "chips": [args.chips] if args.chips else None,
            "scene_views": args.scene_views,
        },
        "loss": {
            "consistency_weight": args.consistency_weight,
            "relational_weight": args.relational_weight,
            "distill_weight": args.distill_weight,
            "margin_weight": args.margin_weight,
            "mixed_relational_weight": args.mixed_relational_weight,
        },
        "degrade": parse_key_values(args.degrade, "--degrade"),
    }
    if args.write_json:
        args.write_json.parent.mkdir(parents=True, exist_ok=True)
        args.write_json.write_text(json.dumps(_read_mapping(args.config), indent=1))
        return 0
    cfg = load_config(args.config, overrides)
    if args.out:
        cfg = FinetuneConfig(**{**{f.name: getattr(cfg, f.name) for f in fields(cfg)}, "out": args.out})
    names = list(cfg.regimes) if args.regime == "all" else args.regime.split(",")
    for n in names:
        cfg.regime(n)
    if args.export_last:
        for n in names:
            log(f"[{n}] last checkpoint -> {export_last(cfg, n)}")
        return 0
    if args.collect_into:
        summary = collect(_required_path(cfg.out, "out"), args.collect_into, names)
        print(
            json.dumps({k: v.get("best", v) if isinstance(v, dict) else v for k, v in summary.items()}, indent=1)[:4000]
        )
        return 0
    device = resolve_device(args.device)
    prep = prepare(cfg, device, log)
    summary = {}
    for n in names:
        r = run_regime(cfg, n, prep, device, args.resume, not args.no_export, log)
        summary[n] = {
            "best_epoch": r["best_epoch"],
            "stop_reason": r["stop_reason"],
            **{k: r["best"][k] for k in r["best"] if k.endswith(("auc", "accuracy", "1e-3"))},
        }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
