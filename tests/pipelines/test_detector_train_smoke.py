"""One-epoch CPU smoke training of the face detector on a tiny synthetic dataset, and weight selection.

No shared data needed: the dataset is drawn in the test (cartoon faces with exact landmarks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vigil.types import Face

SIZE = 160


def draw_face(img: np.ndarray, cx: float, cy: float, w: float, rng: np.random.Generator) -> Face:
    """A cartoon face (skin ellipse, dark eyes, nose dot, mouth line) and its exact box and landmarks."""
    import cv2

    h = 1.25 * w
    skin = tuple(int(v) for v in rng.uniform(120, 230, 3))
    cv2.ellipse(img, (int(cx), int(cy)), (int(w / 2), int(h / 2)), 0, 0, 360, skin, -1)
    lms = np.array(
        [
            [cx - 0.2 * w, cy - 0.1 * h],
            [cx + 0.2 * w, cy - 0.1 * h],
            [cx, cy + 0.08 * h],
            [cx - 0.17 * w, cy + 0.25 * h],
            [cx + 0.17 * w, cy + 0.25 * h],
        ]
    )
    for x, y in lms[:2]:
        cv2.circle(img, (int(x), int(y)), max(1, int(w / 12)), (20, 20, 20), -1)
    cv2.circle(img, (int(lms[2, 0]), int(lms[2, 1])), max(1, int(w / 20)), (60, 60, 120), -1)
    cv2.line(img, tuple(int(v) for v in lms[3]), tuple(int(v) for v in lms[4]), (40, 40, 160), max(1, int(w / 16)))
    box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)
    return Face(box=box, score=1.0, landmarks=lms.astype(np.float32))


def make_dataset(root: Path, n_train: int = 8, n_val: int = 2) -> Path:
    import cv2

    from pipelines.detector.build_dataset import label_lines, write_data_yaml

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            img = np.full((SIZE, SIZE, 3), rng.integers(40, 200), np.uint8)
            faces = [
                draw_face(img, 40 + 80 * (k % 2), 45 + 70 * (k // 2), rng.uniform(20, 40), rng)
                for k in range(int(rng.integers(1, 5)))
            ]
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), img)
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(label_lines(faces, SIZE, SIZE)) + "\n")
    return write_data_yaml(root)


def smoke_train(data: Path, runs: Path, name: str, *init: str) -> Path:
    from pipelines.detector import train

    return train.main(
        [
            "--data",
            str(data),
            *init,
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--imgsz",
            str(SIZE),
            "--batch",
            "4",
            "--workers",
            "0",
            "--project",
            str(runs),
            "--name",
            name,
            "--set",
            "conf=0.25",
            "max_det=50",
        ]
    )


def test_one_epoch_cpu_training_writes_a_small_5_keypoint_model(tmp_path):
    data = make_dataset(tmp_path / "data")
    run_dir = smoke_train(data, tmp_path / "runs", "smoke", "--route", "scratch")
    last = run_dir / "weights" / "last.pt"
    assert last.is_file()
    assert last.stat().st_size <= 8 * 1024 * 1024
    from ultralytics import YOLO

    model = YOLO(str(last))
    assert model.task == "pose"
    assert list(model.model.model[-1].kpt_shape) == [5, 3]
    assert model.names == {0: "face"}

    # Continuing from a checkpoint that remembers another task (the transfer source is a 'detect' model)
    # must still train the pose task: Ultralytics would otherwise take the checkpoint's task.
    import torch

    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    checkpoint["train_args"]["task"] = "detect"
    detect_tagged = tmp_path / "detect_tagged.pt"
    torch.save(checkpoint, detect_tagged)
    continued = smoke_train(data, tmp_path / "runs", "continued", "--init", str(detect_tagged))
    trained = torch.load(continued / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert trained["train_args"]["task"] == "pose"
    assert YOLO(str(continued / "weights" / "last.pt")).task == "pose"


def test_weight_selection_copies_a_consistent_channel_subset():
    from pipelines.detector.ultralytics_offline import configure_offline

    configure_offline()
    from ultralytics.nn.tasks import DetectionModel, PoseModel

    from pipelines.detector.train import CONFIG_DIR
    from pipelines.detector.weight_select import select_weights

    cfg_s = {**__import__("yaml").safe_load((CONFIG_DIR / "yolov8n-face.yaml").read_text()), "scale": "s"}
    cfg_s["scales"] = {"s": [0.33, 0.50, 1024]}
    cfg_s["head"][-1] = [[15, 18, 21], 1, "Detect", ["nc"]]
    cfg_s["nc"] = 2
    wide = DetectionModel(cfg_s, verbose=False)
    narrow = PoseModel(str(CONFIG_DIR / "yolov8n-face.yaml"), verbose=False)
    report = select_weights(narrow, wide)
    assert report.fraction > 0.9
    first_wide, first_narrow = wide.model[0].conv.weight, narrow.model[0].conv.weight
    assert (first_narrow == first_wide[:16]).all()  # first layer: first 16 of 32 filters, all 3 inputs
    # C2f layer 2: cv1 output keeps the first half of each of its two chunks (chunks of 32 -> 16)
    cv1_wide, cv1_narrow = wide.model[2].cv1.conv.weight, narrow.model[2].cv1.conv.weight
    assert (cv1_narrow[16:] == cv1_wide[32:48, :32]).all()
