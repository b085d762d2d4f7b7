"""Evaluation images -> one aligned chip (and embedding) per image, through a detector and the runtime aligner.

Face choice (LFW and ``eval pairs``): among the detected faces with ``score >= min_score``, the one whose box centre
is nearest the image centre (LFW images are centred on the person the pair is about; other people may appear at the
edges).

No confident face:

* ``fallback="centre"`` (LFW protocol, so that all 6,000 pairs are scored as the protocol requires): the image is
  aligned with *fixed* landmarks, the mean position of the 5 landmarks over LFW (``LFW_MEAN_LANDMARKS_PX``, for the
  250 x 250 LFW image, scaled by (width / 250, height / 250) for other sizes, e.g. the small degraded images). The
  count is reported as ``faces_not_found``.
* ``fallback="skip"`` (``eval pairs``): no chip; the caller skips every pair that uses the image and counts it.

``LFW_MEAN_LANDMARKS_PX`` was measured once with
``python -m pipelines.recognizer.eval_with_teacher measure --teacher yunet --json ...`` (YuNet at the native
250 px, the confident face nearest the centre, mean over the 7,701 distinct View 2 images that have one); see
:mod:`vigil.eval.degrade_lfw` for the numbers of that run.

Embeddings are cached in memory only, per (image key, detector label, model label/checksum), by
:class:`ImageEmbedder`; chips are not kept (7,700 chips of 150 x 150 would be 0.5 GB). Detections can be kept on
disk by :class:`DetectionCache` (the chosen face per image key, one ``.npz`` per detector, variant and
``min_score``), so that several recognizers are compared on exactly the same faces without running the detector
again: detection is most of an LFW evaluation's time on a CPU.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from vigil.errors import VigilError
from vigil.refine import unrefined
from vigil.types import AlignedFace, Face

LFW_IMAGE_SIZE_PX = 250
# Mean teacher landmarks on the 250 x 250 LFW images, vigil 5-point order, (x, y) px. Measured, see module docstring.
LFW_MEAN_LANDMARKS_PX = np.array(
    [[102.52, 113.47], [148.90, 112.79], [125.61, 138.02], [108.12, 159.46], [146.67, 158.47]],
    dtype=np.float32,
)
DEFAULT_MIN_SCORE = 0.3

DetectBatch = Callable[[list[np.ndarray]], list[list[Face]]]
DetectOne = Callable[[np.ndarray], list[Face]]
Fallback = Literal["centre", "skip"]


class AlignerLike(Protocol):
    """vigil.align.Aligner, or vigil.refine.RefiningAligner around one."""

    @property
    def template(self) -> np.ndarray: ...

    @property
    def chip_size(self) -> int: ...

    def align(self, image: np.ndarray, face: Face) -> AlignedFace: ...


class EmbedderLike(Protocol):
    def embed(self, chips: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ChipResult:
    """One image's chip: ``found`` is False when the detector gave no confident face."""

    chip: np.ndarray | None  # S x S x 3 uint8 BGR; None when skipped
    face: Face | None  # the face used (the fixed centre face for the fallback)
    found: bool


@dataclass(frozen=True)
class ImageEmbedding:
    vector: np.ndarray | None  # (D,) float32 unit norm; None when the image was skipped (no face, skip policy)
    found: bool


def vector_rows(embeddings: Iterable[ImageEmbedding]) -> np.ndarray:
    """The embeddings' vectors stacked as rows; ValueError for an image that has none (skipped: filter it first)."""
    rows = []
    for embedding in embeddings:
        if embedding.vector is None:
            raise ValueError("an image without an embedding (skipped, no face) cannot be a row")
        rows.append(embedding.vector)
    return np.stack(rows)


def read_image(path: Path, context: str = "") -> np.ndarray:
    """Decode an image file to H x W x 3 uint8 BGR, or raise VigilError naming the file (and ``context``)."""
    import cv2

    where = f" ({context})" if context else ""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise VigilError(f"{path}: cannot read image{where}: {exc.strerror or exc.__class__.__name__}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise VigilError(f"{path}: cannot decode image{where}")
    return image


def choose_face(faces: Sequence[Face], image_shape: tuple[int, ...], min_score: float) -> Face | None:
    """The face with ``score >= min_score`` whose box centre is nearest the image centre, or None."""
    h, w = image_shape[:2]
    centre = np.array([w / 2.0, h / 2.0])
    best, best_distance = None, np.inf
    for face in faces:
        if face.score < min_score:
            continue
        box_centre = np.array([(face.box[0] + face.box[2]) / 2.0, (face.box[1] + face.box[3]) / 2.0])
        distance = float(np.linalg.norm(box_centre - centre))
        if distance < best_distance:
            best, best_distance = face, distance
    return best


def centre_face(image_shape: tuple[int, ...]) -> Face:
    """The fixed fallback face: LFW's mean landmarks scaled to this image size (score 0)."""
    h, w = image_shape[:2]
    scale = np.array([w / LFW_IMAGE_SIZE_PX, h / LFW_IMAGE_SIZE_PX], dtype=np.float32)
    landmarks = LFW_MEAN_LANDMARKS_PX * scale
    eye_span = float(landmarks[1, 0] - landmarks[0, 0])
    x1, x2 = landmarks[:, 0].min() - eye_span, landmarks[:, 0].max() + eye_span
    y1, y2 = landmarks[:, 1].min() - 1.3 * eye_span, landmarks[:, 1].max() + 0.8 * eye_span
    box = np.array([max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)], dtype=np.float32)
    return Face(box=box, score=0.0, landmarks=landmarks.astype(np.float32))


def per_image(detect_one: DetectOne) -> DetectBatch:
    """Adapt a per-image detector (``image -> list[Face]``, e.g. a teacher's ``detect``) to the batch form."""

    def detect_batch(images: list[np.ndarray]) -> list[list[Face]]:
        return [detect_one(image) for image in images]

    return detect_batch


class DetectionCache:
    """The chosen face (or none) per image key, kept in one ``.npz`` file.

    The file records the detector label and ``min_score`` it was made with; a file made with others is not used
    (it is replaced on :meth:`save`). Keys must encode the image variant (``"degraded:Name/Name_0001.jpg"``).
    """

    def __init__(self, path: Path, detector_label: str, min_score: float) -> None:
        self.path = Path(path)
        self.detector_label = detector_label
        self.min_score = float(min_score)
        self._faces: dict[str, Face | None] = {}
        self.loaded = self._load()

    @classmethod
    def in_folder(cls, folder: Path, run_name: str, detector_label: str, min_score: float) -> DetectionCache:
        """The cache file in ``folder`` for one run (``run_name``: the image set, e.g. lfw-degraded) and detector."""
        file_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{run_name}-{detector_label}-min{min_score}") + ".npz"
        return cls(Path(folder) / file_name, detector_label, min_score)

    def _load(self) -> int:
        if not self.path.is_file():
            return 0
        with np.load(self.path, allow_pickle=False) as data:
            if str(data["detector_label"]) != self.detector_label or float(data["min_score"]) != self.min_score:
                return 0
            for key, found, box, score, landmarks in zip(
                data["keys"], data["found"], data["boxes"], data["scores"], data["landmarks"]
            ):
                self._faces[str(key)] = (
                    Face(box=box.astype(np.float32), score=float(score), landmarks=landmarks.astype(np.float32))
                    if found
                    else None
                )
        return len(self._faces)

    def __contains__(self, key: str) -> bool:
        return key in self._faces

    def get(self, key: str) -> Face | None:
        return self._faces[key]

    def put(self, key: str, face: Face | None) -> None:
        self._faces[key] = face

    def save(self) -> None:
        keys = list(self._faces)
        faces = [self._faces[k] for k in keys]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.stem + ".tmp.npz")
        np.savez(
            tmp,
            keys=np.array(keys, dtype=str),
            found=np.array([f is not None for f in faces], dtype=bool),
            boxes=np.array([f.box if f is not None else np.zeros(4) for f in faces], dtype=np.float32).reshape(-1, 4),
            scores=np.array([f.score if f is not None else 0.0 for f in faces], dtype=np.float32),
            landmarks=np.array(
                [f.landmarks if f is not None else np.zeros((5, 2)) for f in faces], dtype=np.float32
            ).reshape(-1, 5, 2),
            detector_label=np.array(self.detector_label),
            min_score=np.array(self.min_score),
        )
        tmp.replace(self.path)


class FaceSource:
    """Detect, choose one face per image, align it (see the module docstring for the rules)."""

    def __init__(
        self,
        detect_batch: DetectBatch,
        aligner: AlignerLike,
        fallback: Fallback,
        min_score: float = DEFAULT_MIN_SCORE,
        cache: DetectionCache | None = None,
    ) -> None:
        if fallback not in ("centre", "skip"):
            raise ValueError(f"fallback must be 'centre' or 'skip', got {fallback!r}")
        self.detect_batch = detect_batch
        self.aligner = aligner
        self.fallback = fallback
        self.min_score = min_score
        self.cache = cache

    def chosen_faces(self, images: list[np.ndarray], keys: Sequence[str] | None = None) -> list[Face | None]:
        """The chosen face per image (None: no confident face); from the cache where ``keys`` are cached."""
        cache, cache_keys = (self.cache, keys) if self.cache is not None and keys is not None else (None, [])
        cached = [k in cache for k in cache_keys] if cache is not None else [False] * len(images)
        todo = [i for i, hit in enumerate(cached) if not hit]
        detections = self.detect_batch([images[i] for i in todo]) if todo else []
        if len(detections) != len(todo):
            raise RuntimeError(f"detector returned {len(detections)} results for {len(todo)} images")
        chosen: list[Face | None] = [
            cache.get(cache_keys[i]) if hit and cache is not None else None for i, hit in enumerate(cached)
        ]
        for i, faces in zip(todo, detections):
            chosen[i] = choose_face(faces, images[i].shape, self.min_score)
            if cache is not None:
                cache.put(cache_keys[i], chosen[i])
        return chosen

    def chips(self, images: list[np.ndarray], keys: Sequence[str] | None = None) -> list[ChipResult]:
        results = []
        for image, face in zip(images, self.chosen_faces(images, keys)):
            if face is not None:
                results.append(ChipResult(self.aligner.align(image, face).chip, face, True))
            elif self.fallback == "centre":  # fixed landmarks by definition: never refined
                fixed = centre_face(image.shape)
                results.append(ChipResult(unrefined(self.aligner).align(image, fixed).chip, fixed, False))
            else:
                results.append(ChipResult(None, None, False))
        return results


class ImageEmbedder:
    """Embeddings of images by key, through a :class:`FaceSource` and an embedder, cached in memory.

    The cache key is (image key, detector label, model label); the model label should carry the model's
    checksum so that two models never share entries. The caller's image key must encode any variant
    (e.g. ``"degraded:Name/Name_0001.jpg"``).
    """

    def __init__(
        self, source: FaceSource, embedder: EmbedderLike, detector_label: str, model_label: str, batch_size: int = 32
    ) -> None:
        self.source = source
        self.embedder = embedder
        self.detector_label = detector_label
        self.model_label = model_label
        self.batch_size = max(1, int(batch_size))
        self._cache: dict[tuple[str, str, str], ImageEmbedding] = {}

    def _key(self, image_key: str) -> tuple[str, str, str]:
        return (image_key, self.detector_label, self.model_label)

    def embed(
        self, image_keys: Sequence[str], load: Callable[[str], np.ndarray], progress: str | None = None
    ) -> dict[str, ImageEmbedding]:
        """Embed every key (each loaded once with ``load(key)``); returns key -> ImageEmbedding."""
        todo = [k for k in dict.fromkeys(image_keys) if self._key(k) not in self._cache]
        bar = _progress(len(todo), progress)
        try:
            for start in range(0, len(todo), self.batch_size):
                keys = todo[start : start + self.batch_size]
                self._embed_batch(keys, [load(k) for k in keys])
                if bar is not None:
                    bar.update(len(keys))
        finally:
            if bar is not None:
                bar.close()
        return {k: self._cache[self._key(k)] for k in image_keys}

    def _embed_batch(self, keys: list[str], images: list[np.ndarray]) -> None:
        results = self.source.chips(images, keys)
        with_chip = [i for i, r in enumerate(results) if r.chip is not None]
        vectors = (
            self.embedder.embed(np.stack([chip for r in results if (chip := r.chip) is not None]))
            if with_chip
            else np.zeros((0, 0), np.float32)
        )
        by_index = dict(zip(with_chip, vectors))
        for i, (key, result) in enumerate(zip(keys, results)):
            vector = by_index.get(i)
            self._cache[self._key(key)] = ImageEmbedding(
                None if vector is None else np.asarray(vector, np.float32), result.found
            )


def _progress(total: int, desc: str | None):
    if not desc or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)


@dataclass(frozen=True)
class RecognizerParts:
    """The recognizer side of an evaluation: aligner to its template, ONNX embedder, a label with its checksum."""

    aligner: AlignerLike
    embedder: EmbedderLike
    label: str  # "<name>@<sha256[:12]>"
    path: Path


def build_recognizer(
    model: Path | None,
    batch_size: int = 32,
    template: np.ndarray | None = None,
    flip_average: bool = False,
    refine_landmarks: bool = False,
) -> RecognizerParts:
    """Recognizer from ``models/manifest.yaml`` (the default one when ``model`` is None) or a user ONNX.

    ``template`` ((5, 2) chip pixels) overrides the manifest's alignment template; the chip size is the model's
    input size. The checksum is verified for manifest models and computed for the label otherwise.
    ``flip_average``: the runtime's test-time flip (vigil.embed); the label gets ``+flip``.
    ``refine_landmarks``: the runtime's landmark refiner (vigil.refine, the manifest's default landmark model) runs
    on each face before it is aligned; the label gets ``+lm<checksum>``.
    """
    from vigil.align import Aligner
    from vigil.embed import OnnxEmbedder
    from vigil.models import sha256_of
    from vigil.recognizer import build_embedder

    if template is None:
        from vigil.models import ModelRegistry

        spec = ModelRegistry().resolve("recognizer", model)
        path, template, sha = spec.path, spec.alignment_template, spec.sha256
        if template is None:
            raise VigilError(f"{spec.path}: the manifest gives no alignment_template for this recognizer")
        embedder = build_embedder(spec, batch_size=batch_size, flip_average=flip_average)
    else:
        if model is None:
            raise ValueError("a model path is needed with an explicit template")
        path, sha = Path(model), None
        embedder = OnnxEmbedder(path, batch_size=batch_size, flip_average=flip_average)
    sha = sha or sha256_of(path)
    aligner: AlignerLike = Aligner(np.asarray(template, dtype=np.float32), embedder.input_size)
    label = f"{path.stem}@{sha[:12]}{'+flip' if flip_average else ''}"
    if refine_landmarks:
        from vigil.refine import RefiningAligner, default_landmark_refiner

        refiner, _, landmarks_sha = default_landmark_refiner()
        aligner = RefiningAligner(aligner, refiner)
        label += f"+lm{landmarks_sha[:8]}"
    return RecognizerParts(aligner=aligner, embedder=embedder, label=label, path=path)


def build_detector(
    detector: Path | None, min_score: float = DEFAULT_MIN_SCORE, batch_size: int = 16
) -> tuple[DetectBatch, str]:
    """vigil's detector from the manifest (the default when ``detector`` is None): (batch detect callable, label)."""
    from vigil.detect import FaceDetector
    from vigil.models import ModelRegistry, sha256_of

    spec = ModelRegistry().resolve("detector", detector)
    imgsz = max(spec.input_size)
    face_detector = FaceDetector(
        spec.path, imgsz=imgsz, conf_threshold=min_score, batch_size=batch_size, model_format=spec.format
    )
    sha = spec.sha256 or sha256_of(spec.path)
    return face_detector.detect, f"{spec.path.stem}@{sha[:12]}/imgsz{imgsz}"
