"""Synthesised surveillance-like scenes: many small faces pasted onto face-free backgrounds.

Sources are the bank written by ``build_dataset.py --steps bank``: face crops with context and their
fused box and landmarks (from LFW/CelebA photos), and face-free background strips from the same photos.
Train scenes use only train-split sources and val scenes only val-split ones (split by identity).

Each scene (``--size`` square, default 640):

1. background: procedural (gradients, low-frequency noise, rectangles and lines like walls and shelves),
   a collage of face-free photo strips, or a blend of both;
2. faces: a random scatter (12-80 px wide, small faces more likely), crowd rows (small at the top,
   larger towards the bottom, like a camera looking down on an audience) or a few larger faces; each
   face is scaled, maybe mirrored (landmarks swapped with ``LANDMARK_FLIP_INDEX``), colour-jittered and
   blended in with a feathered ellipse; face boxes never overlap, so every label stays visible;
3. whole-image degradations: resolution loss, blur, low light and gamma, sensor noise, grey (IR look),
   JPEG quality 20-80.

Labels are transformed exactly (scale + offset; boxes clipped to the image, landmarks outside it get
visibility 0). Deterministic for a given ``--seed``: scene ``i`` uses its own generator seeded by
(seed, split, i), so any worker count gives the same files.

    python -m pipelines.detector.synth --bank work/detector/bank --out work/detector/dataset --train 4000 --val 300
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.detector.build_dataset import write_data_yaml
from vigil.errors import VigilError
from vigil.paths import repo_root
from vigil.types import LANDMARK_FLIP_INDEX, Face

LOG = logging.getLogger("synth")
WORK = repo_root() / "work" / "detector"


@dataclass(frozen=True)
class BankFace:
    """A face crop file with its face box and landmarks in crop pixels."""

    path: Path
    box: np.ndarray  # (4,)
    landmarks: np.ndarray  # (5, 2)


@dataclass(frozen=True)
class Bank:
    faces: list[BankFace]
    backgrounds: list[Path]


def load_bank(bank_dir: Path, split: str) -> Bank:
    """Read ``bank_dir/<split>/faces.jsonl`` and list the background strips."""
    folder = Path(bank_dir) / split
    meta = folder / "faces.jsonl"
    if not meta.is_file():
        raise VigilError(f"{meta}: face bank not found (run build_dataset.py --steps bank)")
    faces = []
    for n, line in enumerate(meta.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
            faces.append(
                BankFace(
                    folder / "faces" / rec["file"],
                    np.asarray(rec["box"], np.float64),
                    np.asarray(rec["landmarks"], np.float64),
                )
            )
        except (json.JSONDecodeError, KeyError, ValueError) as exc:
            raise VigilError(f"{meta}:{n}: bad bank line ({type(exc).__name__})") from exc
    backgrounds = sorted((folder / "backgrounds").glob("*.jpg"))
    if not faces:
        raise VigilError(f"{meta}: no faces in the bank")
    return Bank(faces, backgrounds)


# ---------------------------------------------------------------- backgrounds


def procedural_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradient + low-frequency colour noise + a few flat rectangles and lines, uint8 BGR."""
    import cv2

    c0, c1 = rng.uniform(20, 230, 3), rng.uniform(20, 230, 3)
    t = np.linspace(0, 1, size)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, size)[None, :, None]
    img = np.broadcast_to(c0 * (1 - t) + c1 * t, (size, size, 3)).astype(np.float32)
    cells = int(rng.integers(3, 24))
    low = rng.normal(0, rng.uniform(5, 30), (cells, cells, 3)).astype(np.float32)
    img = img + cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(0, 12))):
        x1, y1 = rng.integers(0, size, 2)
        w, h = rng.integers(8, size // 2, 2)
        colour = 0.5 * rng.uniform(0, 255, 3) + 0.5 * rng.uniform(0, 255)  # muted colours
        cv2.rectangle(
            img,
            (int(x1), int(y1)),
            (int(x1 + w), int(y1 + h)),
            colour.tolist(),
            -1 if rng.random() < 0.7 else int(rng.integers(1, 6)),
        )
    for _ in range(int(rng.integers(0, 10))):
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        cv2.line(
            img,
            (int(p1[0]), int(p1[1])),
            (int(p2[0]), int(p2[1])),
            rng.uniform(0, 255, 3).tolist(),
            int(rng.integers(1, 8)),
        )
    img += rng.normal(0, rng.uniform(0, 8), img.shape).astype(np.float32)
    if rng.random() < 0.5:  # desaturate towards grey
        grey = img.mean(axis=2, keepdims=True)
        img = grey + rng.uniform(0.2, 0.8) * (img - grey)
    return np.clip(img, 0, 255).astype(np.uint8)


def photo_background(rng: np.random.Generator, size: int, bank: Bank) -> np.ndarray:
    """A collage of 1-4 face-free photo strips stretched over a grid of the canvas."""
    import cv2

    if not bank.backgrounds:
        return procedural_background(rng, size)
    img = np.zeros((size, size, 3), np.uint8)
    cols, rows = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    xs = np.linspace(0, size, cols + 1).astype(int)
    ys = np.linspace(0, size, rows + 1).astype(int)
    for r in range(rows):
        for c in range(cols):
            strip = cv2.imread(str(bank.backgrounds[int(rng.integers(len(bank.backgrounds)))]))
            if strip is None:
                continue
            if rng.random() < 0.5:
                strip = strip[:, ::-1]
            w, h = xs[c + 1] - xs[c], ys[r + 1] - ys[r]
            img[ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = cv2.resize(
                strip, (int(w), int(h)), interpolation=cv2.INTER_LINEAR
            )
    return img


def make_background(rng: np.random.Generator, size: int, bank: Bank) -> np.ndarray:
    kind = rng.random()
    if kind < 0.4:
        return procedural_background(rng, size)
    photo = photo_background(rng, size, bank)
    if kind < 0.85:
        return photo
    alpha = rng.uniform(0.3, 0.7)
    return (alpha * photo + (1 - alpha) * procedural_background(rng, size)).astype(np.uint8)


# ---------------------------------------------------------------- face layouts


@dataclass(frozen=True)
class LayoutProfile:
    """Face sizes and counts a scene's layout draws from (px on the scene canvas).

    ``default`` is the recipe of the shipped detector's data. ``crowd`` is for small-face training: denser
    scatters and crowd rows of 6-48 px faces (WIDER-like: most crowd faces are under 16 px at 416 px) and
    fewer scenes of large faces.
    """

    scatter_px: tuple[float, float] = (12.0, 80.0)  # log-uniform face width of a scatter
    scatter_count: tuple[int, int] = (5, 45)  # faces planned per scatter, [low, high)
    row_top_px: tuple[float, float] = (10.0, 22.0)  # face width at the top of crowd rows
    row_bottom_px: tuple[float, float] = (30.0, 80.0)  # face width at the bottom
    p_scatter: float = 0.4
    p_rows: float = 0.4  # the rest: a few larger faces
    large_px: tuple[float, float] = (40.0, 120.0)  # uniform width of the few larger faces


LAYOUT_PROFILES = {
    "default": LayoutProfile(),
    "crowd": LayoutProfile(
        scatter_px=(6.0, 40.0),
        scatter_count=(20, 120),
        row_top_px=(6.0, 12.0),
        row_bottom_px=(16.0, 48.0),
        p_scatter=0.45,
        p_rows=0.45,
    ),
    # the CCTV validation set (pipelines/detector/cctv_val.py): every face 12-64 px wide
    "cctv": LayoutProfile(
        scatter_px=(12.0, 64.0),
        scatter_count=(5, 40),
        row_top_px=(12.0, 20.0),
        row_bottom_px=(28.0, 58.0),
        large_px=(32.0, 64.0),
    ),
}


def face_widths(
    rng: np.random.Generator, size: int, profile: LayoutProfile = LAYOUT_PROFILES["default"]
) -> list[tuple[float, float, float]]:
    """Planned (face width px, centre x, centre y) for one scene; the pasting step may drop some."""
    mode = rng.random()
    if mode < profile.p_scatter:  # scatter, small faces more likely (log-uniform)
        n = int(rng.integers(*profile.scatter_count))
        widths = np.exp(rng.uniform(np.log(profile.scatter_px[0]), np.log(profile.scatter_px[1]), n))
        return [(float(w), float(rng.uniform(0, size)), float(rng.uniform(0, size))) for w in widths]
    if mode < profile.p_scatter + profile.p_rows:  # crowd rows: small at the top, larger at the bottom
        return _crowd_rows(rng, size, rng.uniform(*profile.row_top_px), rng.uniform(*profile.row_bottom_px))
    n = int(rng.integers(1, 7))  # a few larger faces
    return [
        (float(rng.uniform(*profile.large_px)), float(rng.uniform(0, size)), float(rng.uniform(0, size)))
        for _ in range(n)
    ]


def _crowd_rows(rng: np.random.Generator, size: int, w_top: float, w_bottom: float) -> list[tuple[float, float, float]]:
    """Rows of faces growing linearly from ``w_top`` to ``w_bottom`` px down the canvas."""
    plan = []
    y = rng.uniform(0, 0.15) * size
    while y < size:
        w = w_top + (w_bottom - w_top) * (y / size)
        x = rng.uniform(-0.5, 1.0) * w
        while x < size:
            plan.append((float(w * rng.uniform(0.85, 1.15)), float(x), float(y + rng.normal(0, 0.15 * w))))
            x += w * rng.uniform(1.15, 2.2)
        y += w * rng.uniform(1.4, 2.2)
    return plan


def feather_mask(h: int, w: int, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Float mask (h, w) in [0, 1]: an ellipse around the face box, grown 1.2-1.5x, soft-edged."""
    import cv2

    mask = np.zeros((h, w), np.float32)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    grow = rng.uniform(1.2, 1.5)
    axes = (max(1, int((box[2] - box[0]) / 2 * grow)), max(1, int((box[3] - box[1]) / 2 * grow * 1.1)))
    cv2.ellipse(mask, (int(round(cx)), int(round(cy))), axes, 0, 0, 360, 1.0, -1)
    sigma = max(0.8, 0.2 * min(axes))
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def paste_face(
    canvas: np.ndarray,
    face: BankFace,
    width: float,
    cx: float,
    cy: float,
    occupied: list[np.ndarray],
    rng: np.random.Generator,
) -> Face | None:
    """Paste ``face`` scaled to ``width`` px with its box centre at (cx, cy); None if it does not fit."""
    import cv2

    crop = cv2.imread(str(face.path))
    if crop is None:
        return None
    box, lms = face.box.copy(), face.landmarks.copy()
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
        w0 = crop.shape[1]
        box = np.array([w0 - box[2], box[1], w0 - box[0], box[3]])
        lms = np.stack([w0 - lms[:, 0], lms[:, 1]], axis=1)[list(LANDMARK_FLIP_INDEX)]
    scale = width / max(box[2] - box[0], 1e-6)
    nw, nh = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
    if nw < 4 or nh < 4:
        return None
    scale_x, scale_y = nw / crop.shape[1], nh / crop.shape[0]
    crop = cv2.resize(
        np.ascontiguousarray(crop), (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    box = box * [scale_x, scale_y, scale_x, scale_y]
    lms = lms * [scale_x, scale_y]
    ox = int(round(cx - (box[0] + box[2]) / 2))
    oy = int(round(cy - (box[1] + box[3]) / 2))
    canvas_box = box + [ox, oy, ox, oy]
    size = canvas.shape[0]
    if not _fits(canvas_box, occupied, size, ox, oy, nw, nh):
        return None
    mask = feather_mask(nh, nw, box, rng)
    jitter = crop.astype(np.float32) * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)
    x1, y1, x2, y2 = max(0, ox), max(0, oy), min(size, ox + nw), min(size, oy + nh)
    sub = (slice(y1 - oy, y2 - oy), slice(x1 - ox, x2 - ox))
    alpha = mask[sub][..., None]
    region = canvas[y1:y2, x1:x2].astype(np.float32)
    canvas[y1:y2, x1:x2] = np.clip(alpha * jitter[sub] + (1 - alpha) * region, 0, 255).astype(np.uint8)
    occupied.append(canvas_box)
    return Face(box=canvas_box.astype(np.float32), score=1.0, landmarks=(lms + [ox, oy]).astype(np.float32))


def _fits(box: np.ndarray, occupied: list[np.ndarray], size: int, ox: int, oy: int, nw: int, nh: int) -> bool:
    """At least 70 % of the face inside the canvas, and the paste's ellipse does not cover another face."""
    x1, y1, x2, y2 = box
    inside = max(0.0, min(x2, size) - max(x1, 0)) * max(0.0, min(y2, size) - max(y1, 0))
    if inside < 0.7 * (x2 - x1) * (y2 - y1):
        return False
    bw, bh = x2 - x1, y2 - y1
    reach = np.array([x1 - 0.55 * bw, y1 - 0.7 * bh, x2 + 0.55 * bw, y2 + 0.7 * bh])  # ellipse extent (grow <= 1.5)
    for other in occupied:
        ix = min(reach[2], other[2]) - max(reach[0], other[0])
        iy = min(reach[3], other[3]) - max(reach[1], other[1])
        if ix > 0 and iy > 0 and ix * iy > 0.1 * (other[2] - other[0]) * (other[3] - other[1]):
            return False
        fx = min(x2, other[2]) - max(x1, other[0])
        fy = min(y2, other[3]) - max(y1, other[1])
        if fx > 0 and fy > 0:
            return False
    return True


# ---------------------------------------------------------------- degradations


def degrade(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Camera-like degradations; returns (image, JPEG quality to encode with)."""
    import cv2

    size = img.shape[0]
    out = img.astype(np.float32)
    if rng.random() < 0.3:  # resolution loss
        f = rng.uniform(0.35, 0.8)
        small = cv2.resize(out, (max(8, int(size * f)), max(8, int(size * f))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.35:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.6))
    elif rng.random() < 0.1:  # horizontal motion blur
        k = int(rng.integers(3, 8))
        out = cv2.filter2D(out, -1, np.full((1, k), 1.0 / k, np.float32))
    if rng.random() < 0.3:  # low light + gamma
        out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** rng.uniform(1.0, 1.8) * rng.uniform(0.15, 0.6)
    if rng.random() < 0.2:  # grey / IR
        grey = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
        grey = (grey - grey.mean()) * rng.uniform(0.8, 1.4) + grey.mean() + rng.uniform(-20, 30)
        out = np.repeat(grey[..., None], 3, axis=2)
    if rng.random() < 0.5:
        out = out + rng.normal(0, rng.uniform(2, 14), out.shape).astype(np.float32)
    quality = int(rng.integers(20, 81)) if rng.random() < 0.8 else 90
    return np.clip(out, 0, 255).astype(np.uint8), quality


# ---------------------------------------------------------------- scenes


def make_scene(
    bank: Bank, seed: int, split: str, index: int, size: int, profile: LayoutProfile = LAYOUT_PROFILES["default"]
) -> tuple[np.ndarray, list[Face], int]:
    """One scene: (image, faces, JPEG quality). Deterministic in (seed, split, index, profile)."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
    canvas = make_background(rng, size, bank)
    faces: list[Face] = []
    occupied: list[np.ndarray] = []
    for width, cx, cy in face_widths(rng, size, profile):
        src = bank.faces[int(rng.integers(len(bank.faces)))]
        face = paste_face(canvas, src, width, cx, cy, occupied, rng)
        if face is not None:
            faces.append(face)
    image, quality = degrade(canvas, rng)
    return image, faces, quality


def write_scene(dataset: Path, split: str, stem: str, image: np.ndarray, faces: list[Face], quality: int) -> int:
    """Write a square scene as ``<dataset>/images/<split>/<stem>.jpg`` and its pose labels; returns faces labelled."""
    import cv2

    from pipelines.detector.build_dataset import label_lines

    cv2.imwrite(str(dataset / "images" / split / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    lines = label_lines(faces, image.shape[1], image.shape[0], min_side_px=2.0)
    (dataset / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return len(lines)


def _write_scenes(job: tuple[str, int, str, list[int], int, str, str]) -> int:
    """Write the scenes ``indices`` of one split (one job per chunk: the bank is read once per chunk)."""
    bank_dir, seed, split, indices, size, out, profile = job
    bank = load_bank(Path(bank_dir), split)
    prefix = "synth" if profile == "default" else f"synth{profile}"
    return sum(
        write_scene(
            Path(out),
            split,
            f"{prefix}_{split}_{index:06d}",
            *make_scene(bank, seed, split, index, size, LAYOUT_PROFILES[profile]),
        )
        for index in indices
    )


def run_jobs(write_chunk, jobs: list, workers: int) -> int:
    """Run ``write_chunk`` over ``jobs`` (in ``workers`` forked processes when > 1); returns the sum of results."""
    import multiprocessing as mp

    import cv2

    cv2.setNumThreads(1)
    if workers <= 1:
        return int(sum(write_chunk(job) for job in jobs))
    with mp.get_context("fork").Pool(workers) as pool:
        return int(sum(pool.imap_unordered(write_chunk, jobs)))


def generate(
    bank_dir: Path, out: Path, counts: dict[str, int], seed: int, size: int, workers: int, profile: str = "default"
) -> dict[str, int]:
    """Write ``counts[split]`` scenes per split; returns faces written per split."""
    faces: dict[str, int] = {}
    for split, n in counts.items():
        if n <= 0:
            continue
        load_bank(bank_dir, split)  # fail early with a clear message
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        chunk = 50
        jobs = [
            (str(bank_dir), seed, split, list(range(i, min(n, i + chunk))), size, str(out), profile)
            for i in range(0, n, chunk)
        ]
        start = time.monotonic()
        faces[split] = run_jobs(_write_scenes, jobs, workers)
        LOG.info("%s: %d scenes, %d faces in %.0f s", split, n, faces[split], time.monotonic() - start)
    return faces


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", type=Path, default=WORK / "bank")
    parser.add_argument("--out", type=Path, default=WORK / "dataset")
    parser.add_argument("--train", type=int, default=4000, help="train scenes")
    parser.add_argument("--val", type=int, default=300, help="val scenes")
    parser.add_argument("--size", type=int, default=640, help="scene side, px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--profile",
        choices=sorted(LAYOUT_PROFILES),
        default="default",
        help="face sizes and density (crowd: 6-48 px, dense; file names synthcrowd_*)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    generate(
        args.bank, args.out, {"train": args.train, "val": args.val}, args.seed, args.size, args.workers, args.profile
    )
    write_data_yaml(args.out)


if __name__ == "__main__":
    try:
        main()
    except VigilError as exc:
        raise SystemExit(f"error: {exc}") from None
