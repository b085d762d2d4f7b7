"""Face detection stage: an Ultralytics YOLO pose model with 5 keypoints -> typed :class:`vigil.types.Face` objects.

``FaceDetector(model_path, ...).detect(frames)`` takes a list of H x W x 3 uint8 BGR frames (any sizes) and returns,
per frame, the faces with boxes, scores and the 5 landmarks in that frame's pixels (the letterbox is undone by
Ultralytics). The keypoints are taken to be in the vigil 5-point order (eye on image left, eye on image right, nose,
mouth corner on image left, mouth corner on image right): our model is trained that way, and the community
yolov8-face models (RetinaFace/WIDER landmark labels) use the same order.

Nothing here downloads anything: :func:`vigil.ultralytics_offline.configure_ultralytics_offline` switches off
Ultralytics' network features and runs before any Ultralytics model code is imported, and a missing model file is a
:class:`vigil.errors.ModelError` before Ultralytics sees the name (it would otherwise try to download known ``*.pt``
names).
Loading a ``.pt`` unpickles it: point the detector only at model files you trust.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vigil.errors import ModelError, VigilError
from vigil.tiling import TileSpec, detect_tiled
from vigil.types import Face
from vigil.ultralytics_offline import configure_ultralytics_offline

NUM_KEYPOINTS = 5
MODEL_SUFFIXES = (".pt", ".onnx")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda:0`` when torch sees a GPU, else ``cpu``; ``cuda`` -> ``cuda:0``; ``N`` -> ``cuda:N``."""
    import torch

    device = str(device).strip().lower()
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        device = "cuda:0"
    elif device.isdigit():
        device = f"cuda:{device}"
    if not device.startswith("cuda:") or not device[5:].isdigit():
        raise VigilError(f"detector.device: expected auto, cpu, cuda, cuda:N or N, got {device!r}")
    if not torch.cuda.is_available():
        raise VigilError(f"detector.device: {device} requested but torch sees no CUDA GPU (use auto or cpu)")
    return device


def filter_min_size(faces: Sequence[Face], min_face_px: float) -> list[Face]:
    """The faces whose box is at least ``min_face_px`` pixels wide (narrower faces are too small to recognise)."""
    return [face for face in faces if face.width_px >= min_face_px]


class FaceDetector:
    """Batched face detection with an Ultralytics pose model that has 5 keypoints.

    ``imgsz`` is the inference size in pixels (longer side, multiple of 32); ``conf_threshold`` the minimum score in
    [0, 1]; ``nms_iou`` the NMS IoU threshold; ``device`` ``auto | cpu | cuda | cuda:N``; ``batch_size`` the number of
    frames per forward pass; ``max_det`` the most faces kept per frame. Half precision is used on CUDA.
    ``tiling``: also detect on overlapping tiles of each frame and merge (:mod:`vigil.tiling`); None (the default)
    detects on the whole frame only. An instance holds one Ultralytics predictor: call it from one thread (the
    pipeline's inference thread).
    """

    def __init__(
        self,
        model_path: Path | str,
        imgsz: int = 640,
        conf_threshold: float = 0.35,
        nms_iou: float = 0.5,
        device: str = "auto",
        batch_size: int = 8,
        max_det: int = 1000,
        tiling: TileSpec | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.imgsz = int(imgsz)
        self.conf_threshold = float(conf_threshold)
        self.nms_iou = float(nms_iou)
        self.batch_size = max(1, int(batch_size))
        self.max_det = int(max_det)
        self.tiling = tiling
        self.log = logger or logging.getLogger("vigil.detect")
        self.device = resolve_device(device)
        self.half = self.device.startswith("cuda")
        self._yolo = self._load()
        self.log.info(
            "detector %s on %s (imgsz %d, conf %.2f, nms iou %.2f%s)",
            self.model_path.name,
            self.device,
            self.imgsz,
            self.conf_threshold,
            self.nms_iou,
            "" if tiling is None else f", tiles {tiling.tile_px} px overlapping {tiling.overlap_px} px",
        )

    def _load(self):
        path = self.model_path
        if not path.is_file():
            raise ModelError(f"{path}: detector model file not found")
        if path.suffix.lower() not in MODEL_SUFFIXES:
            raise ModelError(f"{path}: expected an Ultralytics pose model (.pt) or its ONNX export (.onnx)")
        configure_ultralytics_offline()
        from ultralytics import YOLO

        try:
            yolo = YOLO(str(path), task="pose")
        except Exception as exc:  # torch/pickle/onnx raise many types for a corrupt or foreign file
            raise ModelError(f"{path}: cannot load as an Ultralytics model ({_first_line(exc)})") from None
        if path.suffix.lower() == ".pt":
            self._check_pose(yolo.task, getattr(yolo.model, "kpt_shape", None) or _yaml_kpt_shape(yolo.model))
        else:
            self._warm_up(yolo)
            kpt_shape = getattr(yolo.predictor.model, "kpt_shape", None)  # from the export's metadata
            self._check_pose("pose" if kpt_shape is not None else None, kpt_shape)
        return yolo

    def _check_pose(self, task: str | None, kpt_shape) -> None:
        if task is None:
            raise ModelError(f"{self.model_path}: has no keypoints, need a pose model with {NUM_KEYPOINTS} keypoints")
        if task != "pose" or kpt_shape is None:
            raise ModelError(
                f"{self.model_path}: is a {task!r} model, need a pose model with {NUM_KEYPOINTS} keypoints"
            )
        if int(kpt_shape[0]) != NUM_KEYPOINTS:
            raise ModelError(f"{self.model_path}: pose model has {int(kpt_shape[0])} keypoints, need {NUM_KEYPOINTS}")

    def _warm_up(self, yolo) -> None:
        blank = np.zeros((self.imgsz, self.imgsz, 3), dtype=np.uint8)
        try:
            yolo.predict([blank], **self._predict_kwargs())
        except Exception as exc:
            raise ModelError(f"{self.model_path}: cannot run the model ({_first_line(exc)})") from None

    def _predict_kwargs(self) -> dict:
        return {
            "imgsz": self.imgsz,
            "conf": self.conf_threshold,
            "iou": self.nms_iou,
            "device": self.device,
            "quantize": 16 if self.half else None,  # FP16 on CUDA (Ultralytics' replacement for ``half``)
            "max_det": self.max_det,
            "verbose": False,
        }

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces per frame (same order as ``frames``), boxes and landmarks in that frame's pixels.

        Every frame must be an H x W x 3 uint8 BGR array; the caller reports and drops unreadable images first.
        """
        for index, frame in enumerate(frames):
            if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.size == 0:
                raise VigilError(
                    f"frame {index}: expected an H x W x 3 BGR array, "
                    f"got {getattr(frame, 'shape', type(frame).__name__)}"
                )
        if self.tiling is None:
            return self._predict(frames)
        return detect_tiled(self._predict, frames, self.tiling, self.nms_iou, self.max_det)

    def _predict(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """One forward pass per image, ``batch_size`` images at a time: faces in each image's pixels."""
        faces: list[list[Face]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = list(images[start : start + self.batch_size])
            results = self._yolo.predict(chunk, **self._predict_kwargs())
            faces.extend(_faces_from_result(result) for result in results)
        return faces

    def detect_one(self, image: np.ndarray) -> list[Face]:
        """Faces in one H x W x 3 uint8 BGR image (see :meth:`detect`)."""
        return self.detect([image])[0]


def _faces_from_result(result) -> list[Face]:
    """Ultralytics ``Results`` (already in original-frame pixels) -> Face objects, highest score first."""
    boxes = result.boxes
    if boxes is None or len(boxes) == 0:
        return []
    xyxy = boxes.xyxy.float().cpu().numpy().astype(np.float32)
    scores = boxes.conf.float().cpu().numpy()
    points = result.keypoints.xy.float().cpu().numpy().astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    return [Face(box=xyxy[i], score=float(scores[i]), landmarks=points[i].reshape(NUM_KEYPOINTS, 2)) for i in order]


def _yaml_kpt_shape(model) -> list | None:
    yaml_dict = getattr(model, "yaml", None)
    return yaml_dict.get("kpt_shape") if isinstance(yaml_dict, dict) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def tile_spec(tiling) -> TileSpec | None:
    """The detector's tiling from a :class:`vigil.config.TilingConfig` (None: no tiling)."""
    return None if tiling is None else TileSpec(tile_px=tiling.tile_px, overlap_px=tiling.overlap_px)
