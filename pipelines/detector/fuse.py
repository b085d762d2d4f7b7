"""Box utilities and teacher fusion for pseudo-labelling.

Pure functions on numpy arrays and ``vigil.types.Face`` lists; no I/O.

Fusion policy (``fuse_faces``), chosen before looking at any validation data:

* The teachers' faces on one image are clustered greedily by IoU (highest score first; a face joins
  the cluster whose fused box it overlaps most, at IoU >= ``iou_thr``; at most one face per teacher per
  cluster, so one teacher cannot vote twice).
* A cluster is kept when at least ``min_votes`` (default 2) *different* teachers agree, or when a single
  teacher is very confident (score >= ``solo_score``, default 0.85). Teachers disagree most on small,
  blurred or profile faces; requiring agreement removes most single-teacher false positives (hands,
  patterns), while the solo rule keeps clear faces that only one teacher sees. Measured with the
  teachers' raw threshold 0.3 (never on WIDER): on the 3,000 LFW photos 3,390 clusters had 4 votes, 102
  had 3, 86 had 2 and 251 had 1; the single-vote scores had median 0.40 and 99th percentile 0.73, none
  reached 0.85; on 30 face-free procedural backgrounds the highest teacher score was 0.36 (YuNet).
  So 0.85 only admits a face far more confident than any single-teacher detection seen there.
* The fused box and landmarks are score-weighted means over the agreeing teachers (weighted box
  fusion); the fused score is the mean teacher score times ``min(1, votes / min_votes)`` so that a
  solo face gets a lower score than an agreed one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vigil.eval.detection_metrics import box_iou
from vigil.types import Face


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU between every box of ``boxes_a`` (N, 4) and ``boxes_b`` (M, 4), x1y1x2y2 pixels -> (N, M)."""
    return box_iou(boxes_a, boxes_b)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first.

    A box is suppressed when its IoU with a kept, higher-scoring box exceeds ``iou_thr``. Uses OpenCV's
    C++ implementation (thousands of boxes per image at low teacher thresholds).
    """
    import cv2

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.column_stack([boxes[:, :2], np.clip(boxes[:, 2:] - boxes[:, :2], 0, None)])
    shifted = scores - scores.min() + 1.0  # OpenCV keeps scores > threshold >= 0 only; order is unchanged
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), shifted.tolist(), 0.0, float(iou_thr))
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def nms_faces(faces: list[Face], iou_thr: float) -> list[Face]:
    """NMS over a list of faces (keeps the highest-scoring face of each overlapping group)."""
    if not faces:
        return []
    boxes = np.stack([f.box for f in faces])
    scores = np.array([f.score for f in faces])
    return [faces[i] for i in nms(boxes, scores, iou_thr)]


@dataclass(frozen=True)
class FusionParams:
    """Thresholds of ``fuse_faces`` (see the module docstring for the reasoning)."""

    iou_thr: float = 0.5  # IoU with a cluster's fused box to join it
    min_votes: int = 2  # distinct teachers needed to keep a face ...
    solo_score: float = 0.85  # ... unless one teacher is at least this confident
    min_teacher_score: float = 0.3  # teacher faces below this are ignored


@dataclass
class _Cluster:
    boxes: list[np.ndarray]
    landmarks: list[np.ndarray]
    scores: list[float]
    teachers: set[str]

    def fused_box(self) -> np.ndarray:
        w = np.asarray(self.scores, dtype=np.float64)
        return (np.stack(self.boxes) * w[:, None]).sum(0) / w.sum()

    def fused_landmarks(self) -> np.ndarray:
        w = np.asarray(self.scores, dtype=np.float64)
        return (np.stack(self.landmarks) * w[:, None, None]).sum(0) / w.sum()


def fuse_faces(per_teacher: dict[str, list[Face]], params: FusionParams = FusionParams()) -> list[Face]:
    """Fuse the faces several teachers found on one image into one list of agreed faces.

    ``per_teacher`` maps a teacher name to its faces (pixels of the same image). Returns faces sorted
    by descending fused score.
    """
    items = [
        (face, name) for name, faces in per_teacher.items() for face in faces if face.score >= params.min_teacher_score
    ]
    items.sort(key=lambda it: -it[0].score)
    clusters: list[_Cluster] = []
    for face, name in items:
        target = _best_cluster(clusters, face, name, params.iou_thr)
        if target is None:
            clusters.append(
                _Cluster([face.box.astype(np.float64)], [face.landmarks.astype(np.float64)], [face.score], {name})
            )
        else:
            target.boxes.append(face.box.astype(np.float64))
            target.landmarks.append(face.landmarks.astype(np.float64))
            target.scores.append(face.score)
            target.teachers.add(name)
    fused = [_cluster_to_face(c, params) for c in clusters if _keep(c, params)]
    return sorted(fused, key=lambda f: -f.score)


def _best_cluster(clusters: list[_Cluster], face: Face, teacher: str, iou_thr: float) -> _Cluster | None:
    """The cluster (without a face of ``teacher`` yet) that ``face`` overlaps most, if IoU >= iou_thr."""
    candidates = [c for c in clusters if teacher not in c.teachers]
    if not candidates:
        return None
    ious = iou_matrix(face.box[None], np.stack([c.fused_box() for c in candidates]))[0]
    best = int(np.argmax(ious))
    return candidates[best] if ious[best] >= iou_thr else None


def _keep(cluster: _Cluster, params: FusionParams) -> bool:
    return len(cluster.teachers) >= params.min_votes or max(cluster.scores) >= params.solo_score


def _cluster_to_face(cluster: _Cluster, params: FusionParams) -> Face:
    votes = len(cluster.teachers)
    score = float(np.mean(cluster.scores)) * min(1.0, votes / params.min_votes)
    return Face(
        box=cluster.fused_box().astype(np.float32),
        score=score,
        landmarks=cluster.fused_landmarks().astype(np.float32),
    )


def unconfirmed_boxes(
    per_teacher: dict[str, list[Face]], kept: list[Face], min_score: float = 0.4, iou_thr: float = 0.3
) -> np.ndarray:
    """Boxes (K, 4) that some teacher scored >= ``min_score`` but fusion did not keep.

    These are probably faces (or face-like regions) without a label; training on them as background
    would teach the student to miss real faces, so the dataset builder paints them out and the
    synthesiser never cuts backgrounds from them. A teacher box counts as kept when it overlaps a
    kept face at IoU >= ``iou_thr`` or lies mostly (>= 60 %) inside one.
    """
    cands = [f.box for faces in per_teacher.values() for f in faces if f.score >= min_score]
    if not cands:
        return np.zeros((0, 4), dtype=np.float32)
    cands_arr = np.stack(cands).astype(np.float64)
    if kept:
        kept_arr = np.stack([f.box for f in kept]).astype(np.float64)
        covered = (iou_matrix(cands_arr, kept_arr) >= iou_thr) | (_inside_fraction(cands_arr, kept_arr) >= 0.6)
        cands_arr = cands_arr[~covered.any(axis=1)]
    if len(cands_arr) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    keep = nms(cands_arr, np.ones(len(cands_arr)), 0.3)
    return cands_arr[keep].astype(np.float32)


def _inside_fraction(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Fraction of each box in ``boxes_a`` (N) that lies inside each box of ``boxes_b`` (M) -> (N, M)."""
    x1 = np.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
    y1 = np.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
    x2 = np.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2])
    y2 = np.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = np.clip(boxes_a[:, 2] - boxes_a[:, 0], 0, None) * np.clip(boxes_a[:, 3] - boxes_a[:, 1], 0, None)
    return inter / np.maximum(area[:, None], 1e-12)
