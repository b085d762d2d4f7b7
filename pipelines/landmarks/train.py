"""Train the landmark refiner on CelebA: vigil's detector box -> the SCRFD-2.5G teacher's five points.

    python -m pipelines.landmarks.train --labels work/landmarks/celeba_scrfd.npz --out work/landmarks/run \
        [--epochs 24] [--time-budget-s 1800] [--crop-px 96] [--seed 0]
    # ship a checkpoint (fp16 weights): the ONNX written is exactly models/landmarks/<name>.onnx
    python -m pipelines.landmarks.train --export-from work/landmarks/run1/best.pt \
        --out models/landmarks/vigil-landmarks-96.onnx

Data: ``pipelines.landmarks.label``'s pairs, split by CelebA identity (a tenth of the identities for validation;
LFW is never used). Training crops follow the runtime geometry (``vigil.refine.crop_transform``: a square of
``context`` x the box's longer side) with the box jittered (shift, scale, rotation) so the net does not rely on
the detector's box being exact, mirrored half the time, and degraded half the time the way CCTV degrades a face
(``pipelines.recognizer.degrade``-style: downscaled to 14-60 px and back, blur, JPEG, noise, gamma, grey).
Loss: L1 on the points in units of the teacher's inter-ocular distance. AdamW, warm-up then cosine decay;
the checkpoint with the lowest validation error (clean and degraded crops averaged) is kept.

Validation reports the NME (mean point error / inter-ocular distance, against the teacher) of the refiner and of
the detector's own landmarks on the same faces: the number the refiner has to beat.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vigil.errors import VigilError, run_reporting_errors
from vigil.paths import data_path, repo_path
from vigil.refine import crop_transform
from vigil.types import LANDMARK_FLIP_INDEX

PRE_CONTEXT = 2.2  # the stored pre-crops cover this multiple of the box, room for jitter and rotation
PRE_PX = 176


@dataclass(frozen=True)
class FaceSamples:
    """Per face: a pre-crop around vigil's box, the transform frame -> pre-crop, the teacher's and vigil's points
    in pre-crop pixels, and the identity (CelebA folder)."""

    pre: np.ndarray  # (N, PRE_PX, PRE_PX, 3) uint8
    box_side: np.ndarray  # (N,) the box's longer side in pre-crop px
    teacher: np.ndarray  # (N, 5, 2)
    vigil: np.ndarray  # (N, 5, 2)
    identity: np.ndarray  # (N,) str


def load_samples(labels: Path, root: Path | None = None) -> FaceSamples:
    """Pre-crops of every labelled face; image keys are relative to ``root`` (default: the shared CelebA folder)."""
    from vigil.eval.face_source import read_image

    if not labels.is_file():
        raise VigilError(f"{labels}: no labels file (run python -m pipelines.landmarks.label first)")
    z = np.load(labels)
    root = root or data_path("celeba299")
    pre, side, teacher, ours, ident = [], [], [], [], []
    image_key, image = None, None
    for key, box, t, v in zip(z["keys"], z["boxes"], z["teacher"], z["vigil"]):
        key = str(key)
        if key != image_key:  # the labels list a photo's faces one after another: read each photo once
            image_key, image = key, read_image(root / key)
        m = crop_transform(box, PRE_PX, PRE_CONTEXT)
        pre.append(cv2.warpAffine(image, m, (PRE_PX, PRE_PX), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        side.append(m[0, 0] * max(box[2] - box[0], box[3] - box[1]))
        teacher.append(t * m[0, 0] + m[:, 2])
        ours.append(v * m[0, 0] + m[:, 2])
        ident.append(key.split("/")[0])
    return FaceSamples(
        np.stack(pre),
        np.array(side, np.float32),
        np.array(teacher, np.float32),
        np.array(ours, np.float32),
        np.array(ident),
    )


def split_identities(identity: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, val) with every identity on one side only."""
    names = np.unique(identity)
    if len(names) < 2:
        raise VigilError(f"need faces of at least 2 identities to split train and validation, got {len(names)}")
    rng = np.random.default_rng(seed)
    val_count = min(len(names) - 1, max(1, int(round(len(names) * val_fraction))))
    val_names = set(rng.choice(names, val_count, replace=False).tolist())
    val = np.array([i in val_names for i in identity])
    return ~val, val


def view_transform(
    side: float, crop_px: int, context: float, shift=(0.0, 0.0), scale: float = 1.0, angle_deg: float = 0.0
) -> np.ndarray:
    """2x3 affine pre-crop -> net crop: the runtime geometry around the pre-crop's centre, jittered."""
    centre = PRE_PX / 2 + np.asarray(shift) * side
    s = crop_px / (context * side * scale)
    a = math.radians(angle_deg)
    rot = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.hstack([rot, (np.array([crop_px / 2, crop_px / 2]) - rot @ centre)[:, None]])


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ m[:, :2].T + m[:, 2]


def degrade(crop: np.ndarray, rng: np.random.Generator, face_px: float) -> np.ndarray:
    """CCTV-like: the face downscaled to 14-60 px and back, blur, JPEG 15-70, noise, gamma, sometimes grey."""
    size = crop.shape[0]
    target = rng.uniform(14, 60)
    if target < face_px:
        small = max(8, int(round(size * target / face_px)))
        crop = cv2.resize(
            cv2.resize(crop, (small, small), interpolation=cv2.INTER_AREA), (size, size), interpolation=cv2.INTER_LINEAR
        )
    if rng.random() < 0.5:
        crop = cv2.GaussianBlur(crop, (0, 0), rng.uniform(0.5, 2.0))
    if rng.random() < 0.7:
        ok, enc = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 71))])
        decoded = cv2.imdecode(enc, cv2.IMREAD_COLOR) if ok else None
        crop = crop if decoded is None else decoded
    out = crop.astype(np.float32)
    if rng.random() < 0.5:
        out = 255.0 * (out / 255.0) ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.5:
        out += rng.normal(0, rng.uniform(2, 10), out.shape)
    if rng.random() < 0.2:
        out[:] = out.mean(axis=2, keepdims=True)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_view(
    samples: FaceSamples, i: int, crop_px: int, context: float, rng: np.random.Generator | None, p_degrade: float
):
    """(crop uint8, teacher points in crop units) for face ``i``; ``rng`` None: the plain runtime view."""
    side = float(samples.box_side[i])
    if rng is None:
        m = view_transform(side, crop_px, context)
    else:
        m = view_transform(
            side,
            crop_px,
            context,
            rng.uniform(-0.08, 0.08, 2),
            rng.uniform(0.9, 1.12),
            float(np.clip(rng.normal(0, 10), -25, 25)),
        )
    crop = cv2.warpAffine(
        samples.pre[i], m, (crop_px, crop_px), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    points = apply(m, samples.teacher[i])
    if rng is not None and rng.random() < 0.5:
        crop = np.ascontiguousarray(crop[:, ::-1])
        points = points[list(LANDMARK_FLIP_INDEX)]
        points[:, 0] = crop_px - points[:, 0]
    if rng is not None and rng.random() < p_degrade:
        crop = degrade(crop, rng, crop_px / context)
    return crop, (points / crop_px).astype(np.float32)


def nme(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-face mean point distance / inter-ocular distance (both (N, 5, 2), same units)."""
    iod = np.linalg.norm(target[:, 0] - target[:, 1], axis=1)
    return np.linalg.norm(pred - target, axis=2).mean(axis=1) / np.maximum(iod, 1e-6)


def predict(model, crops: np.ndarray, batch: int = 256) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(crops), batch):
            x = torch.from_numpy(crops[s : s + batch]).permute(0, 3, 1, 2).float()
            out.append(model(x).numpy())
    return np.concatenate(out) if out else np.zeros((0, 5, 2), np.float32)


def validation_set(samples: FaceSamples, idx: np.ndarray, crop_px: int, context: float, seed: int) -> dict:
    """Clean and (seeded) degraded runtime-geometry crops of the validation faces, their targets, and the
    detector's own points in the same crop units."""
    clean = [make_view(samples, i, crop_px, context, None, 0.0) for i in idx]
    rng = np.random.default_rng(seed)
    degraded = np.stack([degrade(c, rng, crop_px / context) for c, _ in clean])
    vig = np.stack(
        [apply(view_transform(float(samples.box_side[i]), crop_px, context), samples.vigil[i]) / crop_px for i in idx]
    )
    return {
        "clean": np.stack([c for c, _ in clean]),
        "degraded": degraded,
        "target": np.stack([t for _, t in clean]),
        "vigil": vig,
    }


def _train_epoch(
    model: Any,
    opt: Any,
    sched: Any,
    samples: FaceSamples,
    order: np.ndarray,
    steps: int,
    rng: np.random.Generator,
    args: argparse.Namespace,
) -> list[float]:
    """One epoch of ``steps`` batches in ``order``: mean point error over the inter-ocular distance; the losses."""
    import torch

    model.train()
    losses = []
    for s in range(steps):
        views = [
            make_view(samples, i, args.crop_px, args.context, rng, args.p_degrade)
            for i in order[s * args.batch_size : (s + 1) * args.batch_size]
        ]
        x = torch.from_numpy(np.stack([v[0] for v in views])).permute(0, 3, 1, 2).float()
        y = torch.from_numpy(np.stack([v[1] for v in views]))
        iod = (y[:, 0] - y[:, 1]).norm(dim=1).clamp_min(1e-3)
        loss = ((model(x) - y).norm(dim=2).mean(dim=1) / iod).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def train(args: argparse.Namespace) -> dict:
    import torch

    from pipelines.landmarks.network import build_network, export_onnx

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    samples = load_samples(repo_path(args.labels), repo_path(args.images_root) if args.images_root else None)
    train_mask, val_mask = split_identities(samples.identity, 0.1, args.seed)
    train_idx, val_idx = np.flatnonzero(train_mask), np.flatnonzero(val_mask)
    val = validation_set(samples, val_idx, args.crop_px, args.context, args.seed + 1)
    base = {"vigil_detector_nme": float(nme(val["vigil"], val["target"]).mean())}
    print(
        f"faces: train {len(train_idx)}, val {len(val_idx)} ({len(np.unique(samples.identity[val_idx]))} ids); "
        f"detector's own landmarks on val: NME {base['vigil_detector_nme']:.4f}; "
        f"loaded in {time.monotonic() - t0:.0f} s",
        flush=True,
    )
    model = build_network(args.crop_px)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = len(train_idx) // args.batch_size
    total = steps_per_epoch * args.epochs
    warm = max(1, steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warm
            if s < warm
            else 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, total - warm))))
        ),
    )
    rng = np.random.default_rng(args.seed)
    out = repo_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    history, best, start = [], None, time.monotonic()
    for epoch in range(1, args.epochs + 1):
        losses = _train_epoch(model, opt, sched, samples, rng.permutation(train_idx), steps_per_epoch, rng, args)
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "val_nme_clean": float(nme(predict(model, val["clean"]), val["target"]).mean()),
            "val_nme_degraded": float(nme(predict(model, val["degraded"]), val["target"]).mean()),
            "seconds": round(time.monotonic() - start, 1),
        }
        row["val_nme"] = (row["val_nme_clean"] + row["val_nme_degraded"]) / 2
        history.append(row)
        print(json.dumps(row), flush=True)
        if best is None or row["val_nme"] < best["val_nme"]:
            best = row
            torch.save(model.state_dict(), out / "best.pt")
        if args.time_budget_s and time.monotonic() - start > args.time_budget_s:
            break
    model.load_state_dict(torch.load(out / "best.pt", weights_only=True))
    onnx_path = export_onnx(model, out / "model.onnx", args.crop_px)
    result = {
        "command": "python -m pipelines.landmarks.train " + " ".join(sys.argv[1:]),
        "best": best,
        "baseline": base,
        "history": history,
        "train_faces": len(train_idx),
        "val_faces": len(val_idx),
        "crop_px": args.crop_px,
        "context": args.context,
        "onnx": str(onnx_path),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.landmarks.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", default="work/landmarks/celeba_scrfd.npz")
    p.add_argument(
        "--images-root", default=None, help="folder the labels' image keys are relative to (default: <data>/celeba299)"
    )
    p.add_argument("--out", default="work/landmarks/run")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--time-budget-s", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--crop-px", type=int, default=96)
    p.add_argument("--context", type=float, default=1.4)
    p.add_argument("--p-degrade", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export-from", default=None, help="only export this checkpoint (best.pt) to the ONNX file --out")
    return p


def export_checkpoint(checkpoint: Path, out: Path, crop_px: int) -> Path:
    import torch

    from pipelines.landmarks.network import build_network, export_onnx

    if not checkpoint.is_file():
        raise VigilError(f"{checkpoint}: checkpoint not found")
    model = build_network(crop_px)
    try:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    except Exception as exc:  # torch raises several types for a foreign or corrupt file
        raise VigilError(
            f"{checkpoint}: not a landmark network checkpoint for --crop-px {crop_px} ({type(exc).__name__})"
        ) from None
    path = export_onnx(model.eval(), out, crop_px)
    print(f"{path}: exported from {checkpoint}")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.crop_px % 32:
        print(f"error: --crop-px must be a multiple of 32, got {args.crop_px}", file=sys.stderr)
        return 2
    if args.export_from:
        return run_reporting_errors(
            lambda: (export_checkpoint(repo_path(args.export_from), repo_path(args.out), args.crop_px), 0)[1]
        )
    return run_reporting_errors(lambda: (train(args), 0)[1])


if __name__ == "__main__":
    sys.exit(main())
