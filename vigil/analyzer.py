"""Detect -> align -> embed for a batch of images, with per-stage timing.

The three stages stay in their own modules (``detect``, ``align``, ``embed``); this class only wires them and counts
time, so the pipeline, enrollment and benchmarks share one path from pixels to embeddings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from vigil.types import AlignedFace, Embedding, Face, Observation


class Detector(Protocol):
    def detect(self, frames: list[np.ndarray]) -> list[list[Face]]: ...


class Aligner(Protocol):
    def align(self, image: np.ndarray, face: Face) -> AlignedFace: ...


class Embedder(Protocol):
    def embed(self, chips: np.ndarray) -> np.ndarray: ...


@dataclass
class StageTimes:
    """Accumulated wall time per stage (seconds) and counts, for status lines and `vigil bench pipeline`."""

    seconds: dict[str, float] = field(default_factory=lambda: {"detect": 0.0, "align": 0.0, "embed": 0.0})
    frames: int = 0
    faces: int = 0

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


class FaceAnalyzer:
    """Runs the face stages on a batch of frames; faces narrower than ``min_face_px`` are not embedded."""

    def __init__(self, detector: Detector, aligner: Aligner, embedder: Embedder, min_face_px: int) -> None:
        self.detector = detector
        self.aligner = aligner
        self.embedder = embedder
        self.min_face_px = min_face_px
        self.times = StageTimes()

    def observe(self, images: list[np.ndarray]) -> list[list[Observation]]:
        """Every detected face of every image, one list per image in input order; faces at least ``min_face_px``
        wide carry an embedding, smaller ones only their box (the tracker still follows them)."""
        if not images:
            return []
        start = time.perf_counter()
        faces_per_image = self.detector.detect(images)
        self.times.add("detect", time.perf_counter() - start)

        start = time.perf_counter()
        to_embed: list[tuple[int, int, AlignedFace]] = []
        for image_index, (image, faces) in enumerate(zip(images, faces_per_image)):
            for face_index, face in enumerate(faces):
                if face.width_px >= self.min_face_px:
                    to_embed.append((image_index, face_index, self.aligner.align(image, face)))
        self.times.add("align", time.perf_counter() - start)

        start = time.perf_counter()
        vectors = self._embed([aligned for _, _, aligned in to_embed])
        self.times.add("embed", time.perf_counter() - start)

        embeddings = {(i, j): Embedding(aligned, vector) for (i, j, aligned), vector in zip(to_embed, vectors)}
        self.times.frames += len(images)
        self.times.faces += len(to_embed)
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
