"""Build the detector's training set from the cached teacher outputs (see pseudo_label.py).

Steps (all deterministic, all under ``work/detector``):

* ``real``: every labelled photo / video frame with its fused faces, in Ultralytics pose format under
  ``dataset/images/{train,val}`` and ``dataset/labels/{train,val}``. Faces some teacher saw but fusion did
  not keep (``fuse.unconfirmed_boxes``) are painted out, so that no unlabelled face is trained as
  background. The split is by identity (LFW/CelebA folder) or clip: ``--val-fraction`` of the groups.
* ``bank``: sources for the synthesiser (synth.py): face crops with some context and their box and
  landmarks in crop pixels, and face-free background strips, per split, under ``bank/{split}``.
* ``landmarks``: the fused faces of every CelebA (and LFW) photo as JSON, for the recognizer's
  alignment: ``landmarks_celeba.json`` / ``landmarks_lfw.json`` map ``celeba299/<id>/<file>.jpg`` to a list of
  ``{"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y] * 5]}`` (image pixels, vigil order,
  highest score first).
* ``yaml``: ``dataset/data.yaml`` (kpt_shape [5, 3], flip_idx [1, 0, 2, 4, 3], names {0: face}).

    python -m pipelines.detector.build_dataset --steps real bank landmarks yaml
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.detector.fuse import FusionParams, fuse_faces, iou_matrix, unconfirmed_boxes
from pipelines.detector.pseudo_label import DEFAULT_CACHE, iter_video_frames, read_cache, rows_to_faces
from vigil.errors import VigilError
from vigil.paths import data_dir, repo_root
from vigil.types import LANDMARK_FLIP_INDEX, Face

LOG = logging.getLogger("build_dataset")
WORK = repo_root() / "work" / "detector"
SOURCES = ("video", "lfw", "celeba")


@dataclass(frozen=True)
class LabelledImage:
    """One source image with its fused faces and the boxes to paint out (image pixels)."""

    key: str
    group: str
    split: str
    width: int
    height: int
    faces: list[Face]
    unconfirmed: np.ndarray  # (K, 4) float32


def split_of(group: str, val_fraction: float, seed: int = 0) -> str:
    """'val' for a deterministic ``val_fraction`` of groups (hash of the group name), else 'train'."""
    digest = hashlib.sha1(f"{seed}:{group}".encode()).digest()
    return "val" if int.from_bytes(digest[:4], "big") / 2**32 < val_fraction else "train"


def load_labelled(
    cache_dir: Path, sources: tuple[str, ...], params: FusionParams, val_fraction: float, video_split: str = "train"
) -> list[LabelledImage]:
    """Fuse the cached teacher faces of every image of ``sources``; video frames all go to ``video_split``."""
    out = []
    for source in sources:
        cache = read_cache(cache_dir / f"{source}.jsonl")
        if not cache:
            LOG.warning("%s: no cached teacher outputs, source skipped", cache_dir / f"{source}.jsonl")
        for key in sorted(cache):
            rec = cache[key]
            per_teacher = {name: rows_to_faces(rows) for name, rows in rec["faces"].items()}
            faces = fuse_faces(per_teacher, params)
            split = video_split if source == "video" else split_of(rec["group"], val_fraction)
            out.append(
                LabelledImage(
                    key, rec["group"], split, rec["w"], rec["h"], faces, unconfirmed_boxes(per_teacher, faces)
                )
            )
    return out


def label_lines(faces: list[Face], width: int, height: int, min_side_px: float = 4.0) -> list[str]:
    """Ultralytics pose lines ``0 cx cy w h x1 y1 v1 ... x5 y5 v5`` (normalised; v=2 inside, 0 outside)."""
    lines = []
    for face in faces:
        x1, y1, x2, y2 = np.clip(face.box, 0, [width, height, width, height])
        if min(x2 - x1, y2 - y1) < min_side_px:
            continue
        values = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
        for x, y in face.landmarks:
            inside = 0 <= x < width and 0 <= y < height
            values += [x / width, y / height, 2.0] if inside else [0.0, 0.0, 0.0]
        lines.append("0 " + " ".join(f"{v:.6f}".rstrip("0").rstrip(".") if v else "0" for v in values))
    return lines


def too_small(faces: list[Face], min_side_px: float = 4.0) -> np.ndarray:
    """Boxes of faces too small to label (they are painted out like unconfirmed ones)."""
    small = [f.box for f in faces if min(f.width_px, f.height_px) < min_side_px]
    return np.stack(small).astype(np.float32) if small else np.zeros((0, 4), np.float32)


def paint_out(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill each box (grown 15 %) with the mean colour of its surroundings plus mild noise."""
    out = image.copy()
    h, w = image.shape[:2]
    for x1, y1, x2, y2 in boxes:
        bw, bh = x2 - x1, y2 - y1
        gx1, gy1 = int(max(0, x1 - 0.15 * bw)), int(max(0, y1 - 0.15 * bh))
        gx2, gy2 = int(min(w, x2 + 0.15 * bw + 1)), int(min(h, y2 + 0.15 * bh + 1))
        if gx2 <= gx1 or gy2 <= gy1:
            continue
        rx1, ry1 = max(0, gx1 - 8), max(0, gy1 - 8)
        rx2, ry2 = min(w, gx2 + 8), min(h, gy2 + 8)
        mean = image[ry1:ry2, rx1:rx2].reshape(-1, 3).mean(axis=0)
        noise = rng.normal(0, 6, size=(gy2 - gy1, gx2 - gx1, 3))
        out[gy1:gy2, gx1:gx2] = np.clip(mean + noise, 0, 255).astype(np.uint8)
    return out


def _image_name(key: str) -> str:
    """A flat, unique file stem for a source key (``lfw/A_B/A_B_0001.jpg`` -> ``lfw__A_B__A_B_0001``)."""
    if "#" in key:
        path, frame = key.split("#", 1)
        return f"{Path(path).with_suffix('')}_f{int(frame):05d}".replace("/", "__")
    return str(Path(key).with_suffix("")).replace("/", "__")


def load_images(root: Path, items: list[LabelledImage]):
    """Yield (item, BGR image) for labelled items; video frames decoded once in order."""
    import cv2

    by_key = {it.key: it for it in items}
    for it in items:
        if "#" in it.key:
            continue
        img = cv2.imread(str(root / it.key))
        if img is None:
            LOG.warning("%s: unreadable image, skipped", root / it.key)
            continue
        yield it, img
    if any("#" in k for k in by_key):
        for src, frame in iter_video_frames(root, step=1):
            if src.key in by_key:
                yield by_key[src.key], frame


def write_real(root: Path, items: list[LabelledImage], out: Path, quality: int) -> dict[str, int]:
    """Write real images (painted where needed) and labels; returns counts per split."""
    import cv2

    rng = np.random.default_rng(0)
    counts: dict[str, int] = {}
    for item, img in load_images(root, items):
        paint = np.concatenate([item.unconfirmed, too_small(item.faces)])
        stem = _image_name(item.key)
        img_path = out / "images" / item.split / f"{stem}.jpg"
        img_path.parent.mkdir(parents=True, exist_ok=True)
        if len(paint) or "#" in item.key:
            cv2.imwrite(str(img_path), paint_out(img, paint, rng), [cv2.IMWRITE_JPEG_QUALITY, quality])
        else:
            shutil.copyfile(root / item.key, img_path)
        lbl_path = out / "labels" / item.split / f"{stem}.txt"
        lbl_path.parent.mkdir(parents=True, exist_ok=True)
        lbl_path.write_text("\n".join(label_lines(item.faces, item.width, item.height)) + "\n")
        counts[item.split] = counts.get(item.split, 0) + 1
    return counts


def write_landmarks(items: list[LabelledImage], prefix: str, path: Path) -> int:
    """Fused faces per image of one source as JSON (see the module docstring); returns the image count."""
    table = {
        it.key: [
            {
                "box": [round(float(v), 1) for v in f.box],
                "score": round(float(f.score), 3),
                "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in f.landmarks],
            }
            for f in it.faces
        ]
        for it in items
        if it.key.startswith(prefix)
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, separators=(",", ":")))
    return len(table)


def data_yaml_config(dataset: Path, train: str = "images/train") -> dict:
    """The Ultralytics pose data config of ``dataset`` (absolute ``path``; ``train`` a folder or an image list)."""
    return {
        "path": str(dataset.resolve()),
        "train": train,
        "val": "images/val",
        "kpt_shape": [5, 3],
        "flip_idx": list(LANDMARK_FLIP_INDEX),
        "names": {0: "face"},
    }


def write_data_yaml(dataset: Path) -> Path:
    """data.yaml for Ultralytics pose training (absolute ``path`` to ``dataset``)."""
    import yaml

    path = dataset / "data.yaml"
    path.write_text(yaml.safe_dump(data_yaml_config(dataset), sort_keys=False))
    return path


# ---------------------------------------------------------------- synthesiser sources (bank)


def crop_face(
    img: np.ndarray, face: Face, others: np.ndarray, context: float, max_face_px: int
) -> tuple[np.ndarray, dict] | None:
    """A square crop around ``face`` (side = ``context`` x its longer side), face scaled to <= max_face_px.

    None when the crop leaves the image by more than 10 % or touches another face (``others``).
    """
    import cv2

    h, w = img.shape[:2]
    x1, y1, x2, y2 = face.box
    side = context * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    cx1, cy1, cx2, cy2 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    margin = 0.1 * side
    if cx1 < -margin or cy1 < -margin or cx2 > w + margin or cy2 > h + margin:
        return None
    cx1, cy1, cx2, cy2 = int(max(0, cx1)), int(max(0, cy1)), int(min(w, cx2)), int(min(h, cy2))
    if len(others) and (iou_matrix(np.array([[cx1, cy1, cx2, cy2]]), others) > 0).any():
        return None
    crop = img[cy1:cy2, cx1:cx2]
    scale = min(1.0, max_face_px / max(x2 - x1, y2 - y1))
    if scale < 1.0:
        crop = cv2.resize(
            crop,
            (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
            interpolation=cv2.INTER_AREA,
        )
    offset = np.array([cx1, cy1], dtype=np.float64)
    box = ((face.box.reshape(2, 2) - offset) * scale).reshape(4)
    lms = (face.landmarks - offset) * scale
    meta = {
        "box": [round(float(v), 2) for v in box],
        "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in lms],
    }
    return crop, meta


def background_strip(img: np.ndarray, blocked: np.ndarray, min_side: int = 48) -> np.ndarray | None:
    """The largest full-height or full-width strip of ``img`` that avoids all ``blocked`` boxes (grown 30 %)."""
    h, w = img.shape[:2]
    if len(blocked) == 0:
        return img
    b = blocked.astype(np.float64)
    grow = 0.3 * np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
    left, top = int(max(0, (b[:, 0] - grow[:, 0]).min())), int(max(0, (b[:, 1] - grow[:, 1]).min()))
    right, bottom = int(min(w, (b[:, 2] + grow[:, 0]).max())), int(min(h, (b[:, 3] + grow[:, 1]).max()))
    strips = [img[:, :left], img[:, right:], img[:top, :], img[bottom:, :]]
    strips = [s for s in strips if min(s.shape[:2]) >= min_side]
    return max(strips, key=lambda s: s.shape[0] * s.shape[1]) if strips else None


def write_bank(
    root: Path, items: list[LabelledImage], bank: Path, min_face_px: int, max_face_px: int, min_score: float
) -> dict[str, int]:
    """Face crops + metadata (``faces.jsonl``) and background strips per split under ``bank/<split>``."""
    import cv2

    counts: dict[str, int] = {}
    handles = {}
    for split in ("train", "val"):
        (bank / split / "faces").mkdir(parents=True, exist_ok=True)
        (bank / split / "backgrounds").mkdir(parents=True, exist_ok=True)
        handles[split] = (bank / split / "faces.jsonl").open("w")
    try:
        for item, img in load_images(root, [it for it in items if "#" not in it.key]):
            stem = _image_name(item.key)
            all_boxes = [f.box for f in item.faces] + list(item.unconfirmed)
            for n, face in enumerate(item.faces):
                if face.score < min_score or min(face.width_px, face.height_px) < min_face_px:
                    continue
                others = (
                    np.stack([b for j, b in enumerate(all_boxes) if j != n]) if len(all_boxes) > 1 else np.zeros((0, 4))
                )
                res = crop_face(img, face, others, context=1.6, max_face_px=max_face_px)
                if res is None:
                    continue
                crop, meta = res
                name = f"{stem}_{n}.jpg"
                cv2.imwrite(str(bank / item.split / "faces" / name), crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
                meta.update(file=name, group=item.group)
                handles[item.split].write(json.dumps(meta, separators=(",", ":")) + "\n")
                counts[f"{item.split}_faces"] = counts.get(f"{item.split}_faces", 0) + 1
            blocked = np.stack(all_boxes) if all_boxes else np.zeros((0, 4))
            strip = background_strip(img, blocked)
            if strip is not None:
                cv2.imwrite(
                    str(bank / item.split / "backgrounds" / f"{stem}.jpg"), strip, [cv2.IMWRITE_JPEG_QUALITY, 85]
                )
                counts[f"{item.split}_backgrounds"] = counts.get(f"{item.split}_backgrounds", 0) + 1
    finally:
        for fh in handles.values():
            fh.close()
    return counts


# ---------------------------------------------------------------- carry for a GPU machine


def pack_carry(
    dataset: Path,
    bank: Path,
    out_dir: Path,
    real_budget_mb: float,
    real_val: int,
    bank_faces: int,
    bank_backgrounds: int,
    seed: int = 0,
) -> dict[str, float]:
    """Tar a size-bounded subset for a machine that synthesises scenes itself (gpu_job.sh).

    ``real.tar.gz``: ``real_val`` real val images and a deterministic random subset of real train images up
    to ``real_budget_mb`` (``dataset/images|labels/...``). ``bank.tar.gz``: up to ``bank_faces`` train face
    crops and ``bank_backgrounds`` background strips per split, all val face crops (``bank/...``).
    Returns sizes in MiB.
    """
    import tarfile

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, float] = {}
    real = [p for p in sorted((dataset / "images").glob("*/*.jpg")) if not p.name.startswith("synth_")]
    shuffled = [real[i] for i in rng.permutation(len(real))]
    chosen = [p for p in shuffled if p.parent.name == "val"][:real_val]
    total = 0
    for p in (p for p in shuffled if p.parent.name == "train"):
        if total + p.stat().st_size > real_budget_mb * 2**20:
            break
        chosen.append(p)
        total += p.stat().st_size
    with tarfile.open(out_dir / "real.tar.gz", "w:gz", compresslevel=6) as tar:
        for img in chosen:
            label = dataset / "labels" / img.parent.name / f"{img.stem}.txt"
            tar.add(img, arcname=str(Path("dataset") / img.relative_to(dataset)))
            tar.add(label, arcname=str(Path("dataset") / label.relative_to(dataset)))
    sizes["real.tar.gz"] = (out_dir / "real.tar.gz").stat().st_size / 2**20
    sizes["real_images"] = len(chosen)
    with tarfile.open(out_dir / "bank.tar.gz", "w:gz", compresslevel=6) as tar:
        for split in ("train", "val"):
            lines = (bank / split / "faces.jsonl").read_text().splitlines()
            if split == "train" and len(lines) > bank_faces:
                lines = [lines[i] for i in sorted(rng.choice(len(lines), bank_faces, replace=False))]
            meta = out_dir / f"faces_{split}.jsonl"
            meta.write_text("\n".join(lines) + "\n")
            tar.add(meta, arcname=f"bank/{split}/faces.jsonl")
            meta.unlink()
            for line in lines:
                name = json.loads(line)["file"]
                tar.add(bank / split / "faces" / name, arcname=f"bank/{split}/faces/{name}")
            backgrounds = sorted((bank / split / "backgrounds").glob("*.jpg"))
            if len(backgrounds) > bank_backgrounds:
                backgrounds = [
                    backgrounds[i] for i in sorted(rng.choice(len(backgrounds), bank_backgrounds, replace=False))
                ]
            for bg in backgrounds:
                tar.add(bg, arcname=f"bank/{split}/backgrounds/{bg.name}")
    sizes["bank.tar.gz"] = (out_dir / "bank.tar.gz").stat().st_size / 2**20
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps",
        nargs="+",
        default=["real", "bank", "landmarks", "yaml"],
        choices=["real", "bank", "landmarks", "yaml", "pack"],
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=WORK / "dataset")
    parser.add_argument("--bank", type=Path, default=WORK / "bank")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--val-fraction", type=float, default=0.08)
    parser.add_argument(
        "--video-split",
        choices=["train", "val"],
        default="train",
        help="where the clip's frames go (val: kept for the CCTV validation set, pipelines.detector.cctv_val)",
    )
    parser.add_argument("--jpeg-quality", type=int, default=90, help="for re-encoded (painted / video) images")
    parser.add_argument("--bank-min-face", type=int, default=40, help="px, smallest face cut for the bank")
    parser.add_argument("--bank-max-face", type=int, default=64, help="px, faces are stored at most this wide")
    parser.add_argument("--bank-min-score", type=float, default=0.6)
    parser.add_argument(
        "--carry", type=Path, default=repo_root() / "work" / "carry" / "detdata", help="pack: output folder"
    )
    parser.add_argument("--carry-real-mb", type=float, default=10.5, help="pack: MiB of real train images")
    parser.add_argument("--carry-real-val", type=int, default=300, help="pack: real val images")
    parser.add_argument("--carry-bank-faces", type=int, default=5000, help="pack: train face crops")
    parser.add_argument("--carry-backgrounds", type=int, default=1200, help="pack: background strips per split")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.steps == ["pack"]:
        LOG.info(
            "packed: %s",
            pack_carry(
                args.out,
                args.bank,
                args.carry,
                args.carry_real_mb,
                args.carry_real_val,
                args.carry_bank_faces,
                args.carry_backgrounds,
            ),
        )
        return
    root = data_dir()
    items = load_labelled(args.cache, tuple(args.sources), FusionParams(), args.val_fraction, args.video_split)
    n_faces = sum(len(it.faces) for it in items)
    LOG.info(
        "%d images, %d fused faces, %d painted-out boxes", len(items), n_faces, sum(len(it.unconfirmed) for it in items)
    )
    if "real" in args.steps:
        LOG.info("real images written: %s", write_real(root, items, args.out, args.jpeg_quality))
    if "bank" in args.steps:
        LOG.info(
            "bank written: %s",
            write_bank(root, items, args.bank, args.bank_min_face, args.bank_max_face, args.bank_min_score),
        )
    if "landmarks" in args.steps:
        for source, prefix in (("celeba", "celeba299/"), ("lfw", "lfw/")):
            path = WORK / f"landmarks_{source}.json"
            LOG.info("%s: landmarks of %d images", path, write_landmarks(items, prefix, path))
    if "yaml" in args.steps:
        LOG.info("wrote %s", write_data_yaml(args.out))
    if "pack" in args.steps:
        LOG.info(
            "packed: %s",
            pack_carry(
                args.out,
                args.bank,
                args.carry,
                args.carry_real_mb,
                args.carry_real_val,
                args.carry_bank_faces,
                args.carry_backgrounds,
            ),
        )


if __name__ == "__main__":
    try:
        main()
    except VigilError as exc:
        raise SystemExit(f"error: {exc}") from None
