"""The few-shot embedding cache: every photo of a few-shot pool embedded once through the runtime path.

Meta-training and the few-shot benchmark act on embeddings only (the adapter sits on top of the shipped
recognizer), so the expensive part, detect -> refine -> align -> embed, happens once, here:

* **clean view** (the enrolment photo): vigil's default detector on the whole photo (score >= 0.3), the face chosen
  by the source's rule (LFW: the confident face nearest the image centre, as in the LFW protocol; CelebA: the largest
  ``area x centrality``, as ``pipelines.recognizer.faces_dataset`` does), the runtime's landmark refiner, the
  default recognizer's aligner and its embedder with flip averaging (the runtime default). A photo in which the
  detector finds no face cannot be enrolled and has no views (``clean_found`` False).
* **degraded views** (the camera's faces): view ``v`` of a photo is ``Degrader.degrade_scene`` (the project's CCTV
  camera model, ``pipelines.recognizer.degrade``: the photo shrunk so the face is 16-48 px wide, low light / gamma,
  IR grey, blur, sensor noise, JPEG 10-50, no up-sampling), seeded by ``view_seed(seed, v, photo_index)`` with a
  stable index from the photo's path (so a view never depends on batching or on the other photos). The default
  detector then runs on the small image and the face matching the clean face's (refined) landmarks, scaled, is taken
  (``scene_views.match_face``); it is refined, aligned and embedded like the clean view. A view whose face the
  detector misses is marked not found: the runtime would not see that face either.

Output ``<out>/<source>.npz`` (keys below) plus ``<out>/<source>.json`` (model labels, degrade settings, seed,
counts, the command), built from resumable chunks in ``<out>/<source>_chunks/`` (one file per identity, identities
in a seeded order, so that ``--merge-only`` makes a usable pool of a random subset from a run stopped early):

* ``files`` (N,) ``"<source>:<relative path>"``, ``identities`` (N,) ``"<source>:<identity>"``;
* ``clean`` (N, D) float32 unit embeddings (zeros where ``clean_found`` is False), ``clean_found`` (N,),
  ``clean_face_px`` (N,) the detected box width;
* ``views`` (V, N, D), ``view_found`` (V, N), ``view_face_px`` (V, N) detected box width in the small image (0 when
  not found), ``view_target_px`` (V, N) the face width the degrader aimed at.

    python -m pipelines.meta.embed_cache --source celeba [--views 3] [--out work/meta/cache]
    python -m pipelines.meta.embed_cache --source lfw --min-images 4 --max-per-person 15

LFW photos are cached for evaluation only: nothing trains on them (``pipelines.meta.splits``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vigil.errors import VigilError, run_reporting_errors
from vigil.paths import data_path, repo_path
from vigil.types import Face

DEFAULT_OUT = Path("work/meta/cache")
SOURCES = ("celeba", "lfw")
MIN_SCORE = 0.3  # the LFW evaluation's and the scene views' detector threshold


@dataclass(frozen=True)
class PhotoRef:
    """One photo of a pool: ``source`` (celeba | lfw), ``identity`` (folder name), ``rel`` (path under the root)."""

    source: str
    identity: str
    rel: str

    @property
    def key(self) -> str:
        return f"{self.source}:{self.rel}"


def list_pool(source: str, root: Path, min_images: int = 2, max_per_person: int | None = None) -> list[PhotoRef]:
    """The photos of ``<root>/<identity>/<file>.jpg`` of identities with at least ``min_images`` photos, the first
    ``max_per_person`` (sorted by name) of each; sorted by identity then file."""
    if source not in SOURCES:
        raise VigilError(f"--source: expected one of {SOURCES}, got {source!r}")
    if not root.is_dir():
        raise VigilError(f"{root}: {source} folder not found")
    refs: list[PhotoRef] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f.name for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if len(files) < min_images:
            continue
        refs.extend(PhotoRef(source, folder.name, f"{folder.name}/{name}") for name in files[:max_per_person])
    if not refs:
        raise VigilError(f"{root}: no identity folder with >= {min_images} photos")
    return refs


def photo_index(ref: PhotoRef) -> int:
    """A stable 63-bit index from the photo's key (seeds its degraded views; never Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(ref.key.encode("utf-8")).digest()[:8], "little") >> 1


def largest_central_face(faces: Sequence[Face], shape: tuple[int, ...], min_score: float) -> Face | None:
    """The face with ``score >= min_score`` and the largest ``area x (1 - 0.5 x normalised centre distance)`` (the
    CelebA chip set's rule: in-the-wild photos whose subject is large but not always centred)."""
    h, w = shape[:2]
    best, best_rank = None, -1.0
    for face in faces:
        if face.score < min_score:
            continue
        centre = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
        distance = float(np.linalg.norm((centre - [w / 2, h / 2]) / [w / 2, h / 2])) / np.sqrt(2)
        rank = face.width_px * face.height_px * (1.0 - 0.5 * min(distance, 1.0))
        if rank > best_rank:
            best, best_rank = face, rank
    return best


def clean_face_rule(source: str) -> Callable[[Sequence[Face], tuple[int, ...], float], Face | None]:
    """The face-choice rule of a source's clean photos (see the module docstring)."""
    from vigil.eval.face_source import choose_face

    return choose_face if source == "lfw" else largest_central_face


@dataclass(frozen=True)
class ChunkViews:
    """The cache arrays of a run of photos (see the module docstring for each field)."""

    clean: np.ndarray
    clean_found: np.ndarray
    clean_face_px: np.ndarray
    views: np.ndarray
    view_found: np.ndarray
    view_face_px: np.ndarray
    view_target_px: np.ndarray


class ViewEmbedder:
    """Detect, choose, refine, align and embed the clean photo and its degraded views (module docstring)."""

    def __init__(
        self,
        detect_batch,
        aligner,
        embedder,
        degrader,
        choose: Callable,
        seed: int,
        views: int,
        min_score: float = MIN_SCORE,
        max_error_frac: float = 0.5,
    ) -> None:
        self.detect_batch = detect_batch
        self.aligner = aligner
        self.embedder = embedder
        self.degrader = degrader
        self.choose = choose
        self.seed = int(seed)
        self.views = int(views)
        self.min_score = float(min_score)
        self.max_error_frac = float(max_error_frac)

    def _embed(self, chips: list[np.ndarray]) -> np.ndarray:
        dim = int(self.embedder.dim)
        return self.embedder.embed(np.stack(chips)) if chips else np.zeros((0, dim), np.float32)

    def run(self, photos: list[np.ndarray], refs: list[PhotoRef]) -> ChunkViews:
        n, dim = len(photos), int(self.embedder.dim)
        out = ChunkViews(
            np.zeros((n, dim), np.float32),
            np.zeros(n, bool),
            np.zeros(n, np.float32),
            np.zeros((self.views, n, dim), np.float32),
            np.zeros((self.views, n), bool),
            np.zeros((self.views, n), np.float32),
            np.zeros((self.views, n), np.float32),
        )
        chosen = [
            self.choose(faces, image.shape, self.min_score) for image, faces in zip(photos, self.detect_batch(photos))
        ]
        found = [i for i, face in enumerate(chosen) if face is not None]
        aligned = {i: self.aligner.align(photos[i], chosen[i]) for i in found}  # refined landmarks in .face
        out.clean[found] = self._embed([aligned[i].chip for i in found])
        out.clean_found[found] = True
        out.clean_face_px[found] = [chosen[i].width_px for i in found]
        for view in range(self.views):
            self._run_view(view, photos, refs, found, aligned, out)
        return out

    def _run_view(self, view: int, photos, refs, found: list[int], aligned: dict, out: ChunkViews) -> None:
        from pipelines.recognizer.scene_views import match_face, view_seed

        small, expected = [], []
        for i in found:
            rng = np.random.default_rng(view_seed(self.seed, view, photo_index(refs[i])))
            width = float(out.clean_face_px[i])
            image, scale = self.degrader.degrade_scene(photos[i], width, rng)
            small.append(image)
            expected.append(aligned[i].face.landmarks * scale)
            out.view_target_px[view, i] = width * scale
        matched = [
            match_face(faces, want, self.max_error_frac) for faces, want in zip(self.detect_batch(small), expected)
        ]
        hits = [(i, image, face) for i, image, face in zip(found, small, matched) if face is not None]
        chips = [self.aligner.align(image, face).chip for _, image, face in hits]
        rows = [i for i, _, _ in hits]
        out.views[view, rows] = self._embed(chips)
        out.view_found[view, rows] = True
        out.view_face_px[view, rows] = [face.width_px for _, _, face in hits]


def concat_chunks(parts: list[ChunkViews]) -> ChunkViews:
    """Chunks of consecutive photos as one (photos on axis 0 for clean arrays, axis 1 for view arrays)."""
    fields = asdict(parts[0]).keys()
    return ChunkViews(
        **{f: np.concatenate([getattr(p, f) for p in parts], axis=1 if f.startswith("view") else 0) for f in fields}
    )


def save_cache(path: Path, refs: list[PhotoRef], data: ChunkViews, info: dict) -> None:
    """``path`` (.npz) and its ``.json`` sidecar (``info`` plus counts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp,
        files=np.array([r.key for r in refs]),
        identities=np.array([f"{r.source}:{r.identity}" for r in refs]),
        **asdict(data),
    )
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps({**info, "counts": cache_counts(refs, data)}, indent=1) + "\n")


def cache_counts(refs: list[PhotoRef], data: ChunkViews) -> dict:
    found = data.view_found[:, data.clean_found]
    px = data.view_target_px[:, data.clean_found]
    bins = {
        f"{lo}-{hi}px": round(float(found[(px >= lo) & (px < hi)].mean()), 4)
        if ((px >= lo) & (px < hi)).any()
        else None
        for lo, hi in ((16, 24), (24, 32), (32, 40), (40, 49))
    }
    return {
        "photos": len(refs),
        "identities": len({r.identity for r in refs}),
        "clean_found": int(data.clean_found.sum()),
        "views_per_photo": int(data.views.shape[0]),
        "view_found_fraction": round(float(found.mean()), 4) if found.size else None,
        "view_found_fraction_by_target_px": bins,
    }


def load_cache(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a cache file; VigilError naming it when absent."""
    path = Path(path)
    if not path.is_file():
        raise VigilError(f"{path}: embedding cache not found (run python -m pipelines.meta.embed_cache)")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", choices=SOURCES, required=True)
    ap.add_argument("--root", type=Path, default=None, help="default: <data>/celeba299 or <data>/lfw")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--views", type=int, default=3, help="degraded views per photo")
    ap.add_argument("--seed", type=int, default=27)
    ap.add_argument(
        "--min-images", type=int, default=None, help="identities with at least this many photos (celeba 2, lfw 4)"
    )
    ap.add_argument(
        "--max-per-person", type=int, default=None, help="at most this many photos per identity (first by name)"
    )
    ap.add_argument(
        "--limit", type=int, default=None, help="only the first N identities (a quick look; writes <source>_limitN)"
    )
    ap.add_argument("--merge-only", action="store_true", help="write the cache from the identities embedded so far")
    args = ap.parse_args(argv)
    args.command = "python -m pipelines.meta.embed_cache " + " ".join(sys.argv[1:] if argv is None else argv)
    return run_reporting_errors(lambda: _build(args))


def _parts(args: argparse.Namespace):
    from pipelines.recognizer.degrade import Degrader
    from vigil.eval.face_source import build_detector, build_recognizer

    recognizer = build_recognizer(None, batch_size=32, flip_average=True, refine_landmarks=True)
    detect_batch, detector_label = build_detector(None, min_score=MIN_SCORE)
    degrader = Degrader()
    embedder = ViewEmbedder(
        detect_batch,
        recognizer.aligner,
        recognizer.embedder,
        degrader,
        clean_face_rule(args.source),
        args.seed,
        args.views,
    )
    info = {
        "recognizer": recognizer.label,
        "detector": detector_label,
        "min_score": MIN_SCORE,
        "seed": args.seed,
        "views": args.views,
        "degrade": asdict(degrader.config),
        "max_error_frac": embedder.max_error_frac,
        "command": args.command,
    }
    return embedder, info


def identity_order(refs: list[PhotoRef], seed: int) -> list[list[PhotoRef]]:
    """The photos grouped by identity, identities in a seeded pseudo-random order (``sha256("<seed>:<identity>")``):
    a run stopped early leaves a random subset of complete identities, which ``--merge-only`` can still use."""
    groups: dict[str, list[PhotoRef]] = {}
    for ref in refs:
        groups.setdefault(ref.identity, []).append(ref)
    ranked = sorted(groups, key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).hexdigest())
    return [groups[name] for name in ranked]


def _build(args: argparse.Namespace) -> int:
    root = args.root or data_path("celeba299" if args.source == "celeba" else "lfw")
    min_images = args.min_images if args.min_images is not None else (4 if args.source == "lfw" else 2)
    refs = list_pool(args.source, root, min_images, args.max_per_person)
    groups = identity_order(refs, args.seed)[: args.limit]
    name = args.source if args.limit is None else f"{args.source}_limit{args.limit}"
    out = repo_path(args.out)
    chunk_dir = out / f"{name}_chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    embedder, info = (None, {"command": args.command}) if args.merge_only else _parts(args)
    info.update(root=str(root), min_images=min_images, max_per_person=args.max_per_person)
    done, parts, t0 = [], [], time.monotonic()
    for i, group in enumerate(groups):
        views = _identity_chunk(chunk_dir / f"{group[0].identity}.npz", group, root, embedder, args.views)
        if views is not None:
            done.extend(group)
            parts.append(views)
        if (i + 1) % 10 == 0 and embedder is not None:
            print(f"  {i + 1}/{len(groups)} identities, {len(done)} photos ({time.monotonic() - t0:.0f} s)", flush=True)
    if not parts:
        raise VigilError(f"{chunk_dir}: no identity embedded yet")
    data = concat_chunks(parts)
    info.update(identities_done=len(parts), identities_listed=len(groups), wall_s=round(time.monotonic() - t0, 1))
    save_cache(out / f"{name}.npz", done, data, info)
    print(json.dumps(cache_counts(done, data)))
    return 0


def _identity_chunk(
    chunk_file: Path, group: list[PhotoRef], root: Path, embedder: ViewEmbedder | None, views: int
) -> ChunkViews | None:
    """One identity's views: from its file when a previous run embedded these photos (or more of them, of which
    these are the first), else embedded now (None with ``embedder`` None: ``--merge-only`` skips it)."""
    import cv2

    keys = np.array([r.key for r in group])
    if chunk_file.is_file():
        with np.load(chunk_file, allow_pickle=False) as data:
            stored = data["files"]
            if (
                len(stored) >= len(keys)
                and np.array_equal(stored[: len(keys)], keys)
                and int(data["views"].shape[0]) == views
            ):
                n = len(keys)
                return ChunkViews(
                    **{k: data[k][:, :n] if k.startswith("view") else data[k][:n] for k in data.files if k != "files"}
                )
    if embedder is None:
        return None
    photos = []
    for ref in group:
        image = cv2.imread(str(root / ref.rel), cv2.IMREAD_COLOR)
        if image is None:
            raise VigilError(f"{root / ref.rel}: cannot decode image")
        photos.append(image)
    result = embedder.run(photos, group)
    tmp = chunk_file.with_name(chunk_file.stem + ".tmp.npz")
    np.savez(tmp, files=keys, **asdict(result))
    tmp.replace(chunk_file)
    return result


if __name__ == "__main__":
    sys.exit(main())
