"""Detect -> refine -> align -> embed for a batch of images, with per-stage timing.

The four stages stay in their own modules (``detect``, ``refine``, ``align``, ``embed``); this class only wires them
and counts time, so the pipeline, enrollment and benchmarks share one path from pixels to embeddings. The watch
pipeline calls ``detect`` and ``embed_faces`` apart (it tracks in between); enrollment and evaluation call
``observe``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from vigil.types import AlignedFace, Embedding, Face, Observation


class Detector(Protocol):
    def detect(self, frames: list[np.ndarray]) -> list[list[Face]]: ...


class Refiner(Protocol):
    def refine(self, items: list[tuple[np.ndarray, Face]]) -> list[Face]: ...


class Aligner(Protocol):
    def align(self, image: np.ndarray, face: Face) -> AlignedFace: ...


class Embedder(Protocol):
    def embed(self, chips: np.ndarray) -> np.ndarray: ...


@dataclass
class StageTimes:
    """Accumulated wall time per stage (seconds) and counts, for status lines and `vigil bench pipeline`."""

    seconds: dict[str, float] = field(
        default_factory=lambda: {"detect": 0.0, "refine": 0.0, "align": 0.0, "embed": 0.0}
    )
    frames: int = 0
    faces: int = 0

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


class FaceAnalyzer:
    """Runs the face stages on a batch of frames; faces narrower than ``min_face_px`` are not embedded.

    ``observe`` runs all three stages on every face (enrollment, evaluation). The watch pipeline calls ``detect`` and
    ``embed_faces`` separately, because it tracks faces first and embeds only those its schedule asks for.
    """

    def __init__(
        self, detector: Detector, aligner: Aligner, embedder: Embedder, min_face_px: int, refiner: Refiner | None = None
    ) -> None:
        self.detector = detector
        self.aligner = aligner
        self.embedder = embedder
        self.min_face_px = min_face_px
        self.refiner = refiner
        self.times = StageTimes()

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Every detected face of every image, one list per image in input order."""
        if not images:
            return []
        start = time.perf_counter()
        faces_per_image = self.detector.detect(images)
        self.times.add("detect", time.perf_counter() - start)
        self.times.frames += len(images)
        return faces_per_image

    def recognisable(self, face: Face) -> bool:
        """Whether ``face`` is wide enough (``min_face_px``) to be worth embedding."""
        return face.width_px >= self.min_face_px

    def embed_faces(self, items: list[tuple[np.ndarray, Face]]) -> list[Embedding]:
        """Refine the landmarks (when a refiner is set), align and embed each (image, face) pair, all in one batch;
        one embedding per pair, in order. The embedding's face carries the refined landmarks."""
        return self.embed_aligned(self.align_faces(items))

    def align_faces(self, items: list[tuple[np.ndarray, Face]]) -> list[AlignedFace]:
        """Refine the landmarks (when a refiner is set) and align each (image, face) pair: one chip per pair."""
        if self.refiner is not None and items:
            start = time.perf_counter()
            items = [(image, face) for (image, _), face in zip(items, self.refiner.refine(items))]
            self.times.add("refine", time.perf_counter() - start)
        start = time.perf_counter()
        aligned = [self.aligner.align(image, face) for image, face in items]
        self.times.add("align", time.perf_counter() - start)
        return aligned

    def embed_aligned(self, aligned: list[AlignedFace]) -> list[Embedding]:
        """One embedding per aligned face, in one batch."""
        start = time.perf_counter()
        vectors = self._embed(aligned)
        self.times.add("embed", time.perf_counter() - start)
        self.times.faces += len(aligned)
        return [Embedding(chip, vector) for chip, vector in zip(aligned, vectors)]

    def observe(self, images: list[np.ndarray]) -> list[list[Observation]]:
        """Every detected face of every image, one list per image in input order; faces at least ``min_face_px``
        wide carry an embedding, smaller ones only their box."""
        faces_per_image = self.detect(images)
        wanted = [
            (i, j) for i, faces in enumerate(faces_per_image) for j, face in enumerate(faces) if self.recognisable(face)
        ]
        embeddings = dict(zip(wanted, self.embed_faces([(images[i], faces_per_image[i][j]) for i, j in wanted])))
        return [
            [Observation(face, embeddings.get((i, j))) for j, face in enumerate(faces)]
            for i, faces in enumerate(faces_per_image)
        ]

    def analyze(self, images: list[np.ndarray]) -> list[list[Embedding]]:
        """Only the embedded faces of every image (enrollment, evaluation)."""
        return [[o.embedding for o in obs if o.embedding is not None] for obs in self.observe(images)]

    def _embed(self, aligned: list[AlignedFace]) -> np.ndarray:
        if not aligned:
            return np.zeros((0, 0), dtype=np.float32)
        return self.embedder.embed(np.stack([a.chip for a in aligned]))
