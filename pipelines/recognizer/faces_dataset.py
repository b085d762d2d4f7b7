"""Identity training data for the recognizer: CelebA photos -> aligned 150x150 chips with an identity split.

Steps (each cached under ``--out``, default ``work/recognizer/celeba_chips``):

1. **Landmarks.** For every ``celeba299/<identity>/<file>.jpg`` find the faces with YuNet
   (``cv2.FaceDetectorYN`` on ``weights/face_detection_yunet_2026may.onnx``; its 5 landmarks are already in
   the vigil order) and keep the one with the best ``area x centrality``. Images with no face are listed
   as skipped. Cached in ``landmarks.json`` (re-used when present).
2. **Chips.** Each face is warped to the recognizer's 5-point template (``work/recognizer/template.json``,
   written by ``pipelines.recognizer.template``) with ``vigil.align.align_face``.
3. **Split.** Identities (never images) are split deterministically: the ``round(val_fraction * n)``
   identities with the smallest ``sha256("<seed>:<identity>")`` are validation, the rest train.

Outputs: ``chips.npy`` (uint8 N x 150 x 150 x 3, BGR), ``meta.json`` (per chip: file, identity, split,
detector score, face width in source pixels; plus counts) and a carry pack ``work/carry/recchips/chips.npz``
(JPEG-encoded chips + the same meta) that ``load_chip_set`` reads as well, for the GPU machine.

CLI::

    python -m pipelines.recognizer.faces_dataset [--root DIR] [--out DIR] [--carry DIR] [--jpeg-quality 90]

LFW is never read here: LFW is the test set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vigil.errors import VigilError, run_reporting_errors
from vigil.paths import data_path, repo_path

CHIP_SIZE = 150
YUNET_FILE = "face_detection_yunet_2026may.onnx"
DEFAULT_OUT = Path("work/recognizer/celeba_chips")
DEFAULT_CARRY = Path("work/carry/recchips")
DEFAULT_TEMPLATE = Path("work/recognizer/template.json")
CARRY_PACK = "chips.npz"


@dataclass(frozen=True)
class ChipSet:
    """Aligned chips with their identities.

    ``chips``: uint8 (N, S, S, 3) BGR; ``labels``: int64 (N,) index into ``identities``;
    ``split``: (N,) str, "train" or "val"; ``files``: (N,) source paths relative to the CelebA root.
    """

    chips: np.ndarray
    labels: np.ndarray
    identities: list[str]
    split: np.ndarray
    files: list[str]

    def subset(self, which: str) -> ChipSet:
        """The chips of one split, labels re-indexed to 0..K-1 over that split's identities."""
        keep = np.flatnonzero(self.split == which)
        old = self.labels[keep]
        used = np.unique(old)
        remap = {int(o): i for i, o in enumerate(used)}
        return ChipSet(
            chips=self.chips[keep],
            labels=np.array([remap[int(o)] for o in old], dtype=np.int64),
            identities=[self.identities[int(o)] for o in used],
            split=self.split[keep],
            files=[self.files[int(i)] for i in keep],
        )


# ----------------------------------------------------------------------------------------------- split


def validation_identities(identities: list[str], val_fraction: float, seed: int) -> set[str]:
    """Deterministic identity split: the ``round(val_fraction * n)`` identities with the smallest
    ``sha256("<seed>:<identity>")`` (independent of file order and of the other identities' names)."""
    ranked = sorted(set(identities), key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).hexdigest())
    return set(ranked[: int(round(val_fraction * len(ranked)))])


# ------------------------------------------------------------------------------------------- detection


class YuNetLandmarker:
    """YuNet through OpenCV: the best face's box, score and 5 landmarks (vigil order) per image."""

    def __init__(self, weights: Path, score_threshold: float = 0.6) -> None:
        import cv2

        if not weights.is_file():
            raise VigilError(f"{weights}: YuNet weights not found")
        self._cv2 = cv2
        self._net = cv2.FaceDetectorYN.create(str(weights), "", (320, 320), score_threshold, 0.3, 50)

    def _detect(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        self._net.setInputSize((w, h))
        _, faces = self._net.detect(image)
        return np.zeros((0, 15), np.float32) if faces is None else faces

    def best_face(self, image: np.ndarray) -> dict | None:
        """The face with the largest ``area * centrality`` (None if none): box x1y1x2y2, score, landmarks."""
        faces = self._detect(image)
        scale = 1.0
        if len(faces) == 0 and max(image.shape[:2]) < 500:  # small photo: retry at 2x for small faces
            scale = 2.0
            faces = self._detect(self._cv2.resize(image, None, fx=2.0, fy=2.0, interpolation=self._cv2.INTER_LINEAR))
        if len(faces) == 0:
            return None
        faces = faces.astype(np.float64) / np.r_[[scale] * 14, [1.0]]
        h, w = image.shape[:2]
        centres = faces[:, 0:2] + faces[:, 2:4] / 2
        dist = np.linalg.norm((centres - [w / 2, h / 2]) / [w / 2, h / 2], axis=1) / np.sqrt(2)
        rank = faces[:, 2] * faces[:, 3] * (1.0 - 0.5 * np.clip(dist, 0, 1))
        f = faces[int(np.argmax(rank))]
        return {
            "box": [round(float(v), 2) for v in (f[0], f[1], f[0] + f[2], f[1] + f[3])],
            "score": round(float(f[14]), 4),
            "landmarks": [[round(float(f[4 + 2 * i]), 2), round(float(f[5 + 2 * i]), 2)] for i in range(5)],
        }


def list_photos(root: Path) -> list[Path]:
    """All ``<identity>/<file>.jpg`` under ``root``, sorted."""
    if not root.is_dir():
        raise VigilError(f"{root}: CelebA folder not found")
    photos = sorted(root.glob("*/*.jpg"))
    if not photos:
        raise VigilError(f"{root}: no <identity>/<file>.jpg photos")
    return photos


def detect_landmarks(root: Path, weights: Path, cache: Path) -> dict:
    """``{"faces": {relpath: {box, score, landmarks}}, "missing": [relpath]}``, cached as JSON at ``cache``."""
    import cv2

    if cache.is_file():
        return json.loads(cache.read_text())
    landmarker = YuNetLandmarker(weights)
    faces: dict[str, dict] = {}
    missing: list[str] = []
    t0 = time.monotonic()
    photos = list_photos(root)
    for i, path in enumerate(photos):
        rel = path.relative_to(root).as_posix()
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise VigilError(f"{path}: cannot decode image")
        face = landmarker.best_face(image)
        if face is None:
            missing.append(rel)
        else:
            faces[rel] = face
        if (i + 1) % 1000 == 0:
            print(f"  landmarks {i + 1}/{len(photos)} ({time.monotonic() - t0:.0f} s)", flush=True)
    result = {"detector": YUNET_FILE, "faces": faces, "missing": missing}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result))
    return result


# --------------------------------------------------------------------------------------------- align


def _decode_jpeg(encoded: np.ndarray, pack: Path) -> np.ndarray:
    import cv2

    image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if image is None:
        raise VigilError(f"{pack}: a chip does not decode as JPEG")
    return image


def load_template(path: Path) -> tuple[np.ndarray, int]:
    """The 5-point chip template (5, 2) in chip pixels and the chip size, from R1's template.json."""
    if not path.is_file():
        raise VigilError(f"{path}: alignment template not found (run python -m pipelines.recognizer.template)")
    data = json.loads(path.read_text())
    points = data.get("template", data.get("points", data.get("landmarks"))) if isinstance(data, dict) else data
    size = (
        int(data["chip_size"] if "chip_size" in data else data.get("size", CHIP_SIZE))
        if isinstance(data, dict)
        else CHIP_SIZE
    )
    template = np.asarray(points, dtype=np.float32)
    if template.shape != (5, 2):
        raise VigilError(f"{path}: template must be 5 x 2 points, got {template.shape}")
    return template, size


def build_chips(
    root: Path, landmarks: dict, template: np.ndarray, chip_size: int, val_fraction: float, seed: int
) -> tuple[np.ndarray, dict]:
    """Aligned chips (uint8 N x S x S x 3) and their meta dict (files, identities, split, counts)."""
    import cv2

    from vigil.align import align_face

    rels = sorted(landmarks["faces"])
    val_ids = validation_identities([rel.split("/")[0] for rel in rels], val_fraction, seed)
    chips = np.zeros((len(rels), chip_size, chip_size, 3), np.uint8)
    items = []
    for i, rel in enumerate(rels):
        image = cv2.imread(str(root / rel), cv2.IMREAD_COLOR)
        if image is None:
            raise VigilError(f"{root / rel}: cannot decode image")
        face = landmarks["faces"][rel]
        chips[i] = align_face(image, np.asarray(face["landmarks"], np.float32), template, chip_size)
        identity = rel.split("/")[0]
        box = face["box"]
        items.append(
            {
                "file": rel,
                "identity": identity,
                "split": "val" if identity in val_ids else "train",
                "score": face["score"],
                "face_width_px": round(box[2] - box[0], 1),
            }
        )
    meta = {
        "chip_size": chip_size,
        "template": template.tolist(),
        "val_fraction": val_fraction,
        "split_seed": seed,
        "detector": landmarks.get("detector", YUNET_FILE),
        "missing": landmarks["missing"],
        "items": items,
        "counts": _counts(items, len(landmarks["missing"])),
    }
    return chips, meta


def _counts(items: list[dict], n_missing: int) -> dict:
    out: dict = {"photos": len(items) + n_missing, "faces_found": len(items), "no_face": n_missing}
    for split in ("train", "val"):
        ids = {it["identity"] for it in items if it["split"] == split}
        out[split] = {"identities": len(ids), "chips": sum(it["split"] == split for it in items)}
    widths = np.array([it["face_width_px"] for it in items]) if items else np.zeros(1)
    out["face_width_px_median"] = float(np.median(widths))
    return out


# -------------------------------------------------------------------------------------------- storage


def save_cache(out: Path, chips: np.ndarray, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "chips.npy", chips)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def save_carry_pack(carry: Path, chips: np.ndarray, meta: dict, quality: int) -> Path:
    """JPEG-encode every chip (quality ``quality``) into one ``chips.npz`` with the meta JSON; returns its path."""
    import cv2

    encoded = []
    for chip in chips:
        ok, buf = cv2.imencode(".jpg", chip, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise VigilError("chip JPEG encoding failed")
        encoded.append(buf.reshape(-1))
    lengths = np.array([len(b) for b in encoded], dtype=np.int64)
    carry.mkdir(parents=True, exist_ok=True)
    path = carry / CARRY_PACK
    np.savez(
        path, jpeg=np.concatenate(encoded), lengths=lengths, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)
    )
    return path


def _meta_to_chipset(chips: np.ndarray, meta: dict) -> ChipSet:
    items = meta["items"]
    identities = sorted({it["identity"] for it in items})
    index = {name: i for i, name in enumerate(identities)}
    return ChipSet(
        chips=chips,
        labels=np.array([index[it["identity"]] for it in items], dtype=np.int64),
        identities=identities,
        split=np.array([it["split"] for it in items]),
        files=[it["file"] for it in items],
    )


def load_chip_set(path: Path) -> ChipSet:
    """Load a chip cache folder (``chips.npy`` + ``meta.json``) or a carry pack (``chips.npz`` or its folder)."""

    path = Path(path)
    if path.is_dir() and (path / "chips.npy").is_file():
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            raise VigilError(f"{meta_file}: chip meta not found")
        return _meta_to_chipset(np.load(path / "chips.npy"), json.loads(meta_file.read_text()))
    pack = path / CARRY_PACK if path.is_dir() else path
    if not pack.is_file():
        raise VigilError(
            f"{path}: no chips.npy/meta.json or {CARRY_PACK} (run python -m pipelines.recognizer.faces_dataset)"
        )
    with np.load(pack) as data:
        jpeg, lengths, meta = data["jpeg"], data["lengths"], json.loads(bytes(data["meta"]).decode())
    offsets = np.r_[0, np.cumsum(lengths)]
    chips = np.stack([_decode_jpeg(jpeg[offsets[i] : offsets[i + 1]], pack) for i in range(len(lengths))])
    return _meta_to_chipset(chips, meta)


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=None, help="CelebA folder (default: <data>/celeba299)")
    ap.add_argument(
        "--weights", type=Path, default=None, help="YuNet ONNX (default: <data>/weights/" + YUNET_FILE + ")"
    )
    ap.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--carry", type=Path, default=DEFAULT_CARRY)
    ap.add_argument("--jpeg-quality", type=int, default=90)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--landmarks-only", action="store_true", help="stop after the landmark cache")
    args = ap.parse_args(argv)
    return run_reporting_errors(lambda: _build_chip_cache(args))


def _build_chip_cache(args: argparse.Namespace) -> int:
    root = args.root or data_path("celeba299")
    weights = args.weights or data_path("weights", YUNET_FILE)
    out = repo_path(args.out)
    landmarks = detect_landmarks(root, weights, out / "landmarks.json")
    print(f"faces found: {len(landmarks['faces'])}, no face: {len(landmarks['missing'])}")
    if args.landmarks_only:
        return 0
    template, chip_size = load_template(repo_path(args.template))
    chips, meta = build_chips(root, landmarks, template, chip_size, args.val_fraction, args.seed)
    save_cache(out, chips, meta)
    pack = save_carry_pack(repo_path(args.carry), chips, meta, args.jpeg_quality)
    print(json.dumps(meta["counts"]))
    print(f"chips: {out / 'chips.npy'}; carry pack: {pack} ({pack.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
