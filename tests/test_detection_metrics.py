"""AP, size buckets, recall and landmark error on synthetic detections whose answer is worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vigil.eval.detection_metrics import (
    ImageDetections,
    ImageTruth,
    box_iou,
    box_sizes,
    evaluate_detections,
    interpolated_ap,
    size_bucket_mask,
)

# 101-point AP when precision is 1 up to recall 0.5 and recall never goes higher: levels 0.00..0.50 -> 51 of 101.
HALF = 51 / 101


def square(x: float, y: float, side: float) -> list[float]:
    return [x, y, x + side, y + side]


def truth(*boxes: list[float], landmarks=None) -> ImageTruth:
    return ImageTruth(boxes=np.asarray(boxes, dtype=float).reshape(-1, 4), landmarks=landmarks)


def dets(*scored: tuple[list[float], float], landmarks=None) -> ImageDetections:
    return ImageDetections(
        boxes=np.asarray([b for b, _ in scored], dtype=float).reshape(-1, 4),
        scores=np.asarray([s for _, s in scored], dtype=float),
        landmarks=landmarks,
    )


A, B, C, D = square(0, 0, 40), square(100, 0, 40), square(200, 0, 40), square(300, 0, 40)
FAR = square(600, 600, 40)


@pytest.mark.parametrize(
    "name, pairs, ap50",
    [
        ("perfect", [(truth(A, B), dets((A, 0.9), (B, 0.3)))], 1.0),
        ("all wrong", [(truth(A, B), dets((FAR, 0.9), (square(700, 0, 40), 0.8)))], 0.0),
        ("no detections", [(truth(A, B), dets())], 0.0),
        ("half recalled", [(truth(A, B, C, D), dets((A, 0.9), (B, 0.8)))], HALF),
        ("half recalled over two images", [(truth(A, B), dets((A, 0.9))), (truth(C, D), dets((C, 0.8)))], HALF),
        # A (TP, p=1, r=.5), duplicate of A (FP, p=.5), B (TP, p=2/3, r=1): 51 levels at 1, 50 levels at 2/3.
        ("duplicate is a false positive", [(truth(A, B), dets((A, 0.9), (A, 0.8), (B, 0.7)))], (51 + 50 * 2 / 3) / 101),
        ("false positive ranked first", [(truth(A), dets((FAR, 0.9), (A, 0.5)))], 0.5),
        ("false positive ranked last", [(truth(A), dets((A, 0.9), (FAR, 0.5)))], 1.0),
        (
            "false positive in another image ranked first",
            [(truth(A), dets((A, 0.5))), (truth(), dets((FAR, 0.9)))],
            0.5,
        ),
    ],
)
def test_ap50_known_answers(name, pairs, ap50):
    report = evaluate_detections(pairs, operating_threshold=0.5)
    assert report.ap50 == pytest.approx(ap50, abs=1e-9), name


def test_perfect_detections_score_one_at_every_iou():
    report = evaluate_detections([(truth(A, B, C), dets((A, 0.9), (B, 0.8), (C, 0.7)))], operating_threshold=0.5)
    assert report.ap50_95 == pytest.approx(1.0)
    assert report.recall_at_operating_threshold == pytest.approx(1.0)


def test_ap50_95_counts_the_iou_thresholds_a_shifted_box_passes():
    shifted = [A[0] + 4, A[1] + 4, A[2] + 4, A[3] + 4]  # 36x36 overlap: IoU 1296 / 1904 = 0.68
    iou = float(box_iou(np.array([shifted]), np.array([A]))[0, 0])
    assert iou == pytest.approx(1296 / 1904)
    report = evaluate_detections([(truth(A), dets((shifted, 0.9)))], operating_threshold=0.5)
    assert report.ap50 == pytest.approx(1.0)
    assert report.ap50_95 == pytest.approx(4 / 10)  # passes 0.50, 0.55, 0.60, 0.65; fails 0.70 ... 0.95


@pytest.mark.parametrize(
    "box, bucket",
    [
        (square(0, 0, 10), "lt16"),
        (square(0, 0, 15.9), "lt16"),
        ([0, 0, 8, 32], "16_32"),  # sqrt(8 * 32) = 16: lower edge belongs to the bucket
        (square(0, 0, 31.9), "16_32"),
        (square(0, 0, 32), "32_64"),
        ([0, 0, 32, 128], "gt64"),  # sqrt(32 * 128) = 64
        (square(0, 0, 300), "gt64"),
    ],
)
def test_size_bucket_assignment(box, bucket):
    for name in ("lt16", "16_32", "32_64", "gt64"):
        assert bool(size_bucket_mask(np.array([box]), name)[0]) == (name == bucket), name


def test_box_size_is_sqrt_of_area():
    assert box_sizes(np.array([[10, 10, 14, 26]]))[0] == pytest.approx(8.0)


SMALL, SMALL2, BIG = square(0, 0, 10), square(50, 50, 10), square(100, 100, 100)


@pytest.mark.parametrize(
    "pairs, expected",
    [
        # only the big face is found: its bucket is perfect, the small bucket gets nothing, overall half
        ([(truth(SMALL, BIG), dets((BIG, 0.9)))], {"all": HALF, "lt16": 0.0, "gt64": 1.0}),
        # the big face's detection matches a GT ignored in lt16, so it is ignored there (not a false positive)
        ([(truth(SMALL, BIG), dets((BIG, 0.9), (SMALL, 0.5)))], {"all": 1.0, "lt16": 1.0, "gt64": 1.0}),
        # an unmatched small detection is a false positive only in its own bucket
        (
            [(truth(SMALL, BIG), dets((FAR[:2] + [FAR[0] + 10, FAR[1] + 10], 0.95), (BIG, 0.9), (SMALL, 0.5)))],
            {"all": 2 / 3, "lt16": 0.5, "gt64": 1.0},
        ),
        # a bucket with no GT box has no AP (NaN), not zero
        ([(truth(SMALL, SMALL2), dets((SMALL, 0.9)))], {"all": HALF, "lt16": HALF, "gt64": math.nan}),
    ],
)
def test_size_bucket_ap(pairs, expected):
    report = evaluate_detections(pairs, operating_threshold=0.5)
    got = {"all": report.ap50, **report.ap50_by_size}
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value), key


def test_bucket_counts_and_recall_by_size():
    report = evaluate_detections([(truth(SMALL, SMALL2, BIG), dets((SMALL, 0.9), (BIG, 0.2)))], operating_threshold=0.5)
    assert report.boxes == 3
    assert report.boxes_by_size == {"lt16": 2, "16_32": 0, "32_64": 0, "gt64": 1}
    assert report.recall_at_operating_threshold == pytest.approx(1 / 3)
    assert report.recall_at_operating_threshold_by_size["lt16"] == pytest.approx(0.5)
    assert report.recall_at_operating_threshold_by_size["gt64"] == pytest.approx(0.0)
    # at the score floor the big face's low-scoring detection counts: every box but SMALL2 is found
    assert report.recall_at_score_floor == pytest.approx(2 / 3)
    assert report.recall_at_score_floor_by_size["lt16"] == pytest.approx(0.5)
    assert report.recall_at_score_floor_by_size["gt64"] == pytest.approx(1.0)
    assert math.isnan(report.recall_at_score_floor_by_size["16_32"])  # no box of that size


@pytest.mark.parametrize(
    "detections, floor_recall",
    [
        ([], 0.0),
        ([(A, 0.01)], 0.25),  # any kept score counts
        ([(A, 0.9), (A, 0.8)], 0.25),  # a duplicate finds no second face
        ([(A, 0.9), (B, 0.6), (C, 0.3), (D, 0.1), (FAR, 0.99)], 1.0),  # a false positive adds nothing
    ],
)
def test_recall_at_score_floor(detections, floor_recall):
    report = evaluate_detections([(truth(A, B, C, D), dets(*detections))], operating_threshold=0.5)
    assert report.recall_at_score_floor == pytest.approx(floor_recall)


@pytest.mark.parametrize("threshold, recall", [(0.05, 1.0), (0.25, 0.75), (0.5, 0.5), (0.95, 0.0)])
def test_recall_at_operating_threshold(threshold, recall):
    pairs = [(truth(A, B, C, D), dets((A, 0.9), (B, 0.6), (C, 0.3), (D, 0.1), (FAR, 0.99)))]
    assert evaluate_detections(pairs, operating_threshold=threshold).recall_at_operating_threshold == pytest.approx(
        recall
    )


def test_each_gt_matched_once_in_score_order():
    near_a = [A[0] + 2, A[1], A[2] + 2, A[3]]
    # the higher-scoring detection takes A; the second finds no free GT and is a false positive
    report = evaluate_detections([(truth(A), dets((near_a, 0.9), (A, 0.8)))], operating_threshold=0.5)
    assert report.ap50 == pytest.approx(1.0)
    assert report.detections == 2


def test_landmark_nme_normalised_by_box_size():
    gt_points = np.array([[[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]]], dtype=float)
    det_points = gt_points + [3, 4]  # 5 px off everywhere; GT box 40 px -> 0.125
    gt_points_partial = gt_points.copy()
    gt_points_partial[0, 2:] = np.nan  # only the eyes known
    for known in (gt_points, gt_points_partial):
        report = evaluate_detections(
            [(truth(A, landmarks=known), dets((A, 0.9), landmarks=det_points))], operating_threshold=0.5
        )
        assert report.landmark_nme == pytest.approx(5 / 40)
        assert report.landmark_pairs == 1


def test_landmark_nme_absent_without_gt_landmarks():
    points = np.zeros((1, 5, 2))
    report = evaluate_detections([(truth(A), dets((A, 0.9), landmarks=points))], operating_threshold=0.5)
    assert report.landmark_nme is None and report.landmark_pairs == 0


def test_interpolated_ap_edges():
    assert math.isnan(interpolated_ap(np.array([0.5]), np.array([False]), n_positive=0))
    assert interpolated_ap(np.zeros(0), np.zeros(0, dtype=bool), n_positive=3) == 0.0
