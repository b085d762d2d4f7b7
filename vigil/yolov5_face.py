"""The YOLOv5-face detector family on onnxruntime: letterbox, batched forward pass, anchor decoding, landmarks, NMS.

vigil's default detector since issue 21 is a fine-tuned yolov5n-0.5-face (``models/detector/``); the family's ONNX
contract is the source file's (deepcam-cn/yolov5-face, as exported there):

* input ``[N, 3, H, W]`` float32, RGB scaled to [0, 1], letterboxed with grey 114 (H, W multiples of 32; a file
  with a fixed input shape, like the source, is run one image at a time at its own size);
* one raw output per stride (8, 16, 32), ``[N, A, H/s, W/s, 16]``: per anchor ``x, y, w, h, objectness, 10
  landmark coordinates, class``. Decoding (yolov5-face's ``Detect``): ``xy = (2 sigmoid(t_xy) - 0.5 + cell) * s``,
  ``wh = (2 sigmoid(t_wh))^2 * anchor``, ``landmark = t * anchor + cell * s``, score = ``sigmoid(obj) *
  sigmoid(cls)``.

Anchors come from the file's metadata (``vigil.anchors_px``, written by ``pipelines/detector/yolov5face_net.py``),
else the family's defaults (the source's ``yolov5n-0.5.yaml``). Each output's stride is read from its shape
against the input's, so the order of the outputs does not matter. Landmarks are in the vigil 5-point order
(yolov5-face's WIDER labels use it).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vigil.errors import ModelError
from vigil.types import Face

FAMILY = "yolov5-face"
OUTPUTS_PER_ANCHOR = 16  # x, y, w, h, objectness, 5 x (x, y) landmarks, class
DEFAULT_ANCHORS_PX = (
    ((4, 5), (8, 10), (13, 16)),
    ((23, 29), (43, 55), (73, 105)),
    ((146, 217), (231, 300), (335, 433)),
)
PAD_VALUE = 114
SIZE_MULTIPLE = 32
NUM_KEYPOINTS = 5


def layout_problem(outputs: Sequence[tuple[str, Sequence]]) -> str | None:
    """Why these ONNX outputs ``(name, shape)`` are not the YOLOv5-face layout, or None when they are."""
    if len(outputs) != len(DEFAULT_ANCHORS_PX):
        return f"expected {len(DEFAULT_ANCHORS_PX)} outputs [N,3,H,W,{OUTPUTS_PER_ANCHOR}], got {len(outputs)}"
    for name, shape in outputs:
        if len(shape) != 5 or shape[-1] != OUTPUTS_PER_ANCHOR or not isinstance(shape[1], int):
            return f"output {name} has shape {list(shape)}, expected [N,anchors,H,W,{OUTPUTS_PER_ANCHOR}]"
    return None


def read_anchors(metadata: dict[str, str]) -> tuple[tuple[tuple[float, float], ...], ...]:
    """Anchors (w, h) in input pixels per stride, smallest stride first: the file's ``vigil.anchors_px`` or the
    family's defaults."""
    text = metadata.get("vigil.anchors_px")
    anchors = json.loads(text) if text else DEFAULT_ANCHORS_PX
    return tuple(tuple((float(w), float(h)) for w, h in level) for level in anchors)


@dataclass(frozen=True)
class Letterbox:
    """How one image sits on the network's canvas: canvas = image * scale + (pad_x, pad_y)."""

    scale: float
    pad_x: float
    pad_y: float


def canvas_shape(shapes: Sequence[tuple[int, int]], imgsz: int) -> tuple[int, int]:
    """(height, width) of the canvas for images of ``shapes`` (h, w) with the longer side scaled to ``imgsz``:
    the smallest rectangle that holds each of them, in multiples of 32 (a 640x360 frame at 640: 640x384)."""
    height = width = SIZE_MULTIPLE
    for h, w in shapes:
        scale = imgsz / max(h, w)
        height = max(height, math.ceil(round(h * scale) / SIZE_MULTIPLE) * SIZE_MULTIPLE)
        width = max(width, math.ceil(round(w * scale) / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return height, width


def letterbox(image_bgr: np.ndarray, imgsz: int, canvas_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """The image scaled so its longer side is ``imgsz`` and centred on a grey canvas of ``canvas_hw``."""
    import cv2

    h, w = image_bgr.shape[:2]
    scale = min(imgsz / max(h, w), canvas_hw[0] / h, canvas_hw[1] / w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = (
        image_bgr
        if (nw, nh) == (w, h)
        else cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    )
    canvas = np.full((canvas_hw[0], canvas_hw[1], 3), PAD_VALUE, dtype=np.uint8)
    pad_x, pad_y = (canvas_hw[1] - nw) // 2, (canvas_hw[0] - nh) // 2
    canvas[pad_y : pad_y + nh, pad_x : pad_x + nw] = resized
    return canvas, Letterbox(scale=nw / w if w else scale, pad_x=float(pad_x), pad_y=float(pad_y))


def to_blob(canvases: Sequence[np.ndarray]) -> np.ndarray:
    """BGR uint8 canvases -> float32 ``[N, 3, H, W]`` RGB in [0, 1]."""
    batch = np.stack(canvases)[..., ::-1].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32) * np.float32(1.0 / 255.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


@dataclass(frozen=True)
class Decoded:
    """Candidate faces of one image in canvas pixels: boxes (K, 4) x1y1x2y2, scores (K,), landmarks (K, 5, 2)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @staticmethod
    def empty() -> Decoded:
        return Decoded(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, NUM_KEYPOINTS, 2), np.float32)
        )


def decode_level(raw: np.ndarray, stride: float, anchors_px: np.ndarray, conf_threshold: float) -> Decoded:
    """One image's raw output at one stride, ``(A, H, W, 16)``, -> its candidates scoring >= ``conf_threshold``."""
    score = _sigmoid(raw[..., 4]) * _sigmoid(raw[..., 15])
    keep = score >= conf_threshold
    if not keep.any():
        return Decoded.empty()
    anchor_index, gy, gx = np.nonzero(keep)
    picked = raw[keep].astype(np.float32)
    cell = np.stack([gx, gy], axis=1).astype(np.float32)
    anchor = anchors_px[anchor_index].astype(np.float32)
    xy = (_sigmoid(picked[:, 0:2]) * 2.0 - 0.5 + cell) * stride
    wh = (_sigmoid(picked[:, 2:4]) * 2.0) ** 2 * anchor
    landmarks = picked[:, 5:15].reshape(-1, NUM_KEYPOINTS, 2) * anchor[:, None, :] + (cell * stride)[:, None, :]
    return Decoded(np.concatenate([xy - wh / 2, xy + wh / 2], axis=1), score[keep].astype(np.float32), landmarks)


def decode_image(
    levels: Sequence[np.ndarray],
    input_hw: tuple[int, int],
    anchors: Sequence[Sequence[tuple[float, float]]],
    conf_threshold: float,
) -> Decoded:
    """All strides of one image (each ``(A, H/s, W/s, 16)``, any order): candidates in canvas pixels.

    Each level's stride is ``input height / its grid height``; anchors go to levels by increasing stride.
    """
    strides = [input_hw[0] / level.shape[1] for level in levels]
    parts = []
    for rank, index in enumerate(np.argsort(strides, kind="stable")):
        anchor_px = np.asarray(anchors[rank], dtype=np.float32)
        parts.append(decode_level(levels[index], strides[index], anchor_px, conf_threshold))
    parts = [p for p in parts if len(p.scores)]
    if not parts:
        return Decoded.empty()
    return Decoded(
        np.concatenate([p.boxes for p in parts]),
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.landmarks for p in parts]),
    )


def nms_keep(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_det: int) -> np.ndarray:
    """Indices kept by non-maximum suppression (torchvision), highest score first, at most ``max_det``."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    import torch
    from torchvision.ops import nms

    keep = nms(
        torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)),
        float(iou_threshold),
    )
    return keep[:max_det].numpy()


def to_faces(decoded: Decoded, box: Letterbox, image_hw: tuple[int, int]) -> list[Face]:
    """Candidates (already NMS-ed) in canvas pixels -> Face objects in the image's pixels, boxes clipped to it."""
    offset = np.asarray([box.pad_x, box.pad_y], dtype=np.float32)
    h, w = image_hw
    boxes = ((decoded.boxes.reshape(-1, 2, 2) - offset) / box.scale).reshape(-1, 4)
    boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
    points = ((decoded.landmarks - offset) / box.scale).astype(np.float32)
    return [
        Face(box=boxes[i], score=float(decoded.scores[i]), landmarks=points[i])
        for i in range(len(boxes))
        if boxes[i, 2] - boxes[i, 0] >= 1 and boxes[i, 3] - boxes[i, 1] >= 1
    ]


class Yolov5FaceOnnx:
    """A YOLOv5-face ONNX file on onnxruntime: ``predict(images)`` -> faces per image, in that image's pixels.

    ``providers``: onnxruntime providers in order of preference (the first that loads is used); ``imgsz``: the
    longer side each image is scaled to. A file with a fixed input shape runs at that size, one image per call.
    """

    def __init__(
        self,
        model_path: Path,
        imgsz: int,
        conf_threshold: float,
        nms_iou: float,
        max_det: int,
        batch_size: int,
        providers: Sequence[str],
        logger: logging.Logger | None = None,
    ) -> None:
        from vigil.embed import open_session

        self.model_path = Path(model_path)
        self.log = logger or logging.getLogger("vigil.detect")
        self.conf_threshold, self.nms_iou, self.max_det = float(conf_threshold), float(nms_iou), int(max_det)
        self._session = open_session(self.model_path, list(providers), self._options(), self.log, "detector")
        self.provider: str = self._session.get_providers()[0]
        problem = layout_problem([(o.name, o.shape) for o in self._session.get_outputs()])
        inputs = self._session.get_inputs()
        if problem is None and (len(inputs) != 1 or len(inputs[0].shape) != 4):
            problem = f"expected one input [N,3,H,W], got {[(i.name, i.shape) for i in inputs]}"
        if problem:
            raise ModelError(f"{self.model_path}: not a {FAMILY} detector ({problem})")
        self._input_name = inputs[0].name
        shape = inputs[0].shape
        self.fixed_hw = (shape[2], shape[3]) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
        self.batch_size = 1 if isinstance(shape[0], int) else max(1, int(batch_size))
        self.imgsz = max(self.fixed_hw) if self.fixed_hw else int(imgsz)
        if self.fixed_hw and int(imgsz) != self.imgsz:
            self.log.warning("%s: fixed input %dx%d, imgsz %d ignored", self.model_path.name, shape[3], shape[2], imgsz)
        self.anchors = read_anchors(self._session.get_modelmeta().custom_metadata_map or {})
        if len(self.anchors) != len(self._session.get_outputs()):
            raise ModelError(
                f"{self.model_path}: {len(self.anchors)} anchor levels in its metadata for "
                f"{len(self._session.get_outputs())} outputs"
            )

    @staticmethod
    def _options():
        import onnxruntime as ort

        options = ort.SessionOptions()
        # the detector takes turns with the refiner's and recognizer's sessions on the same cores: spinning threads
        # would fight them (see vigil.embed.OnnxEmbedder._session_options)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    def predict(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        faces: list[list[Face]] = []
        for start in range(0, len(images), self.batch_size):
            faces.extend(self._predict_batch(images[start : start + self.batch_size]))
        return faces

    def _predict_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        hw = self.fixed_hw or canvas_shape([image.shape[:2] for image in images], self.imgsz)
        boxed = [letterbox(image, self.imgsz, hw) for image in images]
        outputs = self._session.run(None, {self._input_name: to_blob([canvas for canvas, _ in boxed])})
        results = []
        for index, (image, (_, box)) in enumerate(zip(images, boxed)):
            decoded = decode_image([output[index] for output in outputs], hw, self.anchors, self.conf_threshold)
            keep = nms_keep(decoded.boxes, decoded.scores, self.nms_iou, self.max_det)
            kept = Decoded(decoded.boxes[keep], decoded.scores[keep], decoded.landmarks[keep])
            results.append(to_faces(kept, box, image.shape[:2]))
        return results


def onnx_layout(model_path: Path) -> tuple[list[tuple[str, list]], dict[str, str]]:
    """(outputs as (name, shape with ints or names), metadata) of an ONNX file, read without running it."""
    import onnx

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for a file that is not ONNX
        raise ModelError(f"{model_path}: cannot read as ONNX ({type(exc).__name__})") from None
    outputs = []
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        outputs.append((output.name, [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]))
    return outputs, {prop.key: prop.value for prop in model.metadata_props}
