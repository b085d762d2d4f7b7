"""`vigil eval wider`: YOLO label reading, the evaluation loop with an oracle detector, the CLI's JSON report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from vigil.errors import VigilError
from vigil.eval.detection_metrics import ImageTruth, box_sizes
from vigil.eval.wider import MosaicSpec, evaluate_detector, mosaic_frame, parse_mosaic, read_labels, split_images
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
            Face(
                box=(box + shift_px).astype(np.float32),
                score=0.9,
                landmarks=np.nan_to_num(lm + shift_px).astype(np.float32),
            )
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
    [
        ("val: images/val\n", "data file not found"),
        ("train: x\n", "no 'val' split"),
        ("val: nowhere\n", "neither a folder"),
    ],
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


@pytest.mark.parametrize(
    "row, message", [("0 0.5 0.5 0.1", "expected 5, 15 or 20 values, got 4"), ("0 a b c d", "not a row of numbers")]
)
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
    for key in (
        "ap50",
        "ap50_95",
        "ap50_by_size",
        "recall_at_operating_threshold",
        "operating_threshold",
        "images",
        "boxes",
        "model",
        "imgsz",
        "seconds",
    ):
        assert key in report, key
    assert set(report["ap50_by_size"]) == {"lt16", "16_32", "32_64", "gt64"}
    assert report["images"] == 3 and report["boxes"] == 3 and report["imgsz"] == 160


def test_run_cli_with_tiles_and_mosaic_records_the_setup(dataset, tmp_path):
    from test_detect import write_random_model

    from vigil.eval.wider import run_cli

    model = write_random_model(tmp_path / "face5.pt", 5)
    out = tmp_path / "wider_tiled.json"
    args = argparse.Namespace(
        data=dataset, model=model, imgsz=160, json=out, device="cpu", tile_px=128, tile_overlap_px=32, mosaic="2x1"
    )
    assert run_cli(args) == 0
    report = json.loads(out.read_text())
    assert (report["tile_px"], report["tile_overlap_px"], report["mosaic"]) == (128, 32, "2x1")
    assert (report["images"], report["frames"], report["boxes"]) == (3, 2, 3)


@pytest.mark.parametrize("tile_px, overlap_px", [(128, 65), (32, 0), (128, -1)])
def test_run_cli_rejects_bad_tiles_before_loading_a_model(dataset, tmp_path, tile_px, overlap_px):
    from vigil.eval.wider import run_cli

    args = argparse.Namespace(
        data=dataset,
        model=tmp_path / "absent.pt",
        imgsz=160,
        json=tmp_path / "x.json",
        device="cpu",
        tile_px=tile_px,
        tile_overlap_px=overlap_px,
        mosaic=None,
    )
    with pytest.raises(VigilError, match="--tile-px"):
        run_cli(args)


@pytest.mark.parametrize(
    "text, expected", [("4x2", (4, 2)), ("1X1", (1, 1)), ("4", None), ("0x2", None), ("axb", None), ("17x1", None)]
)
def test_parse_mosaic(text, expected):
    if expected is None:
        with pytest.raises(VigilError, match="--mosaic"):
            parse_mosaic(text)
    else:
        spec = parse_mosaic(text)
        assert (spec.columns, spec.rows) == expected


def test_mosaic_frame_places_images_in_cells_and_shifts_their_labels():
    small = np.full((50, 80, 3), 10, np.uint8)
    large = np.full((100, 120, 3), 20, np.uint8)
    points = np.arange(10, dtype=float).reshape(1, 5, 2)
    truths = [
        ImageTruth(boxes=np.array([[1.0, 2, 11, 12]])),
        ImageTruth(boxes=np.array([[5.0, 5, 25, 25]]), landmarks=points),
    ]
    frame, truth = mosaic_frame(
        [small, large, small], truths + [ImageTruth(boxes=np.zeros((0, 4)))], MosaicSpec(columns=2, rows=2)
    )
    assert frame.shape == (200, 240, 3)  # 2 x 2 cells of the largest image, 100 x 120
    assert frame[0, 0, 0] == 10 and frame[0, 120, 0] == 20 and frame[100, 0, 0] == 10
    assert frame[60, 0, 0] == 0 and frame[150, 200, 0] == 0  # below the small image; the unfilled cell
    np.testing.assert_allclose(truth.boxes, [[1, 2, 11, 12], [125, 5, 145, 25]])
    assert np.isnan(truth.landmarks[0]).all()
    np.testing.assert_allclose(truth.landmarks[1], points[0] + [120, 0])
    with pytest.raises(ValueError, match="mosaic"):
        mosaic_frame([small] * 5, [truths[0]] * 5, MosaicSpec(columns=2, rows=2))


def test_oracle_on_mosaic_frames_scores_perfectly(dataset):
    per_image = oracle(dataset)

    def detect_cells(
        frame: np.ndarray,
    ) -> list[Face]:  # the oracle on each filled 200 x 100 cell, shifted into the frame
        faces = []
        for left in range(0, frame.shape[1], WIDTH):
            cell = frame[:, left : left + WIDTH]
            if cell.any():
                faces += [
                    Face(box=f.box + [left, 0, left, 0], score=f.score, landmarks=f.landmarks + [left, 0])
                    for f in per_image(cell)
                ]
        return faces

    result = evaluate_detector(detect_cells, dataset, operating_threshold=0.5, mosaic=MosaicSpec(columns=2, rows=1))
    assert (result.images, result.frames, result.report.boxes) == (3, 2, 3)  # [a, b], [broken, c]
    assert [Path(p).name for p in result.unreadable] == ["broken.jpg"]
    assert result.report.ap50_95 == pytest.approx(1.0)
    assert result.report.landmark_nme == pytest.approx(0.0)


def test_wider200_labels_match_the_manifest(shared_data):
    import cv2

    data_yaml = shared_data("wider200", "data.yaml")
    items = split_images(data_yaml)
    assert len(items) == 200
    first = cv2.imread(str(items[0].image_path))
    assert first.shape[:2] == (416, 416)
    sizes = np.concatenate([box_sizes(read_labels(item.label_path, 416, 416).boxes) for item in items])
    assert len(sizes) == 4370
    assert [
        (sizes < 16).sum(),
        ((sizes >= 16) & (sizes < 32)).sum(),
        ((sizes >= 32) & (sizes < 64)).sum(),
        (sizes >= 64).sum(),
    ] == [3498, 593, 209, 70]
