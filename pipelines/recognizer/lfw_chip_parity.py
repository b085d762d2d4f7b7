"""Do two files of one recognizer embed real faces alike? Cosine between their embeddings of the same LFW chips.

    python -m pipelines.recognizer.lfw_chip_parity --model models/recognizer/sface-2021dec.onnx \
        --other work/recognizer/sface_fp16.onnx [--images 600] [--detections-cache DIR] [--json OUT]

For a re-stored or re-written model (fp16 or int8 weight storage, a graph rewrite): the chips are cut by vigil's own
path (default detector, ``vigil.align`` with ``--model``'s manifest template, one chip per face, no flip) from
``--images`` LFW images evenly spaced over the pairs' images, clean and degraded (``vigil.eval.degrade_lfw``), and
both files embed the same chips. ``--other`` need not be in the manifest. Random chips (``wrap_onnx --check``) miss
what real faces exercise; this does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vigil.errors import VigilError, run_reporting_errors

DEFAULT_DETECTIONS = Path("work/recognizer/lfw_det480/detcache")
VARIANTS = ("clean", "degraded")


def evenly_spaced(items: list[str], count: int) -> list[str]:
    """``count`` of ``items`` (sorted), evenly spaced; all of them when there are fewer."""
    ordered = sorted(items)
    if count >= len(ordered):
        return ordered
    return [ordered[int(i * len(ordered) / count)] for i in range(count)]


def cosine_summary(first: np.ndarray, second: np.ndarray) -> dict:
    """Row-wise cosine of two stacks of unit vectors: count, mean, min, 1st percentile."""
    cos = np.sum(first * second, axis=1)
    return {
        "chips": len(cos),
        "cosine_mean": round(float(cos.mean()), 6),
        "cosine_min": round(float(cos.min()), 6),
        "cosine_p01": round(float(np.percentile(cos, 1)), 6),
    }


def lfw_chips(model: Path, variant: str, images: int, detections_cache: Path) -> np.ndarray:
    """Aligned chips for ``model`` from ``images`` LFW images of ``variant``, through vigil's own path."""
    from vigil.eval import lfw
    from vigil.eval.face_source import build_detector, build_recognizer
    from vigil.paths import data_path

    lfw_dir = data_path("lfw")
    pairs = lfw.parse_lfw_pairs(lfw_dir / lfw.PAIRS_FILE)
    rels = evenly_spaced(list({p.path1 for p in pairs} | {p.path2 for p in pairs}), images)
    keys = [f"{variant}:{rel}" for rel in rels]  # the keys vigil eval lfw caches detections under
    detect_batch, label = build_detector(None)
    source, cache = lfw.lfw_face_source(
        variant == "degraded",
        detect_batch,
        label,
        build_recognizer(model, flip_average=False).aligner,
        detections_cache=detections_cache,
    )
    load = lfw.lfw_loader(lfw_dir, variant == "degraded")
    chips: list[np.ndarray] = []
    for start in range(0, len(keys), 32):
        batch = keys[start : start + 32]
        for key, face in zip(batch, source.chips([load(key) for key in batch], batch)):
            if face.chip is None:
                raise VigilError(f"{key}: no chip (the LFW protocol's source always gives one)")
            chips.append(face.chip)
    if cache is not None:
        cache.save()
    return np.stack(chips)


def compare(model: Path, other: Path, images: int, detections_cache: Path) -> dict:
    from vigil.embed import OnnxEmbedder
    from vigil.eval.face_source import build_recognizer

    if not Path(other).is_file():
        raise VigilError(f"{other}: model file not found")
    first = build_recognizer(model, flip_average=False).embedder
    second = OnnxEmbedder(other, providers=["CPUExecutionProvider"])
    report = {"model": str(model), "other": str(other), "images": images}
    for variant in VARIANTS:
        chips = lfw_chips(model, variant, images, detections_cache)
        report[variant] = cosine_summary(first.embed(chips), second.embed(chips))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        type=Path,
        required=True,
        help="a recognizer listed in models/manifest.yaml (its template cuts the chips)",
    )
    ap.add_argument(
        "--other", type=Path, required=True, help="another file of the same recognizer (same input contract)"
    )
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--detections-cache", type=Path, default=DEFAULT_DETECTIONS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    def body() -> int:
        report = compare(args.model, args.other, args.images, args.detections_cache)
        for variant in VARIANTS:
            row = report[variant]
            print(
                f"{variant}: {row['chips']} chips, cosine mean {row['cosine_mean']:.6f}, min {row['cosine_min']:.6f}, "
                f"1st percentile {row['cosine_p01']:.6f}"
            )
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))
        return 0

    return run_reporting_errors(body)


if __name__ == "__main__":
    sys.exit(main())
