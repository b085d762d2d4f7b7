"""Teacher face detectors used for pseudo-labelling (SCRFD 2.5G / 500M, YuNet, yolov5n-0.5-face).

Each teacher has the same interface::

    teacher = load_teacher("scrfd_2.5g", data_dir)      # data_dir = the shared data folder
    faces = teacher.detect(image_bgr)                   # list[vigil.types.Face], original pixels
    teacher.name                                        # "scrfd_2.5g"

Landmarks are returned in the vigil 5-point order (eye on image left, eye on image right, nose, mouth
corner on image left, mouth corner on image right); all four teachers already use it.

``input_size`` is the side (pixels) that the image's longer side is scaled to. SCRFD and yolov5-face
have a fixed 640x640 ONNX input: a smaller ``input_size`` scales the image down and pads the rest of
the 640 canvas (same compute, smaller faces). YuNet has a dynamic input and runs at the scaled size.
These weights are reference/teacher models only (non-commercial / GPL terms, see MANIFEST.md) and are
never shipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.detector.fuse import nms_faces
from vigil.errors import ModelError, VigilError
from vigil.types import Face

TEACHER_FILES = {
    "scrfd_2.5g": "scrfd_2.5g_kps.onnx",
    "scrfd_500m": "scrfd_500m_kps.onnx",
    "yunet": "face_detection_yunet_2026may.onnx",
    "yolov5n_face": "yolov5n-0.5.onnx",
}
TEACHER_NAMES = tuple(TEACHER_FILES)


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    if not path.is_file():
        raise ModelError(f"{path}: teacher model file not found")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several types for a corrupt file
        raise ModelError(f"{path}: cannot load ONNX model ({type(exc).__name__})") from exc


def _check_image(image_bgr: np.ndarray) -> None:
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.size == 0:
        raise VigilError(f"image: expected an H x W x 3 BGR array, got {getattr(image_bgr, 'shape', type(image_bgr))}")


def _letterbox(
    image_bgr: np.ndarray, input_size: int, canvas: int, centre: bool, pad_value: int
) -> tuple[np.ndarray, float, float, float]:
    """Scale the longer side to ``input_size`` and paste into a ``canvas`` square.

    Returns (canvas image, scale, pad_x, pad_y): original = (canvas - pad) / scale.
    """
    import cv2

    h, w = image_bgr.shape[:2]
    scale = min(input_size / w, input_size / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image_bgr, (nw, nh), interpolation=interp)
    out = np.full((canvas, canvas, 3), pad_value, dtype=np.uint8)
    pad_x = (canvas - nw) // 2 if centre else 0
    pad_y = (canvas - nh) // 2 if centre else 0
    out[pad_y : pad_y + nh, pad_x : pad_x + nw] = resized
    return out, scale, float(pad_x), float(pad_y)


def _to_faces(
    boxes: np.ndarray,
    scores: np.ndarray,
    kps: np.ndarray,
    scale: float,
    pad_x: float,
    pad_y: float,
    shape: tuple[int, ...],
) -> list[Face]:
    """Undo the letterbox, clip boxes to the image and build Face objects."""
    h, w = shape[:2]
    offset = np.array([pad_x, pad_y], dtype=np.float64)
    boxes = (boxes.reshape(-1, 2, 2) - offset) / scale
    kps = (kps.reshape(-1, 5, 2) - offset) / scale
    boxes[..., 0] = boxes[..., 0].clip(0, w)
    boxes[..., 1] = boxes[..., 1].clip(0, h)
    faces = []
    for box, score, lm in zip(boxes.reshape(-1, 4), scores, kps):
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            continue
        faces.append(Face(box=box.astype(np.float32), score=float(score), landmarks=lm.astype(np.float32)))
    return faces


class _OnnxTeacher:
    """Common set-up of the onnxruntime teachers: a letterbox onto a fixed square ``canvas``."""

    canvas = 640

    def __init__(self, model_path: Path, name: str, input_size: int, score_thr: float, nms_thr: float, threads: int):
        self.name = name
        self.input_size = min(int(input_size), self.canvas)
        self.score_thr = score_thr
        self.nms_thr = nms_thr
        self._session = _ort_session(Path(model_path), threads)
        self._input_name = self._session.get_inputs()[0].name


class ScrfdTeacher(_OnnxTeacher):
    """SCRFD (InsightFace) with keypoints: anchor-free distance decode, 2 anchors per location."""

    strides = (8, 16, 32)
    anchors_per_location = 2

    def __init__(
        self,
        model_path: Path,
        name: str,
        input_size: int = 640,
        score_thr: float = 0.3,
        nms_thr: float = 0.4,
        threads: int = 1,
    ):
        super().__init__(model_path, name, input_size, score_thr, nms_thr, threads)
        self._centres = {s: self._anchor_centres(s) for s in self.strides}

    def _anchor_centres(self, stride: int) -> np.ndarray:
        n = self.canvas // stride
        ys, xs = np.mgrid[:n, :n]
        centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
        return np.repeat(centres, self.anchors_per_location, axis=0)

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in ``image_bgr`` (H x W x 3 uint8 BGR), boxes and landmarks in its pixels."""
        _check_image(image_bgr)
        canvas, scale, pad_x, pad_y = _letterbox(image_bgr, self.input_size, self.canvas, centre=False, pad_value=0)
        blob = (canvas[:, :, ::-1].astype(np.float32) - 127.5) / 128.0
        outputs = self._session.run(None, {self._input_name: blob.transpose(2, 0, 1)[None]})
        boxes, scores, kps = [], [], []
        for i, stride in enumerate(self.strides):
            score = outputs[i][0, :, 0]
            keep = score >= self.score_thr
            if not keep.any():
                continue
            centres = self._centres[stride][keep]
            dist = outputs[i + 3][0][keep] * stride
            kp = outputs[i + 6][0][keep].reshape(-1, 5, 2) * stride
            boxes.append(np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], axis=1))
            kps.append(centres[:, None, :] + kp)
            scores.append(score[keep])
        if not boxes:
            return []
        faces = _to_faces(
            np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps), scale, pad_x, pad_y, image_bgr.shape
        )
        return nms_faces(faces, self.nms_thr)


class Yolov5FaceTeacher(_OnnxTeacher):
    """yolov5n-0.5-face: raw heads (B, 3, ny, nx, 16) = xywh, obj, 10 landmarks, cls."""

    strides = (8, 16, 32)
    anchors = (
        ((4, 5), (8, 10), (13, 16)),
        ((23, 29), (43, 55), (73, 105)),
        ((146, 217), (231, 300), (335, 433)),
    )

    def __init__(
        self,
        model_path: Path,
        name: str = "yolov5n_face",
        input_size: int = 640,
        score_thr: float = 0.3,
        nms_thr: float = 0.45,
        threads: int = 1,
    ):
        super().__init__(model_path, name, input_size, score_thr, nms_thr, threads)

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in ``image_bgr`` (H x W x 3 uint8 BGR), boxes and landmarks in its pixels."""
        _check_image(image_bgr)
        canvas, scale, pad_x, pad_y = _letterbox(image_bgr, self.input_size, self.canvas, centre=True, pad_value=114)
        blob = canvas[:, :, ::-1].astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        outputs = self._session.run(None, {self._input_name: blob})
        boxes, scores, kps = [], [], []
        for raw, stride, anchors in zip(outputs, self.strides, self.anchors):
            decoded = self._decode_level(raw[0], stride, np.asarray(anchors, dtype=np.float32))
            if decoded is not None:
                boxes.append(decoded[0])
                scores.append(decoded[1])
                kps.append(decoded[2])
        if not boxes:
            return []
        faces = _to_faces(
            np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps), scale, pad_x, pad_y, image_bgr.shape
        )
        return nms_faces(faces, self.nms_thr)

    def _decode_level(self, raw: np.ndarray, stride: int, anchors: np.ndarray):
        """Decode one level (3, ny, nx, 16) -> (boxes x1y1x2y2, scores, kps (N,5,2)) in canvas pixels."""
        score = _sigmoid(raw[..., 4]) * _sigmoid(raw[..., 15])
        keep = score >= self.score_thr
        if not keep.any():
            return None
        a_idx, gy, gx = np.nonzero(keep)
        sel = raw[keep]
        grid = np.stack([gx, gy], axis=1).astype(np.float32)
        anchor_wh = anchors[a_idx]
        xy = (_sigmoid(sel[:, 0:2]) * 2.0 - 0.5 + grid) * stride
        wh = (_sigmoid(sel[:, 2:4]) * 2.0) ** 2 * anchor_wh
        lm = sel[:, 5:15].reshape(-1, 5, 2) * anchor_wh[:, None, :] + (grid * stride)[:, None, :]
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        return boxes, score[keep], lm


class YunetTeacher:
    """YuNet (OpenCV zoo) through cv2.FaceDetectorYN, run at the scaled image size (dynamic input)."""

    def __init__(
        self,
        model_path: Path,
        name: str = "yunet",
        input_size: int = 640,
        score_thr: float = 0.3,
        nms_thr: float = 0.3,
        threads: int = 1,
    ):
        import cv2

        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelError(f"{model_path}: teacher model file not found")
        self.name = name
        self.input_size = int(input_size)
        self.score_thr = score_thr
        try:
            self._detector = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_thr, nms_thr, 5000)
        except cv2.error as exc:
            raise ModelError(f"{model_path}: OpenCV cannot load this YuNet model ({exc.msg.strip()[:80]})") from exc
        del threads  # accepted for a uniform interface; OpenCV's global cv2.setNumThreads applies

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in ``image_bgr`` (H x W x 3 uint8 BGR), boxes and landmarks in its pixels."""
        import cv2

        _check_image(image_bgr)
        h, w = image_bgr.shape[:2]
        scale = min(self.input_size / w, self.input_size / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        self._detector.setInputSize((nw, nh))
        _, raw = self._detector.detect(resized)
        if raw is None or len(raw) == 0:
            return []
        raw = raw.astype(np.float64)
        boxes = np.concatenate([raw[:, 0:2], raw[:, 0:2] + raw[:, 2:4]], axis=1)
        return _to_faces(boxes, raw[:, 14], raw[:, 4:14], scale, 0.0, 0.0, image_bgr.shape)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def load_teacher(name: str, data_dir: Path, **kw) -> ScrfdTeacher | Yolov5FaceTeacher | YunetTeacher:
    """Build a teacher by name (``TEACHER_NAMES``) from ``data_dir/weights``.

    Keyword args go to the constructor: ``input_size`` (px, longer side), ``score_thr``, ``nms_thr``,
    ``threads`` (onnxruntime intra-op threads).
    """
    if name not in TEACHER_FILES:
        raise VigilError(f"teacher: unknown name {name!r}; choose one of {', '.join(TEACHER_NAMES)}")
    path = Path(data_dir) / "weights" / TEACHER_FILES[name]
    if name.startswith("scrfd"):
        return ScrfdTeacher(path, name=name, **kw)
    if name == "yolov5n_face":
        return Yolov5FaceTeacher(path, name=name, **kw)
    return YunetTeacher(path, name=name, **kw)
