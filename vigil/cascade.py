"""The recognition cascade: the ensemble's fast member scores every face first; the whole ensemble runs only where
it can change a decision.

On the CPU the default recognizer (``dlib-scene-sface``, vigil/ensemble.py) spends most of its time in SFace: four
network passes per face with flip averaging, the dlib member about a tenth of the work. Most faces a camera sees
belong to nobody on the watchlist. The cascade embeds every scheduled face with the first (fast) member, scores it
against the watchlist on that member's part of the gallery, and:

- a face whose best fast score is below ``reject_cosine`` is *nobody*: no full embedding (the pipeline lets it vote
  for nobody while its track has no full embedding, and not at all afterwards: vigil/pipeline.py);
- every other face (the uncertain band around the threshold and above) gets the whole ensemble's embedding, built
  from the fast member's embedding already computed plus the other members (:meth:`EnsembleEmbedder.complete`), so
  it is exactly the embedding the ensemble alone would give. Every vote for a person, hence every alert, is still
  decided by the whole ensemble at the shipped threshold.

The false-match rate at the shipped threshold cannot rise: a face is accepted for a person only if its ensemble score
passes the threshold, as without the cascade, and additionally its fast score passes ``reject_cosine``; the cascade
can only turn an accepted face into a rejected one. What it can cost is genuine matches whose fast score is below
``reject_cosine``; ``pipelines/recognizer/cascade_calibrate.py`` chooses ``reject_cosine`` so that this loss stays
below a stated fraction on the watchlist case and reports it (the value and the command that made it are in
``models/manifest.yaml``: ``cascade_reject_cosine[_flip_average]``).

The fast gallery is each person's prototype and photo embeddings cut to the fast member's part
(:meth:`EnsembleEmbedder.fast_part`), scored with the same max over prototype and photos as the full gallery
(:func:`vigil.rules.person_scores`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import numpy as np

from vigil.rules import Gallery
from vigil.types import AlignedFace, Embedding


class CascadeEmbedder(Protocol):
    """What the cascade needs from an ensemble (vigil.ensemble.EnsembleEmbedder)."""

    def embed_fast(self, chips: np.ndarray) -> np.ndarray: ...

    def complete(self, chips: np.ndarray, fast: np.ndarray) -> np.ndarray: ...

    def fast_part(self, vectors: np.ndarray) -> np.ndarray: ...


def best_scores(vectors: np.ndarray, gallery: Gallery) -> np.ndarray:
    """Each row's best person score (max over every person's prototype and photos): (N,) float32; -1 for an empty
    gallery."""
    if len(vectors) == 0 or len(gallery) == 0:
        return np.full(len(vectors), -1.0, np.float32)
    scores = np.max(gallery.prototypes @ vectors.T, axis=0)
    if len(gallery.photo_owner):
        scores = np.maximum(scores, np.max(gallery.photos @ vectors.T, axis=0))
    return scores.astype(np.float32)


def needs_full(fast_scores: np.ndarray, reject_cosine: float) -> np.ndarray:
    """Which faces go on to the whole ensemble: those whose best fast score reaches ``reject_cosine``."""
    return np.asarray(fast_scores) >= reject_cosine


def fast_gallery(gallery: Gallery, embedder: CascadeEmbedder) -> Gallery:
    """The gallery cut to the fast member's part of every vector (rows re-normalised)."""
    people = [
        replace(
            person,
            prototype=embedder.fast_part(np.asarray(person.prototype, np.float32)[None])[0],
            photo_embeddings=embedder.fast_part(
                np.asarray(person.photo_embeddings, np.float32).reshape(-1, np.asarray(person.prototype).shape[-1])
            ),
        )
        for person in gallery.people
    ]
    return Gallery.from_people(people)


class RecognitionCascade:
    """Embeds aligned faces through the cascade; ``embed`` returns None for a face the fast member rejects."""

    def __init__(self, embedder: CascadeEmbedder, reject_cosine: float) -> None:
        self.embedder = embedder
        self.reject_cosine = float(reject_cosine)
        self._galleries: tuple[Gallery, Gallery] | None = None  # (full gallery, its fast cut), rebuilt on a reload

    def embed(self, aligned: list[AlignedFace], gallery: Gallery) -> list[Embedding | None]:
        if not aligned:
            return []
        chips = np.stack([face.chip for face in aligned])
        fast = self.embedder.embed_fast(chips)
        keep = needs_full(best_scores(fast, self._fast_gallery(gallery)), self.reject_cosine)
        out: list[Embedding | None] = [None] * len(aligned)
        if keep.any():
            vectors = self.embedder.complete(chips[keep], fast[keep])
            for position, vector in zip(np.flatnonzero(keep), vectors):
                out[int(position)] = Embedding(aligned[int(position)], vector)
        return out

    def _fast_gallery(self, gallery: Gallery) -> Gallery:
        if self._galleries is None or self._galleries[0] is not gallery:
            self._galleries = (gallery, fast_gallery(gallery, self.embedder))
        return self._galleries[1]
