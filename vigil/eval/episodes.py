"""Few-shot episodes over cached embeddings: the watchlist's geometry, open set.

An **episode** is one watchlist (its shape, ``Geometry``, is defined once in :mod:`vigil.eval.geometry` for the
benchmark and for meta-training alike): ``N`` identities, each enrolled from ``K`` clean photos (the support), and a
stream of degraded camera faces (the queries): up to ``queries_per_identity`` degraded views of *other* photos of
each listed person, plus up to ``impostor_queries_per_identity`` degraded views of each of up to
``impostor_identities`` people who are not on the list. A listed person needs at least ``K + 1`` photos with a face
(one to be seen by the camera); impostors need one found view. Views are those of ``pipelines.meta.embed_cache``
(the runtime path on ``Degrader.degrade_scene`` images); a view whose detected face is narrower than
``min_face_px`` is left out, as the runtime does not recognise such faces (``detector.min_face_px``, default 20).

The pool file (``.npz``, written by ``pipelines.meta.embed_cache``): ``files`` (P,), ``identities`` (P,),
``clean`` (P, D), ``clean_found`` (P,), ``views`` (V, P, D), ``view_found`` (V, P), ``view_face_px`` (V, P).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vigil.errors import VigilError
from vigil.eval.geometry import Geometry

POOL_KEYS = ("files", "identities", "clean", "clean_found", "views", "view_found", "view_face_px")
DEFAULT_MIN_FACE_PX = 20.0


@dataclass(frozen=True)
class EmbeddingPool:
    """Cached embeddings of photos of identities: clean (enrolment) and degraded (camera) views."""

    name: str
    files: np.ndarray  # (P,) str
    identities: np.ndarray  # (P,) str
    clean: np.ndarray  # (P, D) float32
    clean_found: np.ndarray  # (P,) bool
    views: np.ndarray  # (V, P, D) float32
    view_found: np.ndarray  # (V, P) bool: found and at least min_face_px wide

    @property
    def dim(self) -> int:
        return int(self.clean.shape[1])

    def restrict(self, keep_identities: Iterable[str]) -> EmbeddingPool:
        """The photos of ``keep_identities`` only."""
        rows = np.flatnonzero(np.isin(self.identities, np.array(sorted(set(keep_identities)), dtype=str)))
        return EmbeddingPool(
            self.name,
            self.files[rows],
            self.identities[rows],
            self.clean[rows],
            self.clean_found[rows],
            self.views[:, rows],
            self.view_found[:, rows],
        )

    def identity_set(self) -> set[str]:
        return {str(i) for i in np.unique(self.identities)}


def load_pool(path: Path, min_face_px: float = DEFAULT_MIN_FACE_PX) -> EmbeddingPool:
    """A pool file (module docstring); VigilError naming it when absent or malformed."""
    path = Path(path)
    if not path.is_file():
        raise VigilError(f"{path}: embedding pool not found (python -m pipelines.meta.embed_cache makes it)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in POOL_KEYS if k not in data.files]
            if missing:
                raise VigilError(f"{path}: not an embedding pool (missing {missing})")
            arrays = {k: data[k] for k in POOL_KEYS}
    except (OSError, ValueError) as exc:
        raise VigilError(f"{path}: cannot read embedding pool ({exc.__class__.__name__})") from None
    found = arrays["view_found"] & (arrays["view_face_px"] >= min_face_px)
    return EmbeddingPool(
        path.stem,
        arrays["files"].astype(str),
        arrays["identities"].astype(str),
        arrays["clean"].astype(np.float32),
        arrays["clean_found"].astype(bool),
        arrays["views"].astype(np.float32),
        found.astype(bool),
    )


@dataclass(frozen=True)
class Episode:
    """Indices into a pool: ``support`` (N, K) photo rows of the listed identities (in list order); queries as
    (photo row, view) pairs with their label, the listed identity's position or -1 for an impostor."""

    identities: tuple[str, ...]
    support: np.ndarray  # (N, K) int
    query_photo: np.ndarray  # (Q,) int
    query_view: np.ndarray  # (Q,) int
    query_label: np.ndarray  # (Q,) int, -1 = impostor

    @property
    def n_genuine(self) -> int:
        return int((self.query_label >= 0).sum())


class EpisodeSampler:
    """Draws episodes from one pool; each identity's usable photos and views are indexed once."""

    def __init__(self, pool: EmbeddingPool) -> None:
        self.pool = pool
        names = sorted(pool.identity_set())
        self._photos: dict[str, np.ndarray] = {}
        self._views: dict[str, np.ndarray] = {}  # (M, 2): photo row, view
        for name in names:
            rows = np.flatnonzero((pool.identities == name) & pool.clean_found)
            self._photos[name] = rows
            pairs = [(row, v) for row in rows for v in range(pool.view_found.shape[0]) if pool.view_found[v, row]]
            self._views[name] = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        self._names = names

    def eligible(self, k_shot: int) -> list[str]:
        """Identities that can be listed with ``k_shot`` photos and still have a photo for the camera."""
        return [n for n in self._names if len(self._photos[n]) >= k_shot + 1]

    def sample(self, geometry: Geometry, rng: np.random.Generator) -> Episode:
        eligible = self.eligible(geometry.k_shot)
        if len(eligible) < geometry.n_way:
            raise VigilError(
                f"pool {self.pool.name}: {len(eligible)} identities have >= {geometry.k_shot + 1} photos "
                f"with a face, {geometry.n_way} needed for a {geometry.n_way}-way episode"
            )
        listed = [eligible[i] for i in rng.choice(len(eligible), geometry.n_way, replace=False)]
        support, q_photo, q_view, q_label = [], [], [], []
        for label, name in enumerate(listed):
            photos = rng.permutation(self._photos[name])
            support.append(photos[: geometry.k_shot])
            views = self._views[name][~np.isin(self._views[name][:, 0], photos[: geometry.k_shot])]
            take = views[rng.permutation(len(views))[: geometry.queries_per_identity]]
            q_photo.append(take[:, 0])
            q_view.append(take[:, 1])
            q_label.append(np.full(len(take), label))
        on_list = set(listed)
        others = [n for n in self._names if n not in on_list and len(self._views[n])]
        for i in rng.permutation(len(others))[: geometry.impostor_identities]:
            views = self._views[others[i]]
            take = views[rng.permutation(len(views))[: geometry.impostor_queries_per_identity]]
            q_photo.append(take[:, 0])
            q_view.append(take[:, 1])
            q_label.append(np.full(len(take), -1))
        return Episode(
            tuple(listed),
            np.stack(support).astype(np.int64),
            np.concatenate(q_photo).astype(np.int64),
            np.concatenate(q_view).astype(np.int64),
            np.concatenate(q_label).astype(np.int64),
        )

    def episodes(self, geometry: Geometry, count: int, seed: int) -> list[Episode]:
        """``count`` episodes from the generator ``(seed, K)``: the same list for every method that asks."""
        rng = np.random.default_rng([int(seed), geometry.k_shot])
        return [self.sample(geometry, rng) for _ in range(count)]

    def episode_arrays(self, geometry: Geometry, count: int, seed: int) -> list[EpisodeArrays]:
        """The embeddings of :meth:`episodes` (what the benchmark and meta-training's validation score)."""
        return [episode_arrays(self.pool, e) for e in self.episodes(geometry, count, seed)]


@dataclass(frozen=True)
class EpisodeArrays:
    """An episode's embeddings: ``support`` (N, K, D) clean; ``support_views`` (V, N, K, D) and
    ``support_view_found`` (V, N, K): the degraded views of the support photos (for test-time tuning);
    ``queries`` (Q, D) degraded; ``labels`` (Q,)."""

    support: np.ndarray
    support_views: np.ndarray
    support_view_found: np.ndarray
    queries: np.ndarray
    labels: np.ndarray


def episode_arrays(pool: EmbeddingPool, episode: Episode) -> EpisodeArrays:
    return EpisodeArrays(
        support=pool.clean[episode.support],
        support_views=pool.views[:, episode.support],
        support_view_found=pool.view_found[:, episode.support],
        queries=pool.views[episode.query_view, episode.query_photo],
        labels=episode.query_label,
    )
