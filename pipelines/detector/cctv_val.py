"""The CCTV validation set: surveillance-like scenes of held-out identities, plus the Hamilton clip's frames.

WIDER-200 is crowd photography; vigil watches cameras. This set scores a detector on what a camera gives it, with
``vigil eval wider --data work/detector/cctv/test.yaml`` (same code, same report keys):

* synthetic scenes (``synth.py``'s ``cctv`` profile): face crops pasted at 12-64 px on face-free backgrounds, with
  the camera degradations (resolution loss, blur, low light, noise, grey/IR, JPEG);
* zoom-out scenes (``zoomout.py``): whole photos shrunk in rows so their main faces are about 12-60 px, each in its
  own context, degraded the same way;
* ``test`` only: the Hamilton clip's labelled frames (every third frame, the teachers' fused boxes), which
  ``build_dataset --video-split val`` keeps out of training.

Every face and photo comes from the dataset's **val** identities (``build_dataset``'s split by LFW/CelebA
identity), never from training. Those identities are halved again by a hash of their name: scenes of one half form
``select`` (what a fine-tune's early stopping and checkpoint choice look at) and of the other half ``test`` (what
the model card reports), so the reported figure was never used to pick anything.

    python -m pipelines.detector.cctv_val --dataset work/detector/dataset --bank work/detector/bank \
        --out work/detector/cctv
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
from pathlib import Path

from vigil.errors import VigilError, run_reporting_errors
from vigil.paths import repo_path

LOG = logging.getLogger("cctv_val")
HALVES = ("select", "test")
SEED = 21  # not the training scenes' seed (0): different backgrounds and layouts
ZOOMOUT_TOP_PX = (14.0, 28.0)
ZOOMOUT_GROWTH = (1.0, 1.8)


def half_of(group: str) -> str:
    """``select`` or ``test`` for an identity, by a hash of its name (stable, about half each)."""
    return HALVES[hashlib.sha1(f"cctv:{group}".encode()).digest()[0] % 2]


def photo_group(path: Path) -> str:
    """The identity of a dataset photo from its flat name (``celeba299__<id>__x.jpg`` -> ``celeba299/<id>``)."""
    parts = path.stem.split("__")
    return "/".join(parts[:2]) if len(parts) >= 3 else parts[0]


def split_bank(bank_dir: Path, work: Path) -> dict[str, Path]:
    """A val-bank copy per half (faces of that half's identities, all background strips), under ``work``."""
    source = bank_dir / "val"
    lines = (source / "faces.jsonl").read_text().splitlines() if (source / "faces.jsonl").is_file() else []
    if not lines:
        raise VigilError(f"{source / 'faces.jsonl'}: no val face bank (run build_dataset --steps bank)")
    banks = {}
    for half in HALVES:
        folder = work / f"bank_{half}" / "val"
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "faces").mkdir(parents=True)
        kept = [line for line in lines if half_of(json.loads(line)["group"]) == half]
        (folder / "faces.jsonl").write_text("\n".join(kept) + "\n")
        for line in kept:
            name = json.loads(line)["file"]
            (folder / "faces" / name).symlink_to((source / "faces" / name).resolve())
        (folder / "backgrounds").symlink_to((source / "backgrounds").resolve())
        banks[half] = folder.parent
        LOG.info("%s: %d val bank faces", half, len(kept))
    return banks


def write_synth(bank: Path, out: Path, count: int, offset: int) -> int:
    from pipelines.detector.synth import LAYOUT_PROFILES, load_bank, make_scene, write_scene

    faces_bank = load_bank(bank, "val")
    return sum(
        write_scene(
            out,
            "val",
            f"synth_cctv_{index:05d}",
            *make_scene(faces_bank, SEED, "val", index, 640, LAYOUT_PROFILES["cctv"]),
        )
        for index in range(offset, offset + count)
    )


def write_zoomout(photos: list[Path], out: Path, count: int, offset: int) -> int:
    from pipelines.detector.synth import write_scene
    from pipelines.detector.zoomout import make_scene

    return sum(
        write_scene(
            out,
            "val",
            f"zoomout_cctv_{index:05d}",
            *make_scene(photos, SEED, "val", index, 640, top_px=ZOOMOUT_TOP_PX, growth=ZOOMOUT_GROWTH),
        )
        for index in range(offset, offset + count)
    )


def copy_frames(dataset: Path, out: Path) -> int:
    """The Hamilton frames of the dataset's val split (images and labels) into ``out``."""
    frames = sorted((dataset / "images" / "val").glob("video__*.jpg"))
    for frame in frames:
        shutil.copyfile(frame, out / "images" / "val" / frame.name)
        shutil.copyfile(dataset / "labels" / "val" / f"{frame.stem}.txt", out / "labels" / "val" / f"{frame.stem}.txt")
    return len(frames)


def build(
    dataset: Path, bank_dir: Path, out: Path, synth_per_half: int, zoomout_per_half: int
) -> dict[str, dict[str, int]]:
    """Write ``out/<half>/`` and ``out/<half>.yaml`` for both halves; returns images and faces written."""
    import yaml

    from pipelines.detector.zoomout import list_photos

    photos = list_photos(dataset, "val")
    banks = split_bank(bank_dir, out / "work")
    counts: dict[str, dict[str, int]] = {}
    for number, half in enumerate(HALVES):
        folder = out / half
        if folder.exists():
            shutil.rmtree(folder)
        for kind in ("images", "labels"):
            (folder / kind / "val").mkdir(parents=True)
        mine = [p for p in photos if not p.name.startswith("video") and half_of(photo_group(p)) == half]
        counts[half] = {
            "synth_faces": write_synth(banks[half], folder, synth_per_half, number * synth_per_half),
            "zoomout_faces": write_zoomout(mine, folder, zoomout_per_half, number * zoomout_per_half),
            "photos_of_half": len(mine),
        }
        if half == "test":
            counts[half]["hamilton_frames"] = copy_frames(dataset, folder)
        counts[half]["images"] = len(list((folder / "images" / "val").glob("*.jpg")))
        (out / f"{half}.yaml").write_text(
            yaml.safe_dump(
                {"path": str(folder.resolve()), "train": "images/val", "val": "images/val", "names": {0: "face"}},
                sort_keys=False,
            )
        )
    (out / "counts.json").write_text(json.dumps(counts, indent=1))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=Path("work/detector/dataset"))
    parser.add_argument("--bank", type=Path, default=Path("work/detector/bank"))
    parser.add_argument("--out", type=Path, default=Path("work/detector/cctv"))
    parser.add_argument("--synth", type=int, default=100, help="synthetic scenes per half")
    parser.add_argument("--zoomout", type=int, default=60, help="zoom-out scenes per half")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    counts = build(repo_path(args.dataset), repo_path(args.bank), repo_path(args.out), args.synth, args.zoomout)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
