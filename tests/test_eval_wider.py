"""`vigil eval wider`: YOLO label reading, the evaluation loop with an oracle detector, the CLI's JSON report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from vigil.errors import VigilError
from vigil.eval.detection_metrics import box_sizes
from vigil.eval.wider import evaluate_detector, read_labels, split_images
from vigil.types import Face

# image name -> (fill grey level, label rows); images are 200 wide x 100 high
DATASET = {
    "a.jpg": (40, ["0 0.25 0.5 0.2 0.4", "0 0.75 0.5 0.1 0.2"]),
    "b.png": (120, ["0 0.5 0.5 0.3 0.6 0.45 0.4 2 0.55 0.4 2 0.5 0.5 2 0.46 0.6 2 0.54 0.6 0"]),
    "c.jpg": (200, None),  # no label file: background image
}
WIDTH, HEIGHT = 200, 100


@pytest.fixture
def dataset(tmp_path) -> Path:
    import cv2

    images, labels = tmp_path / "images" / "val", tmp_path / "labels" / "val"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for name, (grey, rows) in DATASET.items():
        cv2.imwrite(str(images / name), np.full((HEIGHT, WIDTH, 3), grey, np.uint8))
        if rows is not None:
            (labels / name).with_suffix(".txt").write_text("\n".join(rows) + "\n")
    (images / "broken.jpg").write_bytes(b"not an image")
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("val: images/val\nnames: {0: face}\n")
    return data_yaml


def oracle(data_yaml: Path, shift_px: float = 0.0):
    """A detect function that returns the labelled faces (recognised by the image's grey level), landmarks included."""
    truths = {}
    for item in split_images(data_yaml):
        grey = next((g for name, (g, _) in DATASET.items() if name == item.image_path.name), None)
        if grey is not None:
            truths[grey] = read_labels(item.label_path, WIDTH, HEIGHT)

    def detect(image: np.ndarray) -> list[Face]:
        truth = truths[int(round(float(image.mean())))]
        points = truth.landmarks if truth.landmarks is not None else np.zeros((len(truth.boxes), 5, 2))
        return [
            Face(box=(box + shift_px).astype(np.float32), score=0.9, landmarks=np.nan_to_num(lm + shift_px).astype(np.float32))
            for box, lm in zip(truth.boxes, points)
        ]

    return detect


@pytest.mark.parametrize("relative", [False, True], ids=["absolute yaml path", "relative yaml path"])
def test_split_images_pairs_images_with_label_paths(dataset, relative, monkeypatch):
    if relative:  # as in the documented command: --data ../shared/data/wider200/data.yaml
        monkeypatch.chdir(dataset.parent / "images")
    items = split_images(Path("../data.yaml") if relative else dataset)
    assert [item.image_path.name for item in items] == ["a.jpg", "b.png", "broken.jpg", "c.jpg"]
    assert items[0].label_path == dataset.parent / "labels" / "val" / "a.txt"


def test_path_key_is_relative_to_the_yaml(tmp_path, dataset):
    other = tmp_path / "elsewhere" / "data.yaml"
    other.parent.mkdir()
    other.write_text("path: ../\nval: images/val\n")
    assert [item.image_path.name for item in split_images(other)][:2] == ["a.jpg", "b.png"]


@pytest.mark.parametrize(
    "text, message",
    [("val: images/val\n", "data file not found"), ("train: x\n", "no 'val' split"), ("val: nowhere\n", "neither a folder")],
)
def test_bad_data_yaml_is_one_line_error(tmp_path, text, message):
    path = tmp_path / "data.yaml"
    if "not found" not in message:
        path.write_text(text)
    with pytest.raises(VigilError, match=message):
        split_images(path)


def test_read_labels_boxes_and_keypoints(dataset):
    labels = dataset.parent / "labels" / "val"
    plain = read_labels(labels / "a.txt", WIDTH, HEIGHT)
    np.testing.assert_allclose(plain.boxes, [[30, 30, 70, 70], [140, 40, 160, 60]])
    assert plain.landmarks is None
    pose = read_labels(labels / "b.txt", WIDTH, HEIGHT)
    np.testing.assert_allclose(pose.landmarks[0, :4], [[90, 40], [110, 40], [100, 50], [92, 60]])
    assert np.isnan(pose.landmarks[0, 4]).all()  # visibility 0 -> unknown
    assert read_labels(labels / "absent.txt", WIDTH, HEIGHT).boxes.shape == (0, 4)


@pytest.mark.parametrize("row, message", [("0 0.5 0.5 0.1", "expected 5, 15 or 20 values, got 4"), ("0 a b c d", "not a row of numbers")])
def test_bad_label_row_names_file_and_line(tmp_path, row, message):
    path = tmp_path / "x.txt"
    path.write_text(f"0 0.5 0.5 0.1 0.1\n{row}\n")
    with pytest.raises(VigilError, match=f"x.txt:2: {message}"):
        read_labels(path, WIDTH, HEIGHT)


def test_oracle_detector_scores_perfectly_and_unreadable_image_is_skipped(dataset):
    result = evaluate_detector(oracle(dataset), dataset, operating_threshold=0.5)
    assert result.images == 3
    assert [Path(p).name for p in result.unreadable] == ["broken.jpg"]
    assert result.report.boxes == 3
    assert result.report.ap50 == pytest.approx(1.0)
    assert result.report.ap50_95 == pytest.approx(1.0)
    assert result.report.recall_at_operating_threshold == pytest.approx(1.0)
    assert result.report.landmark_nme == pytest.approx(0.0)
    assert result.report.landmark_pairs == 1


def test_shifted_oracle_loses_strict_iou_and_landmark_accuracy(dataset):
    result = evaluate_detector(oracle(dataset, shift_px=2.0), dataset, operating_threshold=0.5)
    assert result.report.ap50 == pytest.approx(1.0)
    assert result.report.ap50_95 < 1.0
    # landmarks 2 px off in x and y on a 60 x 60 face: sqrt(8) / 60
    assert result.report.landmark_nme == pytest.approx(np.sqrt(8) / 60)


def test_run_cli_writes_the_report_keys(dataset, tmp_path):
    from test_detect import write_random_model

    from vigil.eval.wider import run_cli

    model = write_random_model(tmp_path / "face5.pt", 5)
    out = tmp_path / "out" / "wider.json"
    args = argparse.Namespace(data=dataset, model=model, imgsz=160, json=out, device="cpu")
    assert run_cli(args) == 0
    report = json.loads(out.read_text())
    for key in ("ap50", "ap50_95", "ap50_by_size", "recall_at_operating_threshold", "operating_threshold", "images", "boxes", "model", "imgsz", "seconds"):
        assert key in report, key
    assert set(report["ap50_by_size"]) == {"lt16", "16_32", "32_64", "gt64"}
    assert report["images"] == 3 and report["boxes"] == 3 and report["imgsz"] == 160


def test_wider200_labels_match_the_manifest(shared_data):
    import cv2

    data_yaml = shared_data("wider200", "data.yaml")
    items = split_images(data_yaml)
    assert len(items) == 200
    first = cv2.imread(str(items[0].image_path))
    assert first.shape[:2] == (416, 416)
    sizes = np.concatenate([box_sizes(read_labels(item.label_path, 416, 416).boxes) for item in items])
    assert len(sizes) == 4370
    assert [(sizes < 16).sum(), ((sizes >= 16) & (sizes < 32)).sum(), ((sizes >= 32) & (sizes < 64)).sum(), (sizes >= 64).sum()] == [3498, 593, 209, 70]
