"""Face-detection accuracy in pure numpy: COCO-style AP, AP by face size, recall, landmark error.

Definitions (all coordinates are pixels of the evaluated image, boxes are x1, y1, x2, y2):

* **AP** is COCO's 101-point interpolated average precision: detections of all images are pooled and sorted by
  score (highest first, a stable sort so ties keep their input order), precision is made monotone
  (the running maximum from the right), and AP is the mean over recall levels 0.00, 0.01, ... 1.00 of the
  precision at the first rank that reaches that recall (0 when the recall is never reached).
  ``ap50`` uses IoU 0.5; ``ap50_95`` is the mean AP over IoU 0.50, 0.55, ... 0.95.
* **Matching** (per image, per IoU threshold), greedy in descending score order as in pycocotools: a detection
  takes the unmatched ground-truth (GT) box with the highest IoU >= the threshold, preferring GT boxes that count
  (are not ignored); each GT is matched at most once. A detection that matches nothing is a false positive, so a
  second detection of an already-matched face (a duplicate) is a false positive. There is no cap on detections per
  image (COCO keeps 100; WIDER crowds hold more faces than that): the caller decides the score floor.
* **Size buckets** use ``sqrt(w * h)`` of the box in pixels: ``lt16`` [0, 16), ``16_32`` [16, 32), ``32_64`` [32, 64),
  ``gt64`` [64, inf). For a bucket's AP the GT boxes outside the bucket are *ignored*: they are not counted as
  misses, and a detection matched to an ignored GT (it found a face of another size) is ignored as well -- neither
  true nor false positive. An unmatched detection is a false positive of the bucket only when its own size falls in
  the bucket (pycocotools' area-range rule); otherwise it is ignored. Over all sizes nothing is ignored.
* **Recall at the operating threshold**: the share of GT boxes matched at IoU 0.5 by detections scoring at least
  the threshold. **Recall at the score floor**: the same with every detection the caller kept (the end of the
  precision/recall curve): how many faces the detector can find at all, whatever their score.
* **Landmark error (NME)**: for each GT with known landmarks matched at IoU 0.5 (at any score), the mean over the
  known points of the Euclidean error divided by ``sqrt(w * h)`` of the GT box. Box size is used rather than the
  inter-ocular distance because most faces here are tiny and often in profile, where the eye distance collapses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50 ... 0.95
RECALL_LEVELS = np.linspace(0.0, 1.0, 101)
SIZE_BUCKETS: dict[str, tuple[float, float]] = {
    "lt16": (0.0, 16.0),
    "16_32": (16.0, 32.0),
    "32_64": (32.0, 64.0),
    "gt64": (64.0, math.inf),
}


@dataclass(frozen=True)
class ImageTruth:
    """Ground truth of one image: ``boxes`` (N, 4) float pixels x1y1x2y2; ``landmarks`` (N, 5, 2) pixels, NaN where
    unknown (None when the labels have no landmarks)."""

    boxes: np.ndarray
    landmarks: np.ndarray | None = None


@dataclass(frozen=True)
class ImageDetections:
    """Detections of one image: ``boxes`` (P, 4) pixels x1y1x2y2, ``scores`` (P,) in [0, 1], ``landmarks`` (P, 5, 2)
    pixels or None."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = None


@dataclass(frozen=True)
class DetectionReport:
    """Every number of one evaluation; fractions in [0, 1], NME as a fraction of the GT box size."""

    ap50: float
    ap50_95: float
    ap50_by_size: dict[str, float]
    ap50_95_by_size: dict[str, float]
    recall_at_operating_threshold: float
    operating_threshold: float
    recall_at_operating_threshold_by_size: dict[str, float]
    recall_at_score_floor: float
    recall_at_score_floor_by_size: dict[str, float]
    boxes: int
    boxes_by_size: dict[str, int]
    detections: int
    landmark_nme: float | None  # None when no GT has landmarks
    landmark_pairs: int
    extra: dict = field(default_factory=dict)


def box_sizes(boxes: np.ndarray) -> np.ndarray:
    """``sqrt(w * h)`` in pixels of (N, 4) x1y1x2y2 boxes (0 for degenerate boxes)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = np.clip(boxes[:, 2] - boxes[:, 0], 0, None)
    h = np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return np.sqrt(w * h)


def size_bucket_mask(boxes: np.ndarray, bucket: str | None) -> np.ndarray:
    """True for boxes whose ``sqrt(w * h)`` lies in ``bucket`` (all True for None)."""
    sizes = box_sizes(boxes)
    if bucket is None:
        return np.ones(len(sizes), dtype=bool)
    low, high = SIZE_BUCKETS[bucket]
    return (sizes >= low) & (sizes < high)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU between x1y1x2y2 boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_image(
    iou: np.ndarray, order: np.ndarray, gt_ignored: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of one image at one IoU threshold.

    ``iou`` (P, N) detections x GT; ``order`` the detection indices by descending score; ``gt_ignored`` (N,) bool.
    Returns ``gt_of_detection`` (P,) int, the matched GT index or -1, and ``gt_matched`` (N,) bool.
    """
    n_det, n_gt = iou.shape
    gt_of_detection = np.full(n_det, -1, dtype=np.int64)
    gt_matched = np.zeros(n_gt, dtype=bool)
    if n_gt == 0:
        return gt_of_detection, gt_matched
    candidates = iou >= threshold
    has_candidate = np.asarray(candidates.any(axis=1))
    for det in order[has_candidate[order]]:
        row_ok = candidates[det] & ~gt_matched
        if not row_ok.any():
            continue
        counted = row_ok & ~gt_ignored
        pool = counted if counted.any() else row_ok
        gt = int(np.argmax(np.where(pool, iou[det], -1.0)))
        gt_of_detection[det] = gt
        gt_matched[gt] = True
    return gt_of_detection, gt_matched


def interpolated_ap(scores: np.ndarray, is_tp: np.ndarray, n_positive: int) -> float:
    """COCO 101-point AP from pooled detection ``scores`` and their true-positive flags; ``n_positive`` GT boxes.

    Returns NaN when there is no positive (the bucket is empty), 0.0 when there are positives but no detection.
    """
    if n_positive == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.asarray(is_tp, dtype=np.float64)[order]
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(1.0 - tp)
    recall = tp_cum / n_positive
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    ranks = np.searchsorted(recall, RECALL_LEVELS, side="left")
    sampled = np.where(ranks < len(envelope), envelope[np.minimum(ranks, len(envelope) - 1)], 0.0)
    return float(sampled.mean())


@dataclass
class _Pooled:
    """Per IoU threshold: the pooled scores and TP flags of the detections that count, and the positive count."""

    scores: list[list[np.ndarray]]
    tps: list[list[np.ndarray]]
    positives: int = 0
    recalled_at_operating: int = 0
    recalled_at_floor: int = 0

    @classmethod
    def empty(cls) -> _Pooled:
        return cls(scores=[[] for _ in IOU_THRESHOLDS], tps=[[] for _ in IOU_THRESHOLDS])

    def ap(self, threshold_index: int) -> float:
        scores = np.concatenate(self.scores[threshold_index]) if self.scores[threshold_index] else np.zeros(0)
        tps = np.concatenate(self.tps[threshold_index]) if self.tps[threshold_index] else np.zeros(0, dtype=bool)
        return interpolated_ap(scores, tps, self.positives)


def _accumulate_image(
    truth: ImageTruth, dets: ImageDetections, bucket: str | None, pooled: _Pooled, operating_threshold: float
) -> None:
    gt_boxes = np.asarray(truth.boxes, dtype=np.float64).reshape(-1, 4)
    det_boxes = np.asarray(dets.boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(dets.scores, dtype=np.float64).reshape(-1)
    gt_ignored = ~size_bucket_mask(gt_boxes, bucket)
    det_out_of_bucket = ~size_bucket_mask(det_boxes, bucket)
    pooled.positives += int((~gt_ignored).sum())
    iou = box_iou(det_boxes, gt_boxes)
    order = np.argsort(-scores, kind="stable")
    for t_index, threshold in enumerate(IOU_THRESHOLDS):
        gt_of_det, _ = match_image(iou, order, gt_ignored, threshold)
        matched = gt_of_det >= 0
        matched_ignored = np.zeros_like(matched)
        matched_ignored[matched] = gt_ignored[gt_of_det[matched]]
        counts = ~(matched_ignored | (~matched & det_out_of_bucket))
        pooled.scores[t_index].append(scores[counts])
        pooled.tps[t_index].append(matched[counts])
        if t_index == 0:
            found = matched & ~matched_ignored
            pooled.recalled_at_operating += int((found & (scores >= operating_threshold)).sum())
            pooled.recalled_at_floor += int(found.sum())


def _landmark_errors(truth: ImageTruth, dets: ImageDetections) -> list[float]:
    """Per matched GT with known landmarks (IoU 0.5, any score): mean point error / sqrt(w*h) of the GT box."""
    if truth.landmarks is None or dets.landmarks is None or len(truth.boxes) == 0 or len(dets.boxes) == 0:
        return []
    gt_boxes = np.asarray(truth.boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(dets.scores, dtype=np.float64).reshape(-1)
    iou = box_iou(dets.boxes, gt_boxes)
    gt_of_det, _ = match_image(iou, np.argsort(-scores, kind="stable"), np.zeros(len(gt_boxes), dtype=bool), 0.5)
    gt_points = np.asarray(truth.landmarks, dtype=np.float64).reshape(-1, 5, 2)
    det_points = np.asarray(dets.landmarks, dtype=np.float64).reshape(-1, 5, 2)
    sizes = box_sizes(gt_boxes)
    errors = []
    for det, gt in enumerate(gt_of_det):
        if gt < 0 or sizes[gt] <= 0:
            continue
        known = np.isfinite(gt_points[gt]).all(axis=1)
        if not known.any():
            continue
        dist = np.linalg.norm(det_points[det][known] - gt_points[gt][known], axis=1)
        errors.append(float(dist.mean() / sizes[gt]))
    return errors


def evaluate_detections(pairs: list[tuple[ImageTruth, ImageDetections]], operating_threshold: float) -> DetectionReport:
    """Score detections against ground truth over a set of images (see the module docstring for the rules)."""
    buckets: list[str | None] = [None, *SIZE_BUCKETS]
    pooled = {bucket: _Pooled.empty() for bucket in buckets}
    landmark_errors: list[float] = []
    for truth, dets in pairs:
        for bucket in buckets:
            _accumulate_image(truth, dets, bucket, pooled[bucket], operating_threshold)
        landmark_errors.extend(_landmark_errors(truth, dets))
    overall = pooled[None]
    named = [b for b in buckets if b is not None]
    return DetectionReport(
        ap50=overall.ap(0),
        ap50_95=float(np.mean([overall.ap(i) for i in range(len(IOU_THRESHOLDS))])),
        ap50_by_size={b: pooled[b].ap(0) for b in named},
        ap50_95_by_size={b: float(np.mean([pooled[b].ap(i) for i in range(len(IOU_THRESHOLDS))])) for b in named},
        recall_at_operating_threshold=_ratio(overall.recalled_at_operating, overall.positives),
        operating_threshold=float(operating_threshold),
        recall_at_operating_threshold_by_size={
            b: _ratio(pooled[b].recalled_at_operating, pooled[b].positives) for b in named
        },
        recall_at_score_floor=_ratio(overall.recalled_at_floor, overall.positives),
        recall_at_score_floor_by_size={b: _ratio(pooled[b].recalled_at_floor, pooled[b].positives) for b in named},
        boxes=overall.positives,
        boxes_by_size={b: pooled[b].positives for b in named},
        detections=int(sum(len(np.asarray(d.scores).reshape(-1)) for _, d in pairs)),
        landmark_nme=float(np.mean(landmark_errors)) if landmark_errors else None,
        landmark_pairs=len(landmark_errors),
    )


def _ratio(numerator: int, denominator: int) -> float:
    return float(numerator / denominator) if denominator else float("nan")
