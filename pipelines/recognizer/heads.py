"""Margin classification heads for metric learning on L2-normalised embeddings (ArcFace, CosFace).

Both take unnormalised embeddings (B, D) and integer labels (B,) and return logits (B, C) for
cross-entropy: ``s * cos(theta_j)`` for the other classes and, for the true class,
``s * cos(theta_y + m)`` (ArcFace, additive angular margin) or ``s * (cos(theta_y) - m)`` (CosFace).
The class weights live on the unit sphere; ``init_from_centroids`` starts them at the per-class mean
embedding of a pretrained model, so a new head does not push a good backbone around while it settles.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS = ("arcface", "cosface")


class MarginHead(nn.Module):
    """ArcFace or CosFace over ``num_classes`` identities; ``scale`` s and ``margin`` m (radians for ArcFace)."""

    def __init__(
        self, num_classes: int, dim: int = 128, kind: str = "arcface", scale: float = 32.0, margin: float = 0.3
    ) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"head: kind must be one of {HEAD_KINDS}, got {kind!r}")
        self.kind = kind
        self.scale = float(scale)
        self.margin = float(margin)
        self.weight = nn.Parameter(F.normalize(torch.randn(num_classes, dim), dim=1))

    @torch.no_grad()
    def init_from_centroids(self, embeddings: np.ndarray, labels: np.ndarray) -> None:
        """Each class weight := the normalised mean of its (N, D) embeddings; a class without samples keeps its own."""
        emb = torch.as_tensor(embeddings, dtype=torch.float32)
        lab = torch.as_tensor(labels, dtype=torch.int64)
        sums = torch.zeros_like(self.weight).index_add_(0, lab, F.normalize(emb, dim=1))
        has = torch.bincount(lab, minlength=self.weight.shape[0]) > 0
        self.weight[has] = F.normalize(sums[has], dim=1)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C) cosine between each embedding and each class weight."""
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight, dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(embeddings).clamp(-1.0, 1.0)
        target = cos.gather(1, labels.view(-1, 1))
        if self.kind == "cosface":
            adjusted = target - self.margin
        else:
            sin = torch.sqrt((1.0 - target * target).clamp_min(1e-9))
            with_margin = target * math.cos(self.margin) - sin * math.sin(self.margin)
            # past theta = pi - m the angle cannot grow further: use the CosFace-like fallback (InsightFace)
            threshold = math.cos(math.pi - self.margin)
            fallback = target - math.sin(math.pi - self.margin) * self.margin
            adjusted = torch.where(target > threshold, with_margin, fallback)
        logits = cos.scatter(1, labels.view(-1, 1), adjusted)
        return logits * self.scale
