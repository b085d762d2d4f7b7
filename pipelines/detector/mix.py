"""A training mix: a data YAML whose train split is a chosen number of images from each source.

The detector's dataset folder holds every source side by side (file names start with the source:
``celeba299_``, ``lfw_``, ``video_``, ``synth_``, ``synthcrowd_``). Ultralytics' ``fraction`` takes the
first images in name order, which under-samples whatever sorts last; a mix instead draws a seeded random
sample of a given size from each source and writes it as an image list, so a training stage can weigh, for
example, small-face crowd scenes against portraits. Validation stays the whole val split.

    python -m pipelines.detector.mix --take synthcrowd=2000 synth=1500 celeba299=1500 lfw=800 video=92 \
        --name crowd_mix
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipelines.detector.build_dataset import data_yaml_config
from vigil.errors import VigilError
from vigil.paths import repo_root

DATASET = repo_root() / "work" / "detector" / "dataset"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def source_of(path: Path) -> str:
    """The source a dataset image came from: its file name up to the first underscore."""
    return path.name.split("_", 1)[0]


def select_images(files: list[Path], takes: dict[str, int], seed: int) -> list[Path]:
    """``takes[source]`` images of each source, drawn without replacement (seeded), in name order.

    Raises when a source is missing or has fewer images than asked for.
    """
    by_source: dict[str, list[Path]] = {}
    for f in sorted(files):
        by_source.setdefault(source_of(f), []).append(f)
    rng = np.random.default_rng(seed)
    chosen: list[Path] = []
    for source, n in sorted(takes.items()):
        pool = by_source.get(source, [])
        if n > len(pool):
            raise VigilError(f"source {source!r}: asked for {n} images, the train split has {len(pool)}")
        picks = rng.choice(len(pool), size=n, replace=False) if n else np.zeros(0, dtype=int)
        chosen.extend(pool[i] for i in picks)
    return sorted(chosen)


def parse_takes(items: list[str]) -> dict[str, int]:
    """``["synth=1500", "lfw=800"]`` -> ``{"synth": 1500, "lfw": 800}``; one clear error per bad item."""
    takes: dict[str, int] = {}
    for item in items:
        source, sep, count = item.partition("=")
        if not sep or not source or not count.isdigit():
            raise VigilError(f"--take {item!r}: expected SOURCE=COUNT, e.g. synth=1500")
        takes[source] = int(count)
    return takes


def write_mix(dataset: Path, takes: dict[str, int], seed: int, name: str) -> Path:
    """Write ``dataset/<name>.txt`` (the image list) and ``dataset/<name>.yaml``; returns the YAML."""
    import yaml

    train_dir = dataset / "images" / "train"
    files = [p for p in train_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES] if train_dir.is_dir() else []
    if not files:
        raise VigilError(f"{train_dir}: no training images")
    chosen = select_images(files, takes, seed)
    listing = dataset / f"{name}.txt"
    listing.write_text("".join(f"./images/train/{p.name}\n" for p in chosen))
    out = dataset / f"{name}.yaml"
    out.write_text(yaml.safe_dump(data_yaml_config(dataset, train=listing.name), sort_keys=False))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--take", nargs="+", required=True, metavar="SOURCE=COUNT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="mix", help="writes <dataset>/<name>.txt and <name>.yaml")
    args = parser.parse_args(argv)
    out = write_mix(args.dataset, parse_takes(args.take), args.seed, args.name)
    print(f"wrote {out}")


if __name__ == "__main__":
    try:
        main()
    except VigilError as exc:
        raise SystemExit(f"error: {exc}") from None
