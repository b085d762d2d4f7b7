"""Scene views: CCTV-degraded training chips made through the runtime's own detector and aligner.

``degrade.Degrader`` degrades an *aligned* chip, so its misalignment is a random warp. At runtime a distant face is
found by vigil's detector in a small, blurred, compressed frame, and the aligner warps it with that detector's
landmarks, which are off in their own way (and sometimes the face is not found at all). A scene view reproduces
that path for each CelebA training photo:

1. the whole photo is degraded as a distant camera would record it (``Degrader.degrade_scene``: shrunk so its face
   is 16-48 px wide, photometric, grey, blur, noise, JPEG, no up-sampling), seeded by ``(seed, view, chip index)``;
2. vigil's default detector (from ``models/manifest.yaml``, at its manifest input size) runs on the small image;
3. the detected face whose landmarks lie nearest the photo's known landmarks (the chip set's YuNet landmarks,
   scaled) is chosen, if its mean landmark error is under ``max_error_frac`` of the eye distance; otherwise the
   view is marked not found (the runtime would not see that face either: no view is invented for it);
4. the runtime's landmark refiner (``vigil.refine``, the manifest's default landmark model) gives that face its five
   points, as ``FaceAnalyzer`` does before it embeds a face (``--no-refine-landmarks``: the detector's own points);
5. ``vigil.align.Aligner`` warps it to the chip set's template (``meta.json`` of ``--chips``: the template and chip
   size the chips were cut with, so scene views and clean chips always line up), as ``vigil process`` does.

The clean chip of each photo is made the same way from the original photo (falling back to the YuNet landmarks,
never refined, when vigil's detector misses it), so clean and degraded views share the runtime's template.

Outputs in ``--out`` (default ``work/recognizer/scene_views``): ``clean.npy`` uint8 (N, S, S, 3), ``views.npy``
uint8 (K, N, S, S, 3), ``found.npy`` bool (K, N), ``clean_found.npy`` bool (N,), ``meta.json`` (files in chip-set
order, detector, template, settings, counts). ``finetune`` reads the folder through ``data.scene_views``.

    python -m pipelines.recognizer.scene_views [--chips work/recognizer/celeba_chips] [--views 3] [--seed 0]

LFW is never read here: LFW is the test set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vigil.errors import VigilError, run_reporting_errors
from vigil.paths import data_path, repo_path
from vigil.refine import RefiningAligner, unrefined
from vigil.types import Face

if TYPE_CHECKING:  # the degrader and aligner pull in cv2 and the recognizer path: imported where they are built
    from pipelines.recognizer.degrade import Degrader
    from vigil.align import Aligner
    from vigil.eval.face_source import DetectBatch

DEFAULT_OUT = Path("work/recognizer/scene_views")
DEFAULT_CHIPS = Path("work/recognizer/celeba_chips")
MAX_ERROR_FRAC = 0.5
MIN_SCORE = 0.3  # the LFW evaluation's detector threshold (vigil.eval.face_source.DEFAULT_MIN_SCORE)


@dataclass(frozen=True)
class SceneViews:
    """Chips of N photos: ``clean`` (N, S, S, 3), ``views`` (K, N, S, S, 3), ``found`` (K, N), in ``files`` order."""

    clean: np.ndarray
    views: np.ndarray
    found: np.ndarray
    clean_found: np.ndarray
    files: list[str]

    def take(self, files: list[str]) -> SceneViews:
        """The rows for ``files`` (a chip set's order); VigilError naming the first file that is missing."""
        index = {f: i for i, f in enumerate(self.files)}
        missing = [f for f in files if f not in index]
        if missing:
            raise VigilError(f"scene views: no row for {missing[0]} ({len(missing)} chip(s) missing: rebuild them)")
        rows = np.array([index[f] for f in files], dtype=np.int64)
        return SceneViews(
            self.clean[rows], self.views[:, rows], self.found[:, rows], self.clean_found[rows], list(files)
        )


def match_face(
    faces: list[Face], expected_landmarks: np.ndarray, max_error_frac: float = MAX_ERROR_FRAC
) -> Face | None:
    """The face whose 5 landmarks are nearest ``expected_landmarks`` (mean point distance), or None when even that
    one is off by ``max_error_frac`` x the expected eye distance or more."""
    expected = np.asarray(expected_landmarks, dtype=np.float64)
    eye_distance = float(np.linalg.norm(expected[1] - expected[0]))
    best, best_error = None, np.inf
    for face in faces:
        error = float(np.linalg.norm(np.asarray(face.landmarks, np.float64) - expected, axis=1).mean())
        if error < best_error:
            best, best_error = face, error
    return best if best is not None and best_error < max_error_frac * eye_distance else None


def known_face(entry: dict, scale: float = 1.0) -> Face:
    """A chip set's landmark entry (``box``, ``score``, ``landmarks`` in photo pixels) as a Face, scaled."""
    return Face(
        box=np.asarray(entry["box"], np.float32) * scale,
        score=float(entry["score"]),
        landmarks=np.asarray(entry["landmarks"], np.float32) * scale,
    )


def view_seed(seed: int, view: int, index: int) -> list[int]:
    """The generator seed of view ``view`` of chip ``index``: independent of batching and of the other views."""
    return [int(seed) & 0xFFFFFFFF, 104729, int(view), int(index)]


@dataclass
class _Stage:
    """What a batch of photos goes through: detect (batch), align, degrade."""

    detect_batch: DetectBatch  # list[image] -> list[list[Face]]
    aligner: Aligner | RefiningAligner
    degrader: Degrader
    max_error_frac: float

    def chips(self, images: list[np.ndarray], expected: list[Face]) -> tuple[list[np.ndarray | None], list[bool]]:
        """Aligned chip per image from the detected face matching ``expected`` (None when there is none)."""
        out, found = [], []
        for image, faces, want in zip(images, self.detect_batch(images), expected):
            face = match_face(faces, want.landmarks, self.max_error_frac)
            out.append(None if face is None else self.aligner.align(image, face).chip)
            found.append(face is not None)
        return out, found


def build_scene_views(
    photos: list[np.ndarray],
    entries: list[dict],
    stage: _Stage,
    views: int,
    seed: int,
    first_index: int = 0,
    first_view: int = 0,
) -> SceneViews:
    """Scene views ``first_view .. first_view + views - 1`` of a list of photos (``entries``: their known landmark
    entries, ``face_width_px`` included); view k of a photo is the same whichever run makes it."""
    n = len(photos)
    size = stage.aligner.chip_size
    clean = np.zeros((n, size, size, 3), np.uint8)
    out = np.zeros((views, n, size, size, 3), np.uint8)
    found = np.zeros((views, n), bool)
    expected = [known_face(e) for e in entries]
    chips, clean_found = stage.chips(photos, expected)
    for i, chip in enumerate(chips):
        clean[i] = chip if chip is not None else unrefined(stage.aligner).align(photos[i], expected[i]).chip
    for k in range(views):
        small, want = [], []
        for i, (photo, entry) in enumerate(zip(photos, entries)):
            rng = np.random.default_rng(view_seed(seed, first_view + k, first_index + i))
            image, scale = stage.degrader.degrade_scene(photo, entry["face_width_px"], rng)
            small.append(image)
            want.append(known_face(entry, scale))
        chips, ok = stage.chips(small, want)
        for i, chip in enumerate(chips):
            if chip is not None:
                out[k, i] = chip
        found[k] = ok
    return SceneViews(clean, out, found, np.array(clean_found, bool), [e["file"] for e in entries])


def save(folder: Path, sv: SceneViews, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("clean", "views", "found", "clean_found"):
        np.save(folder / f"{name}.npy", getattr(sv, name))
    (folder / "meta.json").write_text(json.dumps({**meta, "files": sv.files}, indent=1))


def concat_views(parts: list[SceneViews]) -> SceneViews:
    """Several folders' views of the same chips as one (clean chips from the first); VigilError if the files differ."""
    for part in parts[1:]:
        if part.files != parts[0].files:
            raise VigilError("scene views: folders list different photos (build them from the same chip set)")
    return SceneViews(
        parts[0].clean,
        np.concatenate([p.views for p in parts]),
        np.concatenate([p.found for p in parts]),
        parts[0].clean_found,
        parts[0].files,
    )


def load(folder: Path) -> SceneViews:
    """Read a scene-view folder (memory-mapped views); VigilError naming what is missing."""
    folder = Path(folder)
    names = ("clean", "views", "found", "clean_found")
    missing = [n for n in names if not (folder / f"{n}.npy").is_file()] + (
        [] if (folder / "meta.json").is_file() else ["meta"]
    )
    if missing:
        raise VigilError(
            f"{folder}: not a scene-view folder (missing {missing}; run python -m pipelines.recognizer.scene_views)"
        )
    arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r" if n == "views" else None) for n in names}
    files = json.loads((folder / "meta.json").read_text())["files"]
    return SceneViews(arrays["clean"], arrays["views"], arrays["found"], arrays["clean_found"], files)


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chips", type=Path, default=DEFAULT_CHIPS, help="chip cache folder (meta.json + landmarks.json)")
    ap.add_argument("--root", type=Path, default=None, help="CelebA folder (default: <data>/celeba299)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--views", type=int, default=3, help="degraded views per photo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--first-view", type=int, default=0, help="number of the first view made (more views for an existing folder)"
    )
    ap.add_argument("--batch", type=int, default=32, help="photos per detector call")
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos (a quick look)")
    ap.add_argument("--max-error-frac", type=float, default=MAX_ERROR_FRAC)
    ap.add_argument(
        "--refine-landmarks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the runtime's landmark refiner gives each detected face its points (default: on, as at runtime)",
    )
    args = ap.parse_args(argv)
    return run_reporting_errors(lambda: _build(args))


def _stage(max_error_frac: float, template: np.ndarray, chip_size: int, refine_landmarks: bool) -> tuple[_Stage, dict]:
    """Detector, aligner (``template`` at ``chip_size``, refining when asked) and degrader, plus their labels."""
    from pipelines.recognizer.degrade import Degrader
    from vigil.align import Aligner
    from vigil.eval.face_source import build_detector

    detect_batch, detector_label = build_detector(None, min_score=MIN_SCORE)
    aligner: Aligner | RefiningAligner = Aligner(np.asarray(template, np.float32), int(chip_size))
    info = {
        "detector": detector_label,
        "template": np.asarray(template).tolist(),
        "chip_size": int(chip_size),
        "landmarks": None,
    }
    if refine_landmarks:
        from vigil.refine import default_landmark_refiner

        refiner, landmarks_path, landmarks_sha = default_landmark_refiner()
        aligner = RefiningAligner(aligner, refiner)
        info["landmarks"] = f"{landmarks_path.name}@{landmarks_sha[:12]}"
    return _Stage(detect_batch, aligner, Degrader(), max_error_frac), info


def chip_set_geometry(meta: dict, meta_file: Path) -> tuple[np.ndarray, int]:
    """The (5, 2) template and chip size a chip set was cut with; VigilError naming the file when they are absent."""
    template = np.asarray(meta.get("template", []), np.float32)
    if template.shape != (5, 2) or not meta.get("chip_size"):
        raise VigilError(
            f"{meta_file}: no template/chip_size (rebuild the chip set with python -m "
            "pipelines.recognizer.faces_dataset)"
        )
    return template, int(meta["chip_size"])


def _build(args: argparse.Namespace) -> int:
    import cv2

    chips_dir, root = repo_path(args.chips), args.root or data_path("celeba299")
    meta_file, landmarks_file = chips_dir / "meta.json", chips_dir / "landmarks.json"
    for f in (meta_file, landmarks_file):
        if not f.is_file():
            raise VigilError(f"{f}: not found (run python -m pipelines.recognizer.faces_dataset first)")
    meta = json.loads(meta_file.read_text())
    items = meta["items"][: args.limit]
    faces = json.loads(landmarks_file.read_text())["faces"]
    entries = [{**faces[it["file"]], "file": it["file"], "face_width_px": it["face_width_px"]} for it in items]
    stage, info = _stage(args.max_error_frac, *chip_set_geometry(meta, meta_file), args.refine_landmarks)
    parts, t0 = [], time.monotonic()
    for start in range(0, len(entries), args.batch):
        batch = entries[start : start + args.batch]
        photos = []
        for e in batch:
            image = cv2.imread(str(root / e["file"]), cv2.IMREAD_COLOR)
            if image is None:
                raise VigilError(f"{root / e['file']}: cannot decode image")
            photos.append(image)
        parts.append(
            build_scene_views(
                photos, batch, stage, args.views, args.seed, first_index=start, first_view=args.first_view
            )
        )
        done = start + len(batch)
        if done % (args.batch * 20) < args.batch or done == len(entries):
            print(f"  {done}/{len(entries)} photos ({time.monotonic() - t0:.0f} s)", flush=True)
    sv = SceneViews(
        np.concatenate([p.clean for p in parts]),
        np.concatenate([p.views for p in parts], axis=1),
        np.concatenate([p.found for p in parts], axis=1),
        np.concatenate([p.clean_found for p in parts]),
        [f for p in parts for f in p.files],
    )
    counts = {
        "photos": len(sv.files),
        "views": args.views,
        "clean_found": int(sv.clean_found.sum()),
        "found_per_view": sv.found.sum(axis=1).tolist(),
        "found_fraction": round(float(sv.found.mean()), 4),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    save(
        repo_path(args.out),
        sv,
        {
            **info,
            "seed": args.seed,
            "first_view": args.first_view,
            "max_error_frac": args.max_error_frac,
            "counts": counts,
        },
    )
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
