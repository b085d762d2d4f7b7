"""A recognizer made of several shipped recognizers: one aligned chip in, one concatenated embedding out.

The ensemble is a small YAML file under ``models/recognizer/`` (listed in ``models/manifest.yaml`` with
``format: ensemble``, its own alignment template and chip size, and checksum-verified like any model file)::

    members:   # manifest names of ONNX recognizers, pinned by checksum
      - {model: dlib-resnet-v1-scene, weight: 0.68, sha256: f3ce4ab7...}
      - {model: sface-2021dec, weight: 0.32, sha256: 12eb2704...}

The aligner cuts one chip with the ensemble's template. Each member's own chip is a fixed scale-and-shift of it
(both templates are left-right symmetric, so the similarity between them has no rotation): it is resampled with
separable area (shrinking) or linear (enlarging) weights, then embedded by the member's ONNX model. The output is
``concat(sqrt(w_i) * e_i)`` with unit member embeddings ``e_i`` and weights summing to 1, so it has unit norm and
the cosine of two ensemble embeddings is exactly ``sum_i w_i * cos_i``: a weighted score fusion that keeps the
embedding stage's contract (chips -> unit vectors) for the matcher, the tracker's votes and the enrolment cache.
Each member's sha256 is part of the ensemble file, so the ensemble's own checksum (the key of enrolment caches)
changes whenever a member does, and a member replaced under the same name is refused rather than mixed in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from vigil.align import estimate_similarity
from vigil.embed import OnnxEmbedder, check_chips, unit_rows
from vigil.errors import ModelError
from vigil.models import ModelRegistry, ModelSpec, read_members

MAX_ROTATION = 1e-6  # |sin| of the rotation between the ensemble and a member template: must be a pure scale+shift


def resample_matrix(out_size: int, in_size: int, scale: float, shift: float) -> np.ndarray:
    """(out_size, in_size) weights W with ``out[u] = sum_x W[u, x] * in[x]`` for ``u = scale * x + shift``.

    Pixel centres are at integer coordinates (cv2.warpAffine's convention, which vigil.align uses for templates).
    Shrinking (scale < 1) averages the input pixels under each output pixel's footprint (area weights, like
    cv2.INTER_AREA); enlarging interpolates linearly. Samples outside the input repeat its edge (the aligner's
    ``replicate`` border).
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    centres = (np.arange(out_size, dtype=np.float64) - shift) / scale  # each output pixel's centre, input pixels
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    if scale < 1.0:
        half = 0.5 / scale
        first, last = int(np.floor(centres.min() - half)), int(np.ceil(centres.max() + half))
        for x in range(first, last + 1):
            overlap = np.clip(np.minimum(centres + half, x + 0.5) - np.maximum(centres - half, x - 0.5), 0.0, None)
            weights[:, min(max(x, 0), in_size - 1)] += overlap
    else:
        clipped = np.clip(centres, 0.0, in_size - 1.0)
        left = np.floor(clipped).astype(int)
        right = np.minimum(left + 1, in_size - 1)
        frac = clipped - left
        weights[np.arange(out_size), left] += 1.0 - frac
        weights[np.arange(out_size), right] += frac
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


class ChipResampler:
    """The member chip (``member_size``, ``member_template``) from an ensemble chip (``chip_size``, ``template``)."""

    def __init__(self, template: np.ndarray, chip_size: int, member_template: np.ndarray, member_size: int) -> None:
        matrix = estimate_similarity(np.asarray(template, np.float64), np.asarray(member_template, np.float64))
        scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
        if abs(matrix[1, 0]) > MAX_ROTATION * scale or abs(matrix[0, 1]) > MAX_ROTATION * scale:
            raise ModelError("ensemble and member templates differ by a rotation: both must be left-right symmetric")
        self.member_size = int(member_size)
        self.rows = resample_matrix(member_size, chip_size, scale, float(matrix[1, 2]))
        self.cols = resample_matrix(member_size, chip_size, scale, float(matrix[0, 2]))

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S, 3] -> uint8 [N, s, s, 3]."""
        planes = chips.astype(np.float32).transpose(0, 3, 1, 2)  # [N, 3, S, S]
        out = (self.rows @ planes @ self.cols.T).transpose(0, 2, 3, 1)  # two small matmuls per plane
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class EnsembleEmbedder:
    """Same interface as vigil.embed.OnnxEmbedder: ``embed(chips) -> unit vectors``, ``input_size``, ``dim``."""

    def __init__(
        self,
        members: Sequence[tuple[float, OnnxEmbedder, ChipResampler]],
        chip_size: int,
        logger: logging.Logger | None = None,
    ) -> None:
        self._members = list(members)
        self.input_size = int(chip_size)
        self.dim = int(sum(embedder.dim for _, embedder, _ in self._members))
        self.provider = self._members[0][1].provider
        self.flip_average = self._members[0][1].flip_average
        (logger or logging.getLogger("vigil.embed")).info(
            "ensemble embedder: %s, input %dx%d, dim %d",
            ", ".join(f"{e.model_path.name} x{w:g}" for w, e, _ in self._members),
            chip_size,
            chip_size,
            self.dim,
        )

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return self.complete(chips, self.embed_fast(chips))

    @property
    def fast_member(self) -> str:
        """The first member's file name: the one the recognition cascade runs first (vigil/cascade.py)."""
        return self._members[0][1].model_path.name

    def embed_fast(self, chips: np.ndarray) -> np.ndarray:
        """The first member's unit embeddings of ``chips``: the cascade's fast stage."""
        check_chips(chips, self.input_size)
        _, embedder, resample = self._members[0]
        return embedder.embed(resample(chips))

    def complete(self, chips: np.ndarray, fast: np.ndarray) -> np.ndarray:
        """The ensemble's embeddings of ``chips`` given their first-member embeddings (:meth:`embed_fast`): the
        other members run, the first is not run again."""
        check_chips(chips, self.input_size)
        parts = [np.sqrt(self._members[0][0]) * fast]
        parts += [np.sqrt(weight) * embedder.embed(resample(chips)) for weight, embedder, resample in self._members[1:]]
        return unit_rows(np.concatenate(parts, axis=1).astype(np.float32))

    def fast_part(self, vectors: np.ndarray) -> np.ndarray:
        """The first member's unit embeddings inside ensemble embeddings (their first slice, re-normalised): what
        :meth:`embed_fast` gave for the same chips, up to float rounding."""
        return unit_rows(np.asarray(vectors, np.float32)[:, : self._members[0][1].dim])


def build_ensemble_embedder(
    spec: ModelSpec,
    providers: Sequence[str],
    batch_size: int,
    flip_average: bool,
    logger: logging.Logger | None = None,
    registry: ModelRegistry | None = None,
) -> EnsembleEmbedder:
    """The ensemble of ``spec`` (format ensemble): members resolved by manifest name, checksums verified."""
    if spec.alignment_template is None:
        raise ModelError(f"{spec.path}: the manifest gives no alignment_template for this ensemble")
    registry = registry or ModelRegistry()
    chip_size = int(spec.input_size[0])
    members = []
    for member in read_members(spec.path):
        member_spec = registry.named(member.model, "recognizer", where=f"{spec.path}: members")
        if member_spec.format != "onnx" or member_spec.alignment_template is None:
            raise ModelError(
                f"{spec.path}: members: {member.model} must be an ONNX recognizer with an alignment_template"
            )
        if member_spec.sha256 != member.sha256:
            raise ModelError(
                f"{spec.path}: members: {member.model} is not the file this ensemble was made with "
                f"(sha256 {str(member_spec.sha256)[:12]}..., pinned {member.sha256[:12]}...)"
            )
        embedder = OnnxEmbedder(
            member_spec.path,
            providers=providers,
            batch_size=batch_size,
            logger=logger,
            flip_average=flip_average,
            spin_wait=False,
        )
        resample = ChipResampler(
            spec.alignment_template, chip_size, member_spec.alignment_template, embedder.input_size
        )
        members.append((member.weight, embedder, resample))
    return EnsembleEmbedder(members, chip_size, logger)
