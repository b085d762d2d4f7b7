"""The YOLOv5-face fine-tune: anchor matching with a known answer, loss pieces, augmentation geometry, and a one-epoch
smoke run (checkpoints, early-stop evaluation, resume, export through the runtime)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.detector.v5data import crop_window, cut_faces, flip_lr
from pipelines.detector.v5loss import YoloFaceLoss, bbox_ciou, match_level, targets_tensor, wing_loss


def _face_row(cx: float, cy: float, w: float, h: float) -> np.ndarray:
    points = [cx - w / 4, cy - h / 6, cx + w / 4, cy - h / 6, cx, cy, cx - w / 5, cy + h / 4, cx + w / 5, cy + h / 4]
    return np.asarray([cx, cy, w, h, *points, 1, 1, 1, 1, 1], np.float32)


def test_match_level_known_answer():
    """A 20 x 25 px face centred at (100.3, 60.2) on a 640 canvas, stride 8: grid (12.54, 7.53). Anchors (8, 10) and
    (13, 16) are within 4x of it, (4, 5) is not; its cell (12, 7) plus the right (13, 7) and lower (12, 8) neighbours,
    whose centres are nearer than the left and upper ones."""
    targets = targets_tensor([_face_row(100.3, 60.2, 20, 25)[None]])
    anchors = torch.tensor([[4, 5], [8, 10], [13, 16]], dtype=torch.float32) / 8
    m = match_level(targets, anchors, (80, 80), 8.0, 4.0)
    cells = sorted(zip(m.anchor.tolist(), m.gx.tolist(), m.gy.tolist()))
    assert cells == sorted((a, x, y) for a in (1, 2) for x, y in ((12, 7), (13, 7), (12, 8)))
    for x, y, box in zip(m.gx.tolist(), m.gy.tolist(), m.box):
        np.testing.assert_allclose(box.numpy(), [12.5375 - x, 7.525 - y, 2.5, 3.125], atol=1e-4)
    nose = m.landmarks[:, 4:6].numpy()  # the nose is at the face centre: relative to each matched cell
    np.testing.assert_allclose(nose, m.box[:, :2].numpy(), atol=1e-4)


def test_match_level_skips_faces_far_from_every_anchor():
    targets = targets_tensor([_face_row(300, 300, 300, 300)[None]])
    anchors = torch.tensor([[4, 5], [8, 10], [13, 16]], dtype=torch.float32) / 8
    assert len(match_level(targets, anchors, (80, 80), 8.0, 4.0).image) == 0


def test_loss_pieces():
    boxes = torch.tensor([[5.0, 5.0, 2.0, 3.0]])
    assert float(bbox_ciou(boxes, boxes)) == pytest.approx(1.0, abs=1e-5)
    assert float(bbox_ciou(boxes, torch.tensor([[8.0, 5.0, 2.0, 3.0]]))) < 0
    zeros = torch.zeros(2, 10)
    assert float(wing_loss(zeros, zeros, torch.ones(2, 10))) == 0.0
    assert float(wing_loss(zeros, torch.ones(2, 10) * 5, torch.zeros(2, 10))) == 0.0  # invisible points cost nothing


def test_loss_falls_when_the_prediction_is_right():
    """Raw heads that say 'nothing anywhere' cost more than the same heads with the matched anchors switched on."""
    targets = targets_tensor([_face_row(100.3, 60.2, 20, 25)[None]])
    heads = [torch.full((1, 3, 80 // k, 80 // k, 16), -8.0) for k in (1, 2, 4)]
    loss = YoloFaceLoss()
    empty, _ = loss(heads, targets)
    m = match_level(targets, loss.anchors_grid[0], (80, 80), 8.0, 4.0)
    heads[0][m.image, m.anchor, m.gy, m.gx, 4] = 8.0
    heads[0][m.image, m.anchor, m.gy, m.gx, 15] = 8.0
    switched_on, parts = loss(heads, targets)
    assert float(switched_on) < float(empty) and set(parts) == {"box", "obj", "cls", "landmark"}


def test_flip_twice_is_identity_and_swaps_eye_slots():
    canvas = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    faces = _face_row(20, 30, 16, 20)[None]
    flipped_canvas, flipped = flip_lr(canvas, faces)
    assert flipped[0, 0] == pytest.approx(44) and flipped[0, 4] < flipped[0, 6]  # image-left eye still first
    back_canvas, back = flip_lr(flipped_canvas, flipped)
    np.testing.assert_array_equal(back_canvas, canvas)
    np.testing.assert_allclose(back, faces, atol=1e-5)


def test_cut_faces_drops_mostly_cut_faces_and_paints_them():
    canvas = np.zeros((100, 100, 3), np.uint8)
    boxes = np.asarray([[10, 10, 30, 30], [90, 40, 130, 80]], np.float32)  # the second is 75 % outside
    points = np.full((2, 5, 2), np.nan, np.float32)
    rows = cut_faces(boxes, points, np.asarray([0, 0, 100, 100], np.float32), canvas)
    assert len(rows) == 1 and rows[0, 14:19].sum() == 0
    assert canvas[50, 95].tolist() == [114, 114, 114]


def test_crop_window_keeps_faces_in_window_pixels():
    canvas = np.zeros((640, 640, 3), np.uint8)
    faces = _face_row(400, 300, 24, 30)[None]
    window, kept = crop_window(canvas, faces, 320, np.random.default_rng(1))
    assert window.shape == (320, 320, 3) and len(kept) == 1
    assert 0 < kept[0, 0] < 320 and kept[0, 2] == pytest.approx(24, abs=1e-3)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Four LFW photos labelled by the source model (through vigil's runtime), as a train+val data YAML."""
    import cv2
    import yaml
    from conftest import require_data

    from pipelines.detector.build_dataset import label_lines
    from vigil.detect import FaceDetector

    lfw = require_data("lfw")
    detector = FaceDetector(require_data("weights", "yolov5n-0.5.onnx"), imgsz=640, device="cpu")
    root = tmp_path_factory.mktemp("tiny")
    for kind in ("images", "labels"):
        (root / kind / "train").mkdir(parents=True)
    for path in sorted(lfw.glob("A*/*_0001.jpg"))[:4]:
        image = cv2.imread(str(path))
        cv2.imwrite(str(root / "images" / "train" / path.name), image)
        lines = label_lines(detector.detect_one(image), image.shape[1], image.shape[0])
        (root / "labels" / "train" / f"{path.stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/train"}))
    return root / "data.yaml"


def test_one_epoch_smoke_fine_tune_checkpoints_resumes_and_exports(tiny_dataset, tmp_path):
    from pipelines.detector.finetune import main
    from vigil.detect import FaceDetector

    run = tmp_path / "run"
    common = [
        "--batch",
        "2",
        "--imgsz",
        "256",
        "--canvas",
        "128",
        "--eval-imgsz",
        "256",
        "--eval-every",
        "2",
        "--warmup-steps",
        "1",
    ]
    assert (
        main(
            [
                "--route",
                "full",
                "--data",
                str(tiny_dataset),
                "--val-data",
                str(tiny_dataset),
                "--out",
                str(run),
                "--steps",
                "2",
                *common,
            ]
        )
        == 0
    )
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    evals = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if "eval" in line]
    assert evals and evals[0]["step"] == 2 and 0.0 <= evals[0]["eval"]["ap50"] <= 1.0
    assert main(["--resume", str(run), "--steps", "3"]) == 0
    assert torch.load(run / "last.pt", weights_only=False)["state"]["step"] == 3
    onnx_path = tmp_path / "tuned.onnx"
    assert main(["--export-from", str(run / "best.pt"), "--out", str(onnx_path)]) == 0
    detector = FaceDetector(onnx_path, imgsz=256, conf_threshold=0.3, device="cpu")
    assert detector.family == "yolov5-face"
    found = detector.detect([np.zeros((120, 200, 3), np.uint8), np.zeros((90, 60, 3), np.uint8)])
    assert len(found) == 2 and all(isinstance(faces, list) for faces in found)


def test_head_route_trains_only_the_head(tiny_dataset, tmp_path):
    from pipelines.detector.finetune import ROUTES, build
    from vigil.paths import data_path

    source = data_path("weights", "yolov5n-0.5.onnx")
    if not source.is_file():
        pytest.skip(f"{source} not found")
    model, _, optimizer, _ = build(ROUTES["head"], source, None)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in model.head_parameters()}


def test_distillation_sets_the_objectness_target_where_no_face_is_matched():
    """Zero soft targets are the plain loss; soft targets equal to the heads' own objectness leave the unmatched
    anchors without gradient (nothing to unlearn there), where the plain loss pushes them down."""
    targets = targets_tensor([_face_row(100.3, 60.2, 20, 25)[None]])
    loss = YoloFaceLoss()

    def gradient_far_from_the_face(soft) -> float:
        heads = [torch.full((1, 3, 80 // k, 80 // k, 16), -3.0, requires_grad=True) for k in (1, 2, 4)]
        total, _ = loss(heads, targets, soft(heads))
        total.backward()
        return float(heads[0].grad[0, 0, 60, 60, 4])

    plain = gradient_far_from_the_face(lambda heads: None)
    assert gradient_far_from_the_face(lambda heads: [torch.zeros_like(h[..., 4]) for h in heads]) == pytest.approx(
        plain
    )
    assert plain > 0
    assert gradient_far_from_the_face(lambda heads: [h[..., 4].sigmoid() for h in heads]) == pytest.approx(
        0.0, abs=1e-9
    )
