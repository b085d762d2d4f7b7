"""The detection stage: model validation at load, typed faces in frame pixels, no download ever.

Most tests use a randomly initialised Ultralytics pose model built from the yolov8n-pose YAML (no weights needed);
the shipped-model tests skip until ``models/detector/*.pt`` exists.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from vigil.errors import ModelError, VigilError
from vigil.types import Face

LFW_SINGLE_FACE = [
    "Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
    "George_W_Bush/George_W_Bush_0001.jpg",
    "Serena_Williams/Serena_Williams_0001.jpg",
    "Colin_Powell/Colin_Powell_0001.jpg",
]
WIDER_CROWD_IMAGE = "2_Demonstration_Demonstrators_2_378.jpg"  # 72 labelled faces, 58 of them >= 16 px


def write_random_model(path: Path, num_keypoints: int | None) -> Path:
    """Save a random-init yolov8n pose model with ``num_keypoints`` (a detect model when None) as an Ultralytics .pt."""
    from vigil.ultralytics_offline import configure_ultralytics_offline

    configure_ultralytics_offline()
    import torch
    import ultralytics
    import yaml
    from ultralytics.nn.tasks import DetectionModel, PoseModel

    torch.manual_seed(0)
    cfg_dir = Path(ultralytics.__file__).parent / "cfg" / "models" / "v8"
    name = "yolov8-pose.yaml" if num_keypoints else "yolov8.yaml"
    cfg = yaml.safe_load((cfg_dir / name).read_text())
    cfg.update(nc=1, scale="n")
    if num_keypoints:
        cfg["kpt_shape"] = [num_keypoints, 3]
        model = PoseModel(cfg, ch=3, nc=1, verbose=False)
    else:
        model = DetectionModel(cfg, ch=3, nc=1, verbose=False)
    model.names = {0: "face"}
    torch.save({"model": model, "train_args": {"task": "pose" if num_keypoints else "detect"}}, path)
    return path


@pytest.fixture(scope="module")
def random_models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "five": write_random_model(folder / "face5.pt", 5),
        "seventeen": write_random_model(folder / "person17.pt", 17),
        "detect": write_random_model(folder / "detect.pt", None),
    }


@pytest.fixture(scope="module")
def random_detector(random_models):
    from vigil.detect import FaceDetector

    # conf 0 keeps (nearly) every anchor of the random model, so boxes spread over the whole frame
    return FaceDetector(
        random_models["five"], imgsz=160, conf_threshold=0.0, nms_iou=0.5, device="cpu", batch_size=2, max_det=300
    )


def test_random_pose_model_returns_typed_faces_in_frame_pixels(random_detector):
    rng = np.random.default_rng(0)
    frames = [
        rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8),
        rng.integers(0, 255, (90, 50, 3), dtype=np.uint8),
        np.zeros((300, 300, 3), np.uint8),
    ]
    results = random_detector.detect(frames)
    assert len(results) == len(frames)
    for frame, faces in zip(frames, results):
        height, width = frame.shape[:2]
        assert faces, "conf 0 must keep some boxes"
        for face in faces:
            assert isinstance(face, Face)
            assert face.box.shape == (4,) and face.box.dtype == np.float32
            assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
            assert 0.0 <= face.score <= 1.0
            assert 0 <= face.box[0] <= face.box[2] <= width and 0 <= face.box[1] <= face.box[3] <= height
            assert (face.landmarks[:, 0] >= 0).all() and (face.landmarks[:, 0] <= width).all()
            assert (face.landmarks[:, 1] >= 0).all() and (face.landmarks[:, 1] <= height).all()
        scores = [face.score for face in faces]
        assert scores == sorted(scores, reverse=True)
    # coordinates are in the 1280x720 frame, not in the 160 px network input
    assert max(face.box[2] for face in results[0]) > 320


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # Ultralytics' export tracing, harmless
def test_onnx_export_runs_through_the_same_detector(random_models, tmp_path):
    import shutil

    from ultralytics import YOLO

    from vigil.detect import FaceDetector

    source = shutil.copy(random_models["five"], tmp_path / "face5.pt")
    onnx_path = Path(YOLO(str(source)).export(format="onnx", imgsz=160, dynamic=False, simplify=False, verbose=False))
    detector = FaceDetector(onnx_path, imgsz=160, conf_threshold=0.0, device="cpu", max_det=50)
    faces = detector.detect([np.zeros((720, 1280, 3), np.uint8)])[0]
    assert faces and all(face.landmarks.shape == (5, 2) for face in faces)
    assert all(0 <= face.box[0] <= face.box[2] <= 1280 and 0 <= face.box[1] <= face.box[3] <= 720 for face in faces)


def test_empty_batch_and_bad_frame(random_detector):
    assert random_detector.detect([]) == []
    with pytest.raises(VigilError, match="frame 1"):
        random_detector.detect([np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.uint8)])


@pytest.mark.parametrize(
    "key, message",
    [
        ("seventeen", "pose model has 17 keypoints, need 5"),
        ("detect", "is a 'detect' model, need a pose model with 5 keypoints"),
    ],
)
def test_wrong_model_kind_is_one_line_model_error(random_models, key, message):
    from vigil.detect import FaceDetector

    with pytest.raises(ModelError) as info:
        FaceDetector(random_models[key], device="cpu")
    text = str(info.value)
    assert message in text and str(random_models[key]) in text and "\n" not in text


class _NoNetwork:
    """Fails the test on any attempt to open a network connection."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("network access attempted")


@pytest.mark.parametrize("name", ["yolov8n-pose.pt", "yolo11n-pose.pt", "missing/face.pt"])
def test_missing_model_is_one_line_error_without_download(tmp_path, monkeypatch, name):
    from vigil.detect import FaceDetector

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(socket, "create_connection", _NoNetwork)
    monkeypatch.setattr(socket.socket, "connect", _NoNetwork)
    with pytest.raises(ModelError) as info:
        FaceDetector(name, device="cpu")
    assert str(info.value) == f"{name}: detector model file not found"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, suffix", [(b"not a checkpoint" * 8, ".pt"), (b"", ".pt"), (b"hello", ".txt")])
def test_corrupt_or_foreign_file_is_one_line_model_error(tmp_path, content, suffix):
    from vigil.detect import FaceDetector

    path = tmp_path / f"model{suffix}"
    path.write_bytes(content)
    with pytest.raises(ModelError) as info:
        FaceDetector(path, device="cpu")
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_offline_configuration():
    import os

    from vigil.ultralytics_offline import configure_ultralytics_offline

    configure_ultralytics_offline()
    from ultralytics.utils import SETTINGS, events, is_online

    assert os.environ["YOLO_OFFLINE"] == "1"
    assert events.events.enabled is False
    assert SETTINGS["sync"] is False
    assert is_online() is False


@pytest.mark.parametrize("widths, min_px, kept", [([10, 20, 30], 20, [20, 30]), ([5], 4, [5]), ([], 20, [])])
def test_filter_min_size(widths, min_px, kept):
    from vigil.detect import filter_min_size

    faces = [
        Face(box=np.array([0, 0, w, w], np.float32), score=0.9, landmarks=np.zeros((5, 2), np.float32)) for w in widths
    ]
    assert [face.width_px for face in filter_min_size(faces, min_px)] == kept


def test_device_resolution():
    import torch

    from vigil.detect import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(VigilError, match="detector.device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(VigilError, match="no CUDA"):
            resolve_device("cuda")


def _shipped_model() -> Path:
    """The manifest's default detector (the runtime's)."""
    from vigil.models import ModelRegistry

    return ModelRegistry().default("detector").path


@pytest.fixture(scope="module")
def shipped_detector():
    from vigil.config import DetectorConfig
    from vigil.detect import FaceDetector
    from vigil.models import ModelRegistry

    config = DetectorConfig()
    spec = ModelRegistry().resolve("detector", _shipped_model())
    imgsz = config.imgsz or max(spec.input_size)
    return FaceDetector(
        spec.path,
        imgsz=imgsz,
        conf_threshold=config.conf_threshold,
        nms_iou=config.nms_iou,
        device="cpu",
        model_format=spec.format,
    )


def test_shipped_model_finds_the_single_face_in_lfw_images(shipped_detector, shared_data):
    import cv2

    lfw = shared_data("lfw")
    images = [cv2.imread(str(lfw / name)) for name in LFW_SINGLE_FACE]
    for name, faces in zip(LFW_SINGLE_FACE, shipped_detector.detect(images)):
        assert len(faces) == 1, f"{name}: {len(faces)} faces"
        x1, y1, x2, y2 = faces[0].box
        assert x1 < 125 < x2 and y1 < 125 < y2, f"{name}: the face is not at the image centre"


def test_shipped_model_finds_many_faces_in_a_crowd(shipped_detector, shared_data):
    import cv2

    image = cv2.imread(str(shared_data("wider200", "images", "val", WIDER_CROWD_IMAGE)))
    assert len(shipped_detector.detect([image])[0]) >= 20


def test_tiling_finds_small_faces_in_a_large_frame_that_letterboxing_loses(shipped_detector, shared_data):
    """Four LFW photos shrunk to 80 px (faces about 30 px) on a 1920x1080 frame, one across a tile cut: the whole
    frame at the model's input size shrinks them to ~8-10 px, where some are lost; with 480 px tiles each is found once,
    where it was put."""
    import cv2

    from vigil.detect import FaceDetector
    from vigil.tiling import TileSpec

    lfw = shared_data("lfw")
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    corners = [(200, 150), (440, 600), (1000, 300), (1700, 900)]  # (x, y); the second spans the cut at x = 480
    for name, (x, y) in zip(LFW_SINGLE_FACE, corners):
        frame[y : y + 80, x : x + 80] = cv2.resize(cv2.imread(str(lfw / name)), (80, 80), interpolation=cv2.INTER_AREA)
    whole_only = shipped_detector.detect_one(frame)
    tiled = FaceDetector(
        shipped_detector.model_path,
        imgsz=shipped_detector.imgsz,
        conf_threshold=shipped_detector.conf_threshold,
        nms_iou=shipped_detector.nms_iou,
        device="cpu",
        tiling=TileSpec(tile_px=480, overlap_px=128),
    )
    faces = tiled.detect_one(frame)
    assert len(whole_only) < len(corners)  # measured: vigil-face-n-cpu480 none, vigil-face-v5n-cctv 2 of 4
    assert len(faces) == len(corners)
    centres = sorted(((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces)
    for (cx, cy), (x, y) in zip(centres, sorted(corners)):
        assert abs(cx - (x + 40)) < 12 and abs(cy - (y + 40)) < 16
