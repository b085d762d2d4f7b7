"""Zoomed-out scenes: whole labelled training photos shrunk until their faces are crowd-sized (6-40 px).

Pasted face crops (``synth.py``) teach small faces without their context, and a detector trained on many of
them fires on any round blob (letters, lamps, hands). Here every face keeps its real surroundings (hair,
shoulders, clothes, the photo's own background), because the whole photo is shrunk: the photos of the train
split (CelebA, LFW, video frames, with their fused pseudo-labels) are laid out in jittered rows on a canvas,
each scaled so its largest face has the scene's face width (smaller towards the top, like a camera looking
down), then the canvas gets the same camera degradations as the synthetic scenes.

    python -m pipelines.detector.zoomout --train 2000 --val 100 --workers 2

Writes ``zoomout_<split>_<index>.jpg`` and labels next to the other sources in the dataset folder. Deterministic
for a given ``--seed``: scene ``i`` uses its own generator seeded by (seed, split, i).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.detector.mix import source_of
from vigil.errors import VigilError
from vigil.paths import repo_root
from vigil.types import Face

LOG = logging.getLogger("zoomout")
DATASET = repo_root() / "work" / "detector" / "dataset"
PHOTO_SOURCES = ("celeba299", "lfw", "video")
MAX_PHOTOS_PER_SCENE = 600


@dataclass(frozen=True)
class Placement:
    """One photo on the canvas: scale factor and top-left offset (canvas px)."""

    scale: float
    x: int
    y: int


class RowLayout:
    """Places photos left to right in rows on a square canvas; they never overlap or leave it.

    The target face width grows linearly from ``face_px[0]`` at the top to ``face_px[1]`` at the bottom
    (+-20 % per photo), so a photo's scale follows from its largest face; gaps between photos and rows are
    random (up to 15 % and 10 % of the photo / row size).
    """

    def __init__(self, rng: np.random.Generator, size: int, face_px: tuple[float, float]) -> None:
        self.rng, self.size, self.face_px = rng, size, face_px
        self.x = self.y = self.row_h = 0.0
        self.full = False

    def place(self, width: int, height: int, face_width: float) -> Placement | None:
        """Where the next photo goes, or None once the canvas is full (then ``full`` is set)."""
        target = (self.face_px[0] + (self.face_px[1] - self.face_px[0]) * (self.y / self.size)) * self.rng.uniform(
            0.8, 1.2
        )
        scale = target / max(face_width, 1e-6)
        tw, th = width * scale, height * scale
        if self.x + tw > self.size:  # next row
            self.x, self.y, self.row_h = 0.0, self.y + self.row_h * (1 + self.rng.uniform(0, 0.1)), 0.0
        if self.y + th > self.size or tw > self.size:
            self.full = True
            return None
        placement = Placement(scale=float(scale), x=int(self.x), y=int(self.y))
        self.x += tw * (1 + self.rng.uniform(0, 0.15))
        self.row_h = max(self.row_h, th)
        return placement


def _read_photo(path: Path):
    """(image, faces) of a labelled dataset photo; faces with NaN landmarks where the label has none."""
    import cv2

    from vigil.eval.wider import label_path, read_labels

    image = cv2.imread(str(path))
    if image is None:
        return None, []
    truth = read_labels(label_path(path), image.shape[1], image.shape[0])
    lms = truth.landmarks if truth.landmarks is not None else np.full((len(truth.boxes), 5, 2), np.nan)
    return image, [
        Face(box=b.astype(np.float32), score=1.0, landmarks=lm.astype(np.float32)) for b, lm in zip(truth.boxes, lms)
    ]


def make_scene(
    photos: list[Path],
    seed: int,
    split: str,
    index: int,
    size: int,
    top_px: tuple[float, float] = (6.0, 20.0),
    growth: tuple[float, float] = (1.0, 2.5),
) -> tuple[np.ndarray, list[Face], int]:
    """One zoomed-out scene: (image, faces, JPEG quality). Deterministic in (seed, split, index).

    The face width at the top is log-uniform in ``top_px``, at the bottom that times uniform ``growth``."""
    import cv2

    from pipelines.detector.synth import degrade, procedural_background

    rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
    canvas = procedural_background(rng, size)
    top = float(np.exp(rng.uniform(np.log(top_px[0]), np.log(top_px[1]))))
    layout = RowLayout(rng, size, (top, top * rng.uniform(*growth)))
    out_faces: list[Face] = []
    for _ in range(MAX_PHOTOS_PER_SCENE):
        img, faces = _read_photo(photos[int(rng.integers(len(photos)))])
        if img is None or not faces:
            continue
        p = layout.place(img.shape[1], img.shape[0], max(f.width_px for f in faces))
        if p is None:
            break
        w = min(max(1, round(img.shape[1] * p.scale)), size - p.x)
        h = min(max(1, round(img.shape[0] * p.scale)), size - p.y)
        canvas[p.y : p.y + h, p.x : p.x + w] = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        sx, sy = w / img.shape[1], h / img.shape[0]
        out_faces += [
            Face(
                box=(f.box * [sx, sy, sx, sy] + [p.x, p.y, p.x, p.y]).astype(np.float32),
                score=1.0,
                landmarks=(f.landmarks * [sx, sy] + [p.x, p.y]).astype(np.float32),
            )
            for f in faces
        ]
    image, quality = degrade(canvas, rng)
    return image, out_faces, quality


def list_photos(dataset: Path, split: str) -> list[Path]:
    """The split's real photos (CelebA, LFW, video frames), sorted."""
    folder = dataset / "images" / split
    photos = sorted(p for p in folder.glob("*.jpg") if source_of(p) in PHOTO_SOURCES)
    if not photos:
        raise VigilError(f"{folder}: no real photos ({', '.join(PHOTO_SOURCES)}) to zoom out")
    return photos


def _write_scenes(job: tuple[str, int, str, list[int], int]) -> int:
    """Write the scenes ``indices`` of one split (one job per chunk: the photo list is read once per chunk)."""
    from pipelines.detector.synth import write_scene

    dataset, seed, split, indices, size = job
    photos = list_photos(Path(dataset), split)
    return sum(
        write_scene(Path(dataset), split, f"zoomout_{split}_{index:06d}", *make_scene(photos, seed, split, index, size))
        for index in indices
    )


def generate(dataset: Path, counts: dict[str, int], seed: int, size: int, workers: int) -> dict[str, int]:
    """Write ``counts[split]`` scenes per split into ``dataset``; returns faces written per split."""
    from pipelines.detector.synth import run_jobs

    written: dict[str, int] = {}
    for split, n in counts.items():
        if n > 0:
            list_photos(dataset, split)  # fail early with a clear message
            start = time.monotonic()
            jobs = [(str(dataset), seed, split, list(range(i, min(n, i + 50))), size) for i in range(0, n, 50)]
            written[split] = run_jobs(_write_scenes, jobs, workers)
            LOG.info("%s: %d scenes, %d faces in %.0f s", split, n, written[split], time.monotonic() - start)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--train", type=int, default=2000, help="train scenes")
    parser.add_argument("--val", type=int, default=100, help="val scenes")
    parser.add_argument("--size", type=int, default=640, help="scene side, px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    generate(args.dataset, {"train": args.train, "val": args.val}, args.seed, args.size, args.workers)


if __name__ == "__main__":
    try:
        main()
    except VigilError as exc:
        raise SystemExit(f"error: {exc}") from None
