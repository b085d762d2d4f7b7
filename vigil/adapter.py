"""Embedding adapter: a small residual map on top of the recognizer's unit embeddings (few-shot, issue 27).

``y = unit(x + g(x))`` with ``g`` either linear (``x A^T + b``) or a one-hidden-layer MLP
(``relu(x W1^T + b1) W2^T + b2``). The last layer of ``g`` starts at zero, so a fresh adapter is the identity and
cosines are unchanged. It acts on embeddings only: the recognizer, its checksum and the enrolment cache stay as they
are, which is what makes meta-training (``pipelines/meta``) and the benchmark (``vigil eval fewshot``) cheap.

The parameters are a plain ``{name: array}`` mapping so that the episodic updates (Reptile, first-order MAML) and
test-time fine-tuning (:func:`fine_tune_on_support`) copy and combine them as values. ``apply`` is numpy (no torch);
the torch functions import torch when called.

File format (``.npz``): the arrays under their names plus ``meta`` (a JSON string: ``method``, ``kind``, ``dim``,
``hidden``, ``scale`` (the cosine temperature it was trained with), ``tta`` (``{"steps", "lr"}`` for test-time
fine-tuning or null), ``train_identities`` (what it was trained on, checked against test identities), ``command``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vigil.embed import unit_rows
from vigil.errors import ModelError

KINDS = ("linear", "mlp")
DEFAULT_SCALE = 20.0  # cosine temperature of the prototypical loss before any training


@dataclass(frozen=True)
class SupportTuning:
    """Plain SGD steps on the support task (:func:`support_task`) before scoring an episode."""

    steps: int
    lr: float


@dataclass(frozen=True)
class Adapter:
    """An adapter's parameters (numpy) and what it is: ``method`` names the row it gives in the benchmark."""

    params: dict[str, np.ndarray]
    method: str
    scale: float = DEFAULT_SCALE
    tta: SupportTuning | None = None
    train_identities: frozenset[str] = field(default_factory=frozenset)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "mlp" if "W1" in self.params else "linear"

    @property
    def dim(self) -> int:
        return int(self.params["b2" if self.kind == "mlp" else "b"].shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        return apply(self.params, x)


def init_params(dim: int, kind: str = "linear", hidden: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Identity adapter: the residual's last layer is zero (the MLP's first layer is He-initialised)."""
    if kind == "linear":
        return {"A": np.zeros((dim, dim), np.float32), "b": np.zeros(dim, np.float32)}
    if kind == "mlp":
        rng = np.random.default_rng(seed)
        w1 = rng.normal(0.0, np.sqrt(2.0 / dim), size=(hidden, dim)).astype(np.float32)
        return {
            "W1": w1,
            "b1": np.zeros(hidden, np.float32),
            "W2": np.zeros((dim, hidden), np.float32),
            "b2": np.zeros(dim, np.float32),
        }
    raise ValueError(f"adapter kind must be one of {KINDS}, got {kind!r}")


def _residual(params: Mapping[str, Any], x, relu: Callable):
    if "W1" in params:
        return relu(x @ params["W1"].T + params["b1"]) @ params["W2"].T + params["b2"]
    return x @ params["A"].T + params["b"]


def apply(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """numpy: rows of ``x`` (..., D) -> unit rows ``unit(x + g(x))``."""
    x = np.asarray(x, np.float32)
    y = x + _residual(params, x, lambda v: np.maximum(v, 0.0))
    return unit_rows(y).astype(np.float32)


# ------------------------------------------------------------------------------------------------ torch


def to_torch(params: Mapping[str, np.ndarray], requires_grad: bool = True) -> dict:
    import torch

    return {k: torch.tensor(np.asarray(v), dtype=torch.float32, requires_grad=requires_grad) for k, v in params.items()}


def to_numpy(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in params.items()}


def forward(params: Mapping[str, Any], x):
    """torch: ``unit(x + g(x))`` on the last axis."""
    import torch
    import torch.nn.functional as F

    y = x + _residual(params, x, torch.relu)
    return F.normalize(y, dim=-1)


def prototypes(support):
    """torch: (N, K, D) unit support embeddings -> (N, D) unit prototypes (the re-normalised mean, as enrolment)."""
    import torch.nn.functional as F

    return F.normalize(support.mean(dim=1), dim=-1)


def prototypical_loss(params: Mapping[str, Any], support, queries, labels, scale: float, unknown=None):
    """Cross-entropy of ``scale x cos(f(query), prototype_n)`` over the N prototypes of ``f(support)`` (N, K, D).

    ``labels`` (Q,) are 0..N-1, or -1 for an impostor query. Without ``unknown`` impostor queries are ignored
    (closed set). With ``unknown`` (a cosine, float or tensor) every query also has an "unknown" logit
    ``scale x unknown`` and an impostor's target is that class (open set: the loss also pushes strangers below
    ``unknown``). Returns a torch scalar (0 when no query counts).
    """
    import torch
    import torch.nn.functional as F

    labels = torch.as_tensor(labels, dtype=torch.long)
    protos = prototypes(forward(params, support))
    cos = forward(params, queries) @ protos.T
    if unknown is None:
        keep = labels >= 0
        if not bool(keep.any()):
            return cos.sum() * 0.0
        return F.cross_entropy(scale * cos[keep], labels[keep])
    unknown_col = torch.as_tensor(unknown, dtype=cos.dtype).reshape(1, 1).expand(cos.shape[0], 1)
    targets = torch.where(labels >= 0, labels, torch.full_like(labels, cos.shape[1]))
    return F.cross_entropy(scale * torch.cat([cos, unknown_col], dim=1), targets)


def inner_adapt(params: Mapping[str, Any], loss_fn: Callable[[Mapping[str, Any]], Any], steps: int, lr: float) -> dict:
    """``steps`` plain SGD steps ``p <- p - lr * dL/dp`` from a copy of ``params`` (torch tensors); the result is
    detached from ``params`` (first-order: no gradient flows back through the steps)."""
    import torch

    current = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    for _ in range(int(steps)):
        loss = loss_fn(current)
        grads = torch.autograd.grad(loss, list(current.values()), allow_unused=True)
        with torch.no_grad():
            current = {
                k: (v - lr * g if g is not None else v).detach().requires_grad_(True)
                for (k, v), g in zip(current.items(), grads)
            }
    return current


def support_task(support: np.ndarray, support_views: np.ndarray, view_found: np.ndarray):
    """The task a site can build from its enrolment photos alone: prototypes from the clean photos (N, K, D) and, as
    queries, the degraded views of those same photos (``support_views`` (V, N, K, D), ``view_found`` (V, N, K)).
    Returns torch (support, queries (Q, D), labels (Q,)); Q = 0 when no view was found."""
    import torch

    label_grid = np.broadcast_to(np.arange(support.shape[0])[None, :, None], view_found.shape)
    queries = support_views[view_found]
    labels = label_grid[view_found]
    return (
        torch.as_tensor(support, dtype=torch.float32),
        torch.as_tensor(queries, dtype=torch.float32),
        torch.as_tensor(labels, dtype=torch.long),
    )


def support_loss(
    support: np.ndarray, support_views: np.ndarray, view_found: np.ndarray, scale: float
) -> Callable[[Mapping[str, Any]], Any]:
    """The closed-set prototypical loss of the support task (:func:`support_task`) as a function of the parameters:
    what test-time tuning descends, and first-order MAML's inner loop in training (``pipelines.meta.train``)."""
    s, q, y = support_task(support, support_views, view_found)
    return lambda params: prototypical_loss(params, s, q, y, scale)


def fine_tune_on_support(
    adapter: Adapter, support: np.ndarray, support_views: np.ndarray, view_found: np.ndarray
) -> Adapter:
    """The adapter after its test-time tuning on one episode's support task (itself when it has none, or when no
    degraded view of the support photos was found: a task without queries)."""
    if adapter.tta is None or adapter.tta.steps <= 0 or not np.any(view_found):
        return adapter
    tuned = inner_adapt(
        to_torch(adapter.params),
        support_loss(support, support_views, view_found, adapter.scale),
        adapter.tta.steps,
        adapter.tta.lr,
    )
    return Adapter(to_numpy(tuned), adapter.method, adapter.scale, adapter.tta, adapter.train_identities, adapter.meta)


# ------------------------------------------------------------------------------------------------ files


def save_adapter(path: Path, adapter: Adapter) -> None:
    meta = {
        **adapter.meta,
        "method": adapter.method,
        "kind": adapter.kind,
        "dim": adapter.dim,
        "scale": adapter.scale,
        "tta": None if adapter.tta is None else {"steps": adapter.tta.steps, "lr": adapter.tta.lr},
        "train_identities": sorted(adapter.train_identities),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    arrays: dict[str, Any] = {"meta": np.array(json.dumps(meta)), **adapter.params}
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_adapter(path: Path) -> Adapter:
    """An adapter file; ModelError naming it when it is missing or not an adapter."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: adapter file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            params = {k: data[k].astype(np.float32) for k in data.files if k != "meta"}
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: not an adapter file ({exc.__class__.__name__})") from None
    expected = {"linear": {"A", "b"}, "mlp": {"W1", "b1", "W2", "b2"}}.get(meta.get("kind"))
    if expected is None or set(params) != expected or not meta.get("method"):
        raise ModelError(f"{path}: not an adapter file (kind {meta.get('kind')!r}, arrays {sorted(params)})")
    tta = meta.get("tta")
    return Adapter(
        params=params,
        method=str(meta["method"]),
        scale=float(meta.get("scale", DEFAULT_SCALE)),
        tta=None if not tta else SupportTuning(int(tta["steps"]), float(tta["lr"])),
        train_identities=frozenset(meta.get("train_identities", [])),
        meta=meta,
    )
