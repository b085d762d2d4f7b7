"""YOLOv5-face's training loss, written here: anchor matching, box CIoU, objectness and class BCE, wing landmarks.

Targets are one row per face, ``[image index, cx, cy, w, h, 5 x (x, y), 5 x visible]`` in input pixels
(:func:`targets_tensor`). Matching follows yolov5(-face)'s ``build_targets``: a face is assigned to every anchor of a
level whose width and height are within ``anchor_t`` (4) times of the face's, in the cell holding its centre and the
two neighbouring cells nearest to it (so up to 3 cells x 3 anchors per level). For each match:

* box: ``1 - CIoU`` between the decoded prediction ``(2 sigmoid(t_xy) - 0.5, (2 sigmoid(t_wh))^2 * anchor)`` and the
  face, in grid units relative to the cell;
* objectness: BCE everywhere, target the (detached, clamped) IoU at matched anchors and 0 elsewhere, levels weighted
  ``OBJ_BALANCE`` (4, 1, 0.4: the stride-8 level has the most cells); with distillation (``soft_obj``) the target
  elsewhere is the frozen source model's objectness times a factor instead of 0;
* class: BCE to 1 at matched anchors (one class: the source never trained it, its class factor is a constant 0.984;
  this keeps it near 1 on faces);
* landmarks: wing loss (w 10, e 2) between ``t * anchor`` and the point relative to the cell, visible points only.

Weights (yolov5-face's ``hyp.scratch.yaml``): box 0.05, objectness 1.0, class 0.5, landmarks 0.005, each times 3 /
levels, and the sum times the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vigil.yolov5_face import DEFAULT_ANCHORS_PX

STRIDES = (8, 16, 32)
OBJ_BALANCE = (4.0, 1.0, 0.4)
TARGET_COLUMNS = 1 + 4 + 10 + 5  # image index, cx cy w h, 10 landmark coordinates, 5 visibilities


@dataclass(frozen=True)
class LossWeights:
    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    landmark: float = 0.005
    anchor_t: float = 4.0


def targets_tensor(per_image: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack each image's ``(K, 19)`` face rows ``[cx, cy, w, h, 10 landmark coords, 5 visibilities]`` (input pixels)
    with the image index in front -> ``(sum K, 20)``."""
    rows = [
        np.concatenate([np.full((len(faces), 1), index, np.float32), faces], axis=1)
        for index, faces in enumerate(per_image)
        if len(faces)
    ]
    if not rows:
        return torch.zeros((0, TARGET_COLUMNS))
    return torch.from_numpy(np.concatenate(rows).astype(np.float32))


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired boxes ``(N, 4)`` given as ``cx, cy, w, h``."""
    b1x1, b1x2 = box1[:, 0] - box1[:, 2] / 2, box1[:, 0] + box1[:, 2] / 2
    b1y1, b1y2 = box1[:, 1] - box1[:, 3] / 2, box1[:, 1] + box1[:, 3] / 2
    b2x1, b2x2 = box2[:, 0] - box2[:, 2] / 2, box2[:, 0] + box2[:, 2] / 2
    b2y1, b2y2 = box2[:, 1] - box2[:, 3] / 2, box2[:, 1] + box2[:, 3] / 2
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0) * (
        torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)
    ).clamp(0)
    w1, h1, w2, h2 = box1[:, 2], box1[:, 3] + eps, box2[:, 2], box2[:, 3] + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = (box2[:, 0] - box1[:, 0]) ** 2 + (box2[:, 1] - box1[:, 1]) ** 2
    v = (4 / math.pi**2) * torch.pow(torch.atan(w2 / h2) - torch.atan(w1 / h1), 2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def wing_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, w: float = 10.0, e: float = 2.0
) -> torch.Tensor:
    """Wing loss summed over the visible coordinates, divided by their count (yolov5-face's ``LandmarksLoss``)."""
    diff = ((pred - target) * mask).abs()
    c = w - w * math.log(1 + w / e)
    loss = torch.where(diff < w, w * torch.log1p(diff / e), diff - c)
    return loss.sum() / (mask.sum() + 1e-14)


@dataclass(frozen=True)
class LevelMatches:
    """Matched anchors of one level: which prediction (image, anchor, row, column) and what it should say."""

    image: torch.Tensor
    anchor: torch.Tensor
    gy: torch.Tensor
    gx: torch.Tensor
    box: torch.Tensor  # (M, 4) cx, cy relative to the cell; w, h in grid units
    anchor_wh: torch.Tensor  # (M, 2) grid units
    landmarks: torch.Tensor  # (M, 10) relative to the cell, grid units
    landmark_mask: torch.Tensor  # (M, 10)


NEIGHBOUR_OFFSETS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * 0.5


def match_level(
    targets: torch.Tensor, anchors_grid: torch.Tensor, grid_hw: tuple[int, int], stride: float, anchor_t: float
) -> LevelMatches:
    """yolov5's matching at one level (``anchors_grid``: (A, 2) anchor sizes in grid units)."""
    num_anchors = anchors_grid.shape[0]
    if len(targets) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return LevelMatches(
            empty, empty, empty, empty, torch.zeros(0, 4), torch.zeros(0, 2), torch.zeros(0, 10), torch.zeros(0, 10)
        )
    t = targets.clone()
    t[:, 1:15] = t[:, 1:15] / stride
    t = t[None].repeat(num_anchors, 1, 1)  # (A, N, 20)
    anchor_index = torch.arange(num_anchors)[:, None].repeat(1, len(targets))
    ratio = t[:, :, 3:5] / anchors_grid[:, None]
    fits = torch.max(ratio, 1.0 / ratio).max(2)[0] < anchor_t
    t, anchor_index = t[fits], anchor_index[fits]
    gxy = t[:, 1:3]
    gxi = torch.tensor([grid_hw[1], grid_hw[0]], dtype=torch.float32) - gxy
    j, k = ((gxy % 1.0 < 0.5) & (gxy > 1.0)).T
    left, m = ((gxi % 1.0 < 0.5) & (gxi > 1.0)).T
    use = torch.stack((torch.ones_like(j), j, k, left, m))
    t = t.repeat((5, 1, 1))[use]
    anchor_index = anchor_index.repeat((5, 1))[use]
    offsets = (torch.zeros_like(gxy)[None] + NEIGHBOUR_OFFSETS[:, None])[use]
    gxy = t[:, 1:3]
    gij = (gxy - offsets).long()
    gx, gy = gij[:, 0].clamp(0, grid_hw[1] - 1), gij[:, 1].clamp(0, grid_hw[0] - 1)
    cell = torch.stack([gx, gy], 1).float()
    landmarks = t[:, 5:15] - cell.repeat(1, 5)
    mask = t[:, 15:20].repeat_interleave(2, dim=1).clamp(0, 1)
    return LevelMatches(
        t[:, 0].long(),
        anchor_index,
        gy,
        gx,
        torch.cat([gxy - cell, t[:, 3:5]], 1),
        anchors_grid[anchor_index],
        landmarks,
        mask,
    )


class YoloFaceLoss(nn.Module):
    """``loss(outputs, targets) -> (total, parts)``: outputs are the model's raw heads, targets from
    :func:`targets_tensor`."""

    def __init__(
        self, anchors_px=DEFAULT_ANCHORS_PX, strides: Sequence[int] = STRIDES, weights: LossWeights = LossWeights()
    ) -> None:
        super().__init__()
        self.strides = tuple(strides)
        self.anchors_grid = [torch.tensor(level, dtype=torch.float32) / s for level, s in zip(anchors_px, self.strides)]
        self.weights = weights
        self.bce = nn.BCEWithLogitsLoss()

    def forward(
        self, outputs: Sequence[torch.Tensor], targets: torch.Tensor, soft_obj: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``soft_obj``: per level, the objectness target where no face is matched (distillation from the source
        model: its own objectness, so what the labels do not mention is not unlearned); default 0 there."""
        w = self.weights
        box_loss = obj_loss = cls_loss = lm_loss = torch.zeros(())
        for level, (pred, stride, anchors) in enumerate(zip(outputs, self.strides, self.anchors_grid)):
            matches = match_level(targets, anchors, (pred.shape[2], pred.shape[3]), stride, w.anchor_t)
            tobj = torch.zeros_like(pred[..., 4]) if soft_obj is None else soft_obj[level].detach().clone()
            if len(matches.image):
                ps = pred[matches.image, matches.anchor, matches.gy, matches.gx]
                pxy = ps[:, 0:2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * matches.anchor_wh
                iou = bbox_ciou(torch.cat([pxy, pwh], 1), matches.box)
                box_loss = box_loss + (1.0 - iou).mean()
                tobj[matches.image, matches.anchor, matches.gy, matches.gx] = iou.detach().clamp(0).to(tobj.dtype)
                cls_loss = cls_loss + self.bce(ps[:, 15], torch.ones_like(ps[:, 15]))
                plm = ps[:, 5:15] * matches.anchor_wh.repeat(1, 5)
                lm_loss = lm_loss + wing_loss(plm, matches.landmarks, matches.landmark_mask)
            obj_loss = obj_loss + self.bce(pred[..., 4], tobj) * OBJ_BALANCE[level]
        scale = 3.0 / len(outputs)
        parts = {
            "box": box_loss * w.box * scale,
            "obj": obj_loss * w.obj * scale,
            "cls": cls_loss * w.cls * scale,
            "landmark": lm_loss * w.landmark * scale,
        }
        batch = outputs[0].shape[0]
        total = sum(parts.values()) * batch
        return total, {name: float(value.detach()) for name, value in parts.items()}
