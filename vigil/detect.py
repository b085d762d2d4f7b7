"""Face detection stage: a face model with 5 landmarks -> typed :class:`vigil.types.Face` objects.

``FaceDetector(model_path, ...).detect(frames)`` takes a list of H x W x 3 uint8 BGR frames (any sizes) and returns,
per frame, the faces with boxes, scores and the 5 landmarks in that frame's pixels (the letterbox is undone).
Two detector families, chosen by :func:`detector_family` from the manifest's ``format`` (or, for a file the
manifest does not list, from the file itself):

* ``yolov5-face``: a YOLOv5-face ONNX file on onnxruntime (:mod:`vigil.yolov5_face`; the default model);
* ``ultralytics``: an Ultralytics YOLO pose model with 5 keypoints (``.pt``, or its ONNX export), e.g. the community
  yolov8-face weights a user brings.

The keypoints are taken to be in the vigil 5-point order (eye on image left, eye on image right, nose, mouth corner
on image left, mouth corner on image right): both families' WIDER/RetinaFace landmark labels use it.

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


ULTRALYTICS = "ultralytics"


def detector_family(model_path: Path, model_format: str | None = None) -> str:
    """``yolov5-face`` or ``ultralytics``: the manifest's ``format`` when it names the YOLOv5-face family, else the
    file's own layout (a ``.pt`` is Ultralytics; an ``.onnx`` is read: three ``[N,3,H,W,16]`` outputs are
    YOLOv5-face, an Ultralytics export says so in its metadata). ModelError naming the file for anything else."""
    from vigil import yolov5_face

    path = Path(model_path)
    if not path.is_file():
        raise ModelError(f"{path}: detector model file not found")
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise ModelError(
            f"{path}: expected a YOLOv5-face ONNX file, an Ultralytics pose model (.pt) or its ONNX export"
        )
    if model_format == yolov5_face.FAMILY:
        return yolov5_face.FAMILY
    if suffix == ".pt":
        return ULTRALYTICS
    outputs, metadata = yolov5_face.onnx_layout(path)
    problem = yolov5_face.layout_problem(outputs)
    if problem is None:
        return yolov5_face.FAMILY
    if "kpt_shape" in metadata or metadata.get("task") == "pose" or "ultralytics" in metadata.get("author", "").lower():
        return ULTRALYTICS
    raise ModelError(
        f"{path}: not a face detector vigil can run: neither a {yolov5_face.FAMILY} ONNX ({problem}) "
        "nor an Ultralytics pose export"
    )


def onnx_providers(device: str) -> list[str]:
    """onnxruntime providers for ``detector.device``: CUDA first for auto/cuda when this machine can run it, else
    CPU."""
    from vigil.onnx_session import CPU_PROVIDER, machine_providers

    device = str(device).strip().lower()
    if device == "cpu":
        return [CPU_PROVIDER]
    usable = machine_providers(["CUDAExecutionProvider", CPU_PROVIDER])
    if device != "auto" and usable[0] != "CUDAExecutionProvider":
        raise VigilError(
            f"detector.device: {device} requested but onnxruntime has no usable CUDA provider here (use auto or cpu)"
        )
    return usable


class FaceDetector:
    """Batched face detection with a 5-landmark face model of either family (:func:`detector_family`).

    ``imgsz`` is the inference size in pixels (longer side, multiple of 32); ``conf_threshold`` the minimum score in
    [0, 1]; ``nms_iou`` the NMS IoU threshold; ``device`` ``auto | cpu | cuda | cuda:N``; ``batch_size`` the number of
    frames per forward pass; ``max_det`` the most faces kept per frame; ``model_format`` the manifest's ``format``
    (None: read the file). Ultralytics models use half precision on CUDA.
    ``tiling``: also detect on overlapping tiles of each frame and merge (:mod:`vigil.tiling`); None (the default)
    detects on the whole frame only. An instance holds one predictor: call it from one thread (the pipeline's
    inference thread).
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
        model_format: str | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.imgsz = int(imgsz)
        self.conf_threshold = float(conf_threshold)
        self.nms_iou = float(nms_iou)
        self.batch_size = max(1, int(batch_size))
        self.max_det = int(max_det)
        self.tiling = tiling
        self.log = logger or logging.getLogger("vigil.detect")
        self.family = detector_family(self.model_path, model_format)
        if self.family == ULTRALYTICS:
            self.device = resolve_device(device)
            self.half = self.device.startswith("cuda")
            self._yolo = self._load()
        else:
            from vigil.yolov5_face import Yolov5FaceOnnx

            backend = Yolov5FaceOnnx(
                self.model_path,
                self.imgsz,
                self.conf_threshold,
                self.nms_iou,
                self.max_det,
                self.batch_size,
                onnx_providers(device),
                logger=self.log,
            )
            self.device = "cuda" if backend.provider.startswith("CUDA") else "cpu"
            self.half = False
            self.imgsz = backend.imgsz
            self._predict = backend.predict  # type: ignore[method-assign]  # the family's batched predict
        self.log.info(
            "detector %s (%s) on %s (imgsz %d, conf %.2f, nms iou %.2f%s)",
            self.model_path.name,
            self.family,
            self.device,
            self.imgsz,
            self.conf_threshold,
            self.nms_iou,
            "" if tiling is None else f", tiles {tiling.tile_px} px overlapping {tiling.overlap_px} px",
        )

    def _load(self):
        path = self.model_path
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
        """Ultralytics: one forward pass per image, ``batch_size`` images at a time: faces in each image's pixels."""
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
