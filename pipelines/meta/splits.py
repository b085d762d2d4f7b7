"""Identity roles for few-shot meta-learning and its benchmark: no identity is ever in two roles.

* ``test``: the CelebA identities the shipped recognizer's fine-tuned member held out (``validation_identities(...,
  0.15, seed 0)`` of ``pipelines.recognizer.faces_dataset``: never trained on, used there only to choose the
  checkpoint and the ensemble's fusion weight), plus every LFW person with at least ``lfw_min_images`` photos
  (LFW is the project's test set: nothing trains on it);
* ``val``: ``val_fraction`` of the remaining CelebA identities (chosen by ``sha256("<seed>:<identity>")``, the same
  rule): early stopping and hyper-parameters of the adapters;
* ``train``: the rest of CelebA (all of them among the recognizer member's own training identities).

Identities are ``"<source>:<folder name>"`` (``celeba:7201``, ``lfw:Aaron_Peirsol``), as in the embedding caches.

    python -m pipelines.meta.splits [--out work/meta/split.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.recognizer.faces_dataset import validation_identities
from vigil.errors import VigilError, run_reporting_errors
from vigil.paths import data_path, repo_path

RECOGNIZER_VAL_FRACTION = 0.15  # pipelines.recognizer.faces_dataset's defaults, which cut the shipped member's split
RECOGNIZER_SPLIT_SEED = 0
DEFAULT_OUT = Path("work/meta/split.json")


def fewshot_split(
    celeba: list[str], lfw: list[str], val_fraction: float = 0.15, seed: int = 27
) -> dict[str, list[str]]:
    """``{"train", "val", "test"}`` -> sorted prefixed identities (module docstring). ``celeba`` and ``lfw`` are bare
    folder names; ``lfw`` only the people eligible for testing."""
    held_out = validation_identities(celeba, RECOGNIZER_VAL_FRACTION, RECOGNIZER_SPLIT_SEED)
    member_train = sorted(set(celeba) - held_out)
    val = validation_identities(member_train, val_fraction, seed)
    return {
        "train": sorted(f"celeba:{i}" for i in member_train if i not in val),
        "val": sorted(f"celeba:{i}" for i in val),
        "test": sorted([f"celeba:{i}" for i in held_out] + [f"lfw:{n}" for n in lfw]),
    }


def identity_folders(root: Path, min_images: int) -> list[str]:
    if not root.is_dir():
        raise VigilError(f"{root}: folder not found")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and sum(1 for _ in p.glob("*.jpg")) >= min_images)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=27)
    ap.add_argument("--lfw-min-images", type=int, default=4)
    args = ap.parse_args(argv)
    return run_reporting_errors(lambda: _write(args))


def _write(args: argparse.Namespace) -> int:
    celeba = identity_folders(data_path("celeba299"), 1)
    lfw = identity_folders(data_path("lfw"), args.lfw_min_images)
    roles = fewshot_split(celeba, lfw, args.val_fraction, args.seed)
    out = repo_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = {role: len(ids) for role, ids in roles.items()}
    rule = (
        f"test: CelebA validation_identities(0.15, seed 0) (held out by the recognizer's fine-tuned member) + LFW "
        f"people with >= {args.lfw_min_images} photos; val: validation_identities(rest, {args.val_fraction}, seed "
        f"{args.seed}); train: the rest of CelebA"
    )
    out.write_text(json.dumps({"rule": rule, "counts": counts, "roles": roles}, indent=1) + "\n")
    print(f"{out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
