"""Run the teacher detectors over LFW, CelebA-299 and video frames; cache their raw faces as JSON lines.

The cache (one ``<source>.jsonl`` per source under ``--cache``) holds every teacher's faces per image,
so fusion thresholds can change without rerunning the teachers, and an interrupted run resumes where
it stopped. Small photos (LFW and CelebA are at most 250 px) are packed ``grid x grid`` onto one 640 px
canvas per teacher call (each photo scaled to the cell, 320 px for grid 2), because SCRFD and
yolov5-face have a fixed 640x640 input: this cuts CPU time by ``grid**2`` at the cost of running
on a 320 px photo instead of a 640 px one (the photos are 250 px, so they are still upscaled).

    nice -n 10 python -m pipelines.detector.pseudo_label --sources lfw celeba video --lfw-limit 3000

Line format: ``{"key": "lfw/Name/Name_0001.jpg", "group": "lfw/Name", "w": 250, "h": 250,
"faces": {"scrfd_2.5g": [[x1, y1, x2, y2, score, lx0, ly0, ..., lx4, ly4], ...], ...}}`` in the image's
pixels. Video frames have keys ``video/<file>.mp4#<frame index>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.detector.teachers import TEACHER_NAMES, load_teacher
from vigil.errors import VigilError
from vigil.paths import data_dir, repo_root
from vigil.types import Face

LOG = logging.getLogger("pseudo_label")
DEFAULT_CACHE = repo_root() / "work" / "detector" / "teacher_cache"


@dataclass(frozen=True)
class SourceImage:
    """One image to label: ``key`` is its path relative to the data folder (video: ``file#frame``)."""

    key: str
    group: str  # identity / clip: the unit of the train/val split


def list_photos(root: Path, source: str, limit: int | None, seed: int = 0) -> list[SourceImage]:
    """``root/source/<identity>/*.jpg`` as SourceImages; a deterministic subset of ``limit`` when given."""
    folder = root / source
    if not folder.is_dir():
        raise VigilError(f"{folder}: source folder not found")
    files = sorted(folder.glob("*/*.jpg"))
    if limit is not None and limit < len(files):
        files = sorted(files, key=lambda p: hashlib.sha1(f"{seed}:{p.name}".encode()).hexdigest())[:limit]
        files.sort()
    return [SourceImage(key=str(p.relative_to(root)), group=str(p.parent.relative_to(root))) for p in files]


def iter_video_frames(root: Path, step: int) -> Iterator[tuple[SourceImage, np.ndarray]]:
    """Every ``step``-th frame of each ``root/video/*.mp4`` (unreadable frames end that file, logged)."""
    import cv2

    for video in sorted((root / "video").glob("*.mp4")):
        cap = cv2.VideoCapture(str(video))
        if not cap.isOpened():
            LOG.warning("%s: cannot open video, skipped", video)
            continue
        index = 0
        group = str(video.relative_to(root))
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % step == 0:
                yield SourceImage(key=f"{group}#{index}", group=group), frame
            index += 1
        cap.release()


def faces_to_rows(faces: list[Face]) -> list[list[float]]:
    """Faces -> compact rows ``[x1, y1, x2, y2, score, 10 landmark coords]`` (0.1 px, 3 decimals score)."""
    return [
        [round(float(v), 1) for v in f.box]
        + [round(float(f.score), 3)]
        + [round(float(v), 1) for v in f.landmarks.reshape(-1)]
        for f in faces
    ]


def rows_to_faces(rows: list[list[float]]) -> list[Face]:
    """Inverse of ``faces_to_rows``."""
    out = []
    for r in rows:
        arr = np.asarray(r, dtype=np.float32)
        out.append(Face(box=arr[:4].copy(), score=float(arr[4]), landmarks=arr[5:15].reshape(5, 2).copy()))
    return out


def detect_tiled(teacher, images: list[np.ndarray], grid: int, canvas: int = 640) -> list[list[Face]]:
    """Run ``teacher`` once on ``images`` packed ``grid x grid`` onto one canvas; faces per image.

    Each image is scaled to fit its ``canvas // grid`` cell (top-left aligned, grey padding). A face
    belongs to the cell holding its box centre; it is clipped to that image and mapped back to its pixels.
    """
    import cv2

    if len(images) > grid * grid:
        raise ValueError(f"{len(images)} images do not fit a {grid}x{grid} grid")
    cell = canvas // grid
    sheet = np.full((canvas, canvas, 3), 114, dtype=np.uint8)
    placements = []
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        scale = min(cell / w, cell / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        ox, oy = (i % grid) * cell, (i // grid) * cell
        sheet[oy : oy + nh, ox : ox + nw] = cv2.resize(
            img, (nw, nh), interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
        )
        placements.append((ox, oy, scale, w, h))
    per_image: list[list[Face]] = [[] for _ in images]
    for face in teacher.detect(sheet):
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        col, row = int(cx // cell), int(cy // cell)
        i = row * grid + col
        if not (0 <= col < grid and 0 <= row < grid) or i >= len(images):
            continue
        ox, oy, scale, w, h = placements[i]
        offset = np.array([ox, oy], dtype=np.float32)
        box = ((face.box.reshape(2, 2) - offset) / scale).reshape(4)
        box = np.clip(box, 0, [w, h, w, h]).astype(np.float32)
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            continue
        lms = ((face.landmarks - offset) / scale).astype(np.float32)
        per_image[i].append(Face(box=box, score=face.score, landmarks=lms))
    return per_image


def read_cache(path: Path) -> dict[str, dict]:
    """Cached lines of one source by key (later lines win); missing file -> empty; bad lines skipped."""
    out: dict[str, dict] = {}
    if not path.is_file():
        return out
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            try:
                rec = json.loads(line)
                out[rec["key"]] = rec
            except (json.JSONDecodeError, KeyError):
                LOG.warning("%s:%d: unreadable cache line skipped", path, n)
    return out


class Labeller:
    """Holds the teachers and appends their faces for batches of images to a cache file."""

    def __init__(self, root: Path, teachers: list[str], grid: int, threads: int, score_thr: float):
        self.root = root
        self.grid = grid
        self.teachers = [load_teacher(n, root, threads=threads, score_thr=score_thr) for n in teachers]

    def label_batch(self, items: list[SourceImage], images: list[np.ndarray], grid: int) -> list[dict]:
        """Teacher faces for up to grid*grid images (grid 1 = one image at full 640)."""
        records: list[dict[str, Any]] = [
            {"key": it.key, "group": it.group, "w": int(img.shape[1]), "h": int(img.shape[0]), "faces": {}}
            for it, img in zip(items, images)
        ]
        for teacher in self.teachers:
            per_image = detect_tiled(teacher, images, grid)
            for rec, faces in zip(records, per_image):
                rec["faces"][teacher.name] = faces_to_rows(faces)
        return records


def run_photos(labeller: Labeller, items: list[SourceImage], cache_file: Path, log_every: int) -> None:
    """Label photos not yet in ``cache_file``, ``grid**2`` per teacher call; append to the cache."""
    import cv2

    done = read_cache(cache_file)
    todo = [it for it in items if it.key not in done]
    LOG.info("%s: %d images, %d cached, %d to label", cache_file.name, len(items), len(items) - len(todo), len(todo))
    per_call = labeller.grid**2
    start = time.monotonic()
    with cache_file.open("a") as fh:
        for b in range(0, len(todo), per_call):
            batch = todo[b : b + per_call]
            images, ok_items = [], []
            for it in batch:
                img = cv2.imread(str(labeller.root / it.key))
                if img is None:
                    LOG.warning("%s: unreadable image, skipped", labeller.root / it.key)
                    continue
                images.append(img)
                ok_items.append(it)
            if not images:
                continue
            for rec in labeller.label_batch(ok_items, images, labeller.grid):
                fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
            n = b + len(batch)
            if n // log_every != (n - len(batch)) // log_every or n == len(todo):
                rate = n / max(time.monotonic() - start, 1e-6)
                LOG.info("%s: %d/%d labelled (%.1f img/s)", cache_file.name, n, len(todo), rate)
                fh.flush()


def run_video(labeller: Labeller, step: int, cache_file: Path) -> None:
    """Label every ``step``-th video frame at full 640 (one frame per teacher call)."""
    done = read_cache(cache_file)
    n = 0
    with cache_file.open("a") as fh:
        for item, frame in iter_video_frames(labeller.root, step):
            if item.key in done:
                continue
            for rec in labeller.label_batch([item], [frame], grid=1):
                fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
            n += 1
    LOG.info("%s: %d new frames labelled", cache_file.name, n)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", nargs="+", default=["lfw", "celeba", "video"], choices=["lfw", "celeba", "video"])
    parser.add_argument("--lfw-limit", type=int, default=3000, help="deterministic LFW subset size")
    parser.add_argument("--celeba-limit", type=int, default=None, help="CelebA subset size (default all)")
    parser.add_argument("--video-step", type=int, default=3, help="label every n-th video frame")
    parser.add_argument("--grid", type=int, default=2, help="photos per canvas side (2 -> 4 photos per call)")
    parser.add_argument("--teachers", nargs="+", default=list(TEACHER_NAMES), choices=list(TEACHER_NAMES))
    parser.add_argument("--score-thr", type=float, default=0.3, help="teacher score threshold (raw, before fusion)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per teacher")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--log-every", type=int, default=200)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import cv2

    cv2.setNumThreads(args.threads)
    root = data_dir()
    args.cache.mkdir(parents=True, exist_ok=True)
    labeller = Labeller(root, args.teachers, args.grid, args.threads, args.score_thr)
    if "video" in args.sources:
        run_video(labeller, args.video_step, args.cache / "video.jsonl")
    if "lfw" in args.sources:
        run_photos(labeller, list_photos(root, "lfw", args.lfw_limit), args.cache / "lfw.jsonl", args.log_every)
    if "celeba" in args.sources:
        run_photos(
            labeller, list_photos(root, "celeba299", args.celeba_limit), args.cache / "celeba.jsonl", args.log_every
        )


if __name__ == "__main__":
    try:
        main()
    except VigilError as exc:
        raise SystemExit(f"error: {exc}") from None
