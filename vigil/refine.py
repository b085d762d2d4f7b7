"""Landmark refinement: a second, close look at each face before it is aligned.

The detector finds faces in the whole frame; its five landmarks are only as precise as a nano model's regression
at frame scale allows, and the recognizer is sensitive to them (clean LFW with the detector's, the refiner's and a
teacher's landmarks: ``models/landmarks/vigil-landmarks-96.md``, "Why it exists"). The refiner
is a small CNN of ours (``models/landmarks/``, trained by ``pipelines/landmarks/``) that takes a square crop around
the detector's box (``context`` x its longer side, scaled to the model's input size) and returns the five points.
With ``mirror`` it also reads the mirrored crop and averages the two (left and right points swapped back).
Box and score are never changed: tracking and rules see the same faces with or without refinement.

Only faces that are about to be embedded are refined (``FaceAnalyzer.embed_faces``), so the cost is per embedded
face, not per frame.

Model contract: input ``uint8 [N, S, S, 3]`` BGR crops, output ``float32 [N, 5, 2]`` points in crop units (0..1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vigil.errors import ModelError
from vigil.models import ModelRegistry, ModelSpec, sha256_of
from vigil.onnx_session import DEFAULT_PROVIDERS, machine_providers, open_session
from vigil.types import LANDMARK_FLIP_INDEX, Face


def crop_transform(box: np.ndarray, crop_px: int, context: float) -> np.ndarray:
    """2x3 affine (scale + shift) sending the square of side ``context`` x the box's longer side, centred on the
    box, onto a ``crop_px`` x ``crop_px`` crop."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = context * max(x2 - x1, y2 - y1, 1.0)
    scale = crop_px / side
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([[scale, 0.0, crop_px / 2 - scale * cx], [0.0, scale, crop_px / 2 - scale * cy]], np.float64)


def points_to_frame(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """(N, 2) crop points (pixels) -> frame points, for a ``crop_transform`` matrix (scale + shift only)."""
    scale, shift = transform[0, 0], transform[:, 2]
    return ((np.asarray(points, np.float64) - shift) / scale).astype(np.float32)


def unmirror_points(points: np.ndarray, width: float) -> np.ndarray:
    """Landmarks read in a mirrored image of ``width`` px -> the unmirrored image's, in vigil's point order."""
    out = np.asarray(points, np.float32)[list(LANDMARK_FLIP_INDEX)].copy()
    out[:, 0] = width - out[:, 0]
    return out


class OnnxLandmarkModel:
    """The refiner network in onnxruntime: ``predict(crops uint8 [N,S,S,3]) -> [N,5,2]`` in crop units."""

    def __init__(self, model_path: Path, providers: Sequence[str], logger: logging.Logger | None = None) -> None:
        import onnxruntime as ort

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: landmark model file not found")
        log = logger or logging.getLogger("vigil.refine")
        wanted = machine_providers(providers)
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # called between other sessions
        self._session = open_session(self.model_path, wanted, options, log, "landmark refiner")
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape = inputs[0].shape
        if (
            len(inputs) != 1
            or len(shape) != 4
            or not isinstance(shape[1], int)
            or shape[1] != shape[2]
            or inputs[0].type != "tensor(uint8)"
            or len(outputs) != 1
            or list(outputs[0].shape[1:]) != [5, 2]
        ):
            raise ModelError(
                f"{self.model_path}: expected uint8 [N,S,S,3] -> [N,5,2], got {[(i.name, i.shape) for i in inputs]} -> "
                f"{[(o.name, o.shape) for o in outputs]}"
            )
        self._input_name = inputs[0].name
        self.crop_px = int(shape[1])
        self.provider = self._session.get_providers()[0]
        log.info("landmark refiner %s: provider %s, crop %d px", self.model_path.name, self.provider, self.crop_px)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, 5, 2), np.float32)
        return self._session.run(None, {self._input_name: np.ascontiguousarray(crops, dtype=np.uint8)})[0].astype(
            np.float32
        )


class LandmarkRefiner:
    """Refines faces' landmarks with a crop model (see the module docstring). ``model`` has ``crop_px`` and
    ``predict``; ``context`` is the crop's side over the box's longer side (the model was trained with it)."""

    def __init__(self, model, context: float, mirror: bool = True) -> None:
        if context < 1.0:
            raise ValueError(f"context must be >= 1, got {context}")
        self.model = model
        self.crop_px = int(model.crop_px)
        self.context = float(context)
        self.mirror = bool(mirror)
        self.refined = 0

    def refine(self, items: Sequence[tuple[np.ndarray, Face]]) -> list[Face]:
        """The faces of ``items`` ((image, face) pairs) with refined landmarks, in order."""
        if not items:
            return []
        transforms = [crop_transform(face.box, self.crop_px, self.context) for _, face in items]
        crops = np.stack(
            [
                cv2.warpAffine(
                    image, m, (self.crop_px, self.crop_px), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
                )
                for (image, _), m in zip(items, transforms)
            ]
        )
        points = self.model.predict(crops) * self.crop_px
        if self.mirror:
            mirrored = self.model.predict(np.ascontiguousarray(crops[:, :, ::-1])) * self.crop_px
            points = (points + np.stack([unmirror_points(p, self.crop_px) for p in mirrored])) / 2
        self.refined += len(items)
        return [
            Face(box=face.box, score=face.score, landmarks=points_to_frame(p, m))
            for (_, face), p, m in zip(items, points, transforms)
        ]


def build_landmark_refiner(spec: ModelSpec, providers: Sequence[str] | None = None) -> LandmarkRefiner:
    """The refiner for a manifest ``landmarks`` entry (``crop_context``, ``mirror_average`` from the manifest)."""
    context = float(spec.extra.get("crop_context", 0) or 0)
    if context < 1.0:
        raise ModelError(f"{spec.path}: the manifest gives no crop_context (>= 1) for this landmark model")
    model = OnnxLandmarkModel(spec.path, providers=DEFAULT_PROVIDERS if providers is None else providers)
    return LandmarkRefiner(model, context=context, mirror=bool(spec.extra.get("mirror_average", True)))


def default_landmark_refiner() -> tuple[LandmarkRefiner, Path, str]:
    """The manifest's default landmark refiner, with its model file and sha256 (for the labels of reports)."""
    spec = ModelRegistry().resolve("landmarks", None)
    return build_landmark_refiner(spec), spec.path, spec.sha256 or sha256_of(spec.path)


class RefiningAligner:
    """An aligner that refines each face's landmarks before aligning it: the evaluation path (``vigil eval``,
    ``pipelines/``), which aligns one face at a time. The runtime refines in batches in ``FaceAnalyzer``."""

    def __init__(self, aligner, refiner: LandmarkRefiner) -> None:
        self.aligner = aligner
        self.refiner = refiner

    @property
    def template(self) -> np.ndarray:
        return self.aligner.template

    @property
    def chip_size(self) -> int:
        return self.aligner.chip_size

    def align(self, image: np.ndarray, face: Face):
        return self.aligner.align(image, self.refiner.refine([(image, face)])[0])


def unrefined(aligner):
    """The plain aligner inside a :class:`RefiningAligner` (``aligner`` itself otherwise): for faces whose
    landmarks are fixed by definition, such as the LFW protocol's no-face fallback."""
    return aligner.aligner if isinstance(aligner, RefiningAligner) else aligner
