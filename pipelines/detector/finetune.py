"""Fine-tune the YOLOv5-face nano (rebuilt from ``yolov5n-0.5.onnx``) for surveillance, on the CPU.

    python -m pipelines.detector.finetune --route full --data work/detector/dataset/ft_mix.yaml \\
        --val-data work/detector/cctv/select.yaml --out work/detector/v5runs/full --hours 1.5
    python -m pipelines.detector.finetune --resume work/detector/v5runs/full        # continue an interrupted run
    python -m pipelines.detector.finetune --export-from work/detector/v5runs/full/best.pt --out models/detector/x.onnx
    python -m pipelines.detector.finetune --export-from RUN_A/best.pt:0.6 RUN_B/best.pt:1 --out x.onnx  # blended

Routes (``--route``; every other flag can override a route's value):

* ``head``: only the detection head (three 1x1 convs) trains; backbone and neck run without gradients (cheapest);
* ``full``: everything trains at a low learning rate, the backbone at a quarter of it (``--backbone-lr-mult``);
* ``mosaic``: ``full`` with mosaics (four images per canvas) most of the time, for small faces with context; give
  it a data YAML that includes zoom-out scenes (``pipelines.detector.zoomout``).

Recipe: AdamW (weight decay on conv weights only, never on biases, which hold the folded batch-norm), linear warm-up
then cosine decay to ``--lr-final`` of the peak over the step budget, an exponential moving average of the weights
(yolov5's ``ModelEMA``: what is evaluated, checkpointed as ``best`` and exported). ``--distill A`` guards against
forgetting: where no labelled face is matched, the objectness target is A times the frozen source model's own
objectness instead of 0, so faces the pseudo-labels miss (crowd faces no two teachers agreed on) are not trained
away; A = 1 keeps the source's view of everything unlabelled. Every ``--eval-every`` steps the
EMA is exported to ONNX and scored with ``vigil eval wider``'s code on ``--val-data`` (a held-out CCTV split, never
WIDER-200): AP50 there picks ``best.pt``, and training stops early after ``--patience`` evaluations without a gain.
``last.pt`` (model, EMA, optimiser, step, random state, history) is written at every evaluation and every
``--save-every`` steps, so an interrupted run resumes where it stopped (``--resume RUN``) and a 2-hour CPU run is
a useful unit. ``history.jsonl`` holds the losses and every evaluation.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vigil.errors import VigilError, run_reporting_errors
from vigil.paths import data_path, repo_path

LOG = logging.getLogger("finetune")
SOURCE_ONNX = "weights/yolov5n-0.5.onnx"


@dataclass(frozen=True)
class Recipe:
    route: str = "full"
    lr: float = 3e-4
    backbone_lr_mult: float = 0.25
    lr_final: float = 0.05  # cosine floor, fraction of the peak
    weight_decay: float = 0.01
    warmup_steps: int = 100
    steps: int = 3000
    batch: int = 8
    imgsz: int = 640
    canvas: int = 320  # trained window side (pipelines.detector.v5data.Augment)
    mosaic: float = 0.3
    scale: tuple[float, float] = (0.5, 1.25)
    ema_decay: float = 0.999
    distill: float = 0.0  # objectness target where no face is labelled: this times the frozen source's (0: none)
    seed: int = 0
    eval_imgsz: int = 640
    eval_every: int = 250
    patience: int = 4
    save_every: int = 50
    hours: float = 0.0  # wall-clock budget (0: none); training stops after the evaluation that passes it

    def with_overrides(self, **overrides) -> Recipe:
        return Recipe(**{**asdict(self), **{k: v for k, v in overrides.items() if v is not None}})


ROUTES = {
    "head": Recipe(route="head", lr=1e-3, mosaic=0.3),
    "full": Recipe(route="full", lr=3e-4, mosaic=0.3),
    "mosaic": Recipe(route="mosaic", lr=3e-4, mosaic=0.8, scale=(0.35, 1.25)),
}


@dataclass
class State:
    step: int = 0
    best_ap50: float = -1.0
    best_step: int = -1
    evals_without_gain: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


class ModelEMA:
    """Exponential moving average of the weights, decay ramped up over the first updates (yolov5's ``ModelEMA``)."""

    def __init__(self, model, decay: float, tau: float = 2000.0, updates: int = 0) -> None:
        self.ema = copy.deepcopy(model).eval()
        self.decay, self.tau, self.updates = decay, tau, updates
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def update(self, model) -> None:
        import torch

        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        with torch.no_grad():
            for e, m in zip(self.ema.state_dict().values(), model.state_dict().values()):
                if e.dtype.is_floating_point:
                    e.mul_(d).add_(m.detach(), alpha=1 - d)


def lr_factor(step: int, recipe: Recipe) -> float:
    """Linear warm-up from 1 % to the peak, then cosine decay to ``lr_final`` of it at ``steps``."""
    if step < recipe.warmup_steps:
        return 0.01 + 0.99 * step / max(1, recipe.warmup_steps)
    progress = min(1.0, (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps))
    return recipe.lr_final + (1 - recipe.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model, recipe: Recipe) -> list[dict]:
    """AdamW groups: (backbone | neck+head) x (weights with decay | biases without); only the head for ``head``."""
    head = {id(p) for p in model.head_parameters()}
    backbone = {id(p) for p in model.backbone_parameters()}
    groups: dict[tuple[str, bool], list] = {}
    for p in model.parameters():
        trainable = recipe.route != "head" or id(p) in head
        p.requires_grad_(trainable)
        if trainable:
            groups.setdefault(("backbone" if id(p) in backbone else "rest", p.ndim > 1), []).append(p)
    return [
        {
            "params": params,
            "weight_decay": recipe.weight_decay if decayed else 0.0,
            "lr_mult": recipe.backbone_lr_mult if part == "backbone" else 1.0,
            "lr": recipe.lr,
        }
        for (part, decayed), params in groups.items()
    ]


def training_files(data_yaml: Path) -> list[Path]:
    from vigil.eval.wider import split_images

    return [item.image_path for item in split_images(data_yaml, "train")]


def evaluate_ema(ema_model, recipe: Recipe, val_data: Path, out: Path) -> dict:
    """Export the EMA to ONNX and score it on ``val_data`` with ``vigil eval wider``'s code (AP score floor)."""
    from pipelines.detector.yolov5face_net import export_onnx
    from vigil.config import DetectorConfig
    from vigil.detect import FaceDetector
    from vigil.eval.wider import AP_SCORE_THRESHOLD, evaluate_detector

    onnx_path = export_onnx(ema_model, out / "eval_tmp.onnx")
    defaults = DetectorConfig()
    detector = FaceDetector(
        onnx_path,
        imgsz=recipe.eval_imgsz,
        conf_threshold=AP_SCORE_THRESHOLD,
        nms_iou=defaults.nms_iou,
        device="cpu",
        logger=LOG,
    )
    result = evaluate_detector(detector.detect_one, val_data, operating_threshold=defaults.conf_threshold, logger=LOG)
    report = result.report
    return {
        "ap50": report.ap50,
        "ap50_95": report.ap50_95,
        "ap50_by_size": report.ap50_by_size,
        "images": result.images,
        "seconds": round(result.seconds, 1),
    }


def save_checkpoint(path: Path, model, ema: ModelEMA, optimizer, state: State, recipe: Recipe, rng_state: dict) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "ema": ema.ema.state_dict(),
            "ema_updates": ema.updates,
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "state": asdict(state),
            "recipe": asdict(recipe),
            "rng": rng_state,
        },
        tmp,
    )
    tmp.replace(path)


def build(recipe: Recipe, init: Path, resume: dict | None):
    """(model, ema, optimizer, state) from the source ONNX or a resumed checkpoint."""
    import torch

    from pipelines.detector.yolov5face_net import YoloV5FaceNano, source_model

    model = source_model(init) if resume is None else YoloV5FaceNano()
    if resume is not None:
        model.load_state_dict(resume["model"])
    model.train()
    groups = param_groups(model, recipe)
    optimizer = torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.999))
    ema = ModelEMA(model, recipe.ema_decay)
    state = State()
    if resume is not None:
        ema.ema.load_state_dict(resume["ema"])
        ema.updates = int(resume["ema_updates"])
        optimizer.load_state_dict(resume["optimizer"])
        state = State(**resume["state"])
    return model, ema, optimizer, state


def train_step(model, loss_fn, optimizer, images, targets, recipe: Recipe, source=None) -> dict[str, float]:
    import torch

    soft_obj = None
    if source is not None:
        with torch.no_grad():
            soft_obj = [out[..., 4].sigmoid() * recipe.distill for out in source(images)]
    if recipe.route == "head":
        with torch.no_grad():
            features = model.backbone_and_neck(images)
        outputs = model.model[21](features)
    else:
        outputs = model(images)
    loss, parts = loss_fn(outputs, targets, soft_obj)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_norm=10.0)
    optimizer.step()
    return {"loss": float(loss.detach()), **parts, "faces": int(len(targets))}


def run(recipe: Recipe, data_yaml: Path, val_data: Path | None, out: Path, init: Path, resume: bool) -> State:
    """Train (or continue) a run in ``out``; returns the final state."""
    import torch

    from pipelines.detector.v5data import Augment, TrainImages
    from pipelines.detector.v5loss import YoloFaceLoss

    out.mkdir(parents=True, exist_ok=True)
    checkpoint = torch.load(out / "last.pt", weights_only=False) if resume else None
    (out / "recipe.json").write_text(
        json.dumps({**asdict(recipe), "data": str(data_yaml), "val_data": str(val_data), "init": str(init)}, indent=1)
    )
    torch.manual_seed(recipe.seed)
    model, ema, optimizer, state = build(recipe, init, checkpoint)
    files = training_files(data_yaml)
    images = TrainImages(
        files,
        Augment(imgsz=recipe.imgsz, canvas=recipe.canvas, scale=recipe.scale, mosaic=recipe.mosaic),
        seed=recipe.seed + state.step,
    )
    order = np.random.default_rng(recipe.seed).permutation(len(files) * (1 + recipe.steps * recipe.batch // len(files)))
    order = order % len(files)
    loss_fn = YoloFaceLoss()
    source = None
    if recipe.distill > 0:
        from pipelines.detector.yolov5face_net import source_model

        source = source_model(init)  # frozen, eval mode: the knowledge the labels must not erase
    LOG.info(
        "route %s: %d training images, %d trainable parameters, from step %d of %d",
        recipe.route,
        len(files),
        sum(p.numel() for g in optimizer.param_groups for p in g["params"]),
        state.step,
        recipe.steps,
    )
    started, session_start, running = time.monotonic(), state.seconds, []
    with (out / "history.jsonl").open("a") as history:
        while state.step < recipe.steps:
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * group["lr_mult"] * lr_factor(state.step, recipe)
            batch_images, targets = images.batch(
                order[state.step * recipe.batch : (state.step + 1) * recipe.batch].tolist()
            )
            running.append(train_step(model, loss_fn, optimizer, batch_images, targets, recipe, source))
            ema.update(model)
            state.step += 1
            state.seconds = session_start + time.monotonic() - started
            if state.step % 10 == 0:
                mean = {k: round(float(np.mean([r[k] for r in running])), 4) for k in running[0]}
                line = {"step": state.step, "lr": optimizer.param_groups[0]["lr"], "s": round(state.seconds), **mean}
                history.write(json.dumps(line) + "\n")
                history.flush()
                LOG.info("%s", line)
                running = []
            over_time = recipe.hours > 0 and time.monotonic() - started > recipe.hours * 3600
            due = state.step % recipe.eval_every == 0 or state.step == recipe.steps or over_time
            if val_data is not None and due and _evaluate(ema, recipe, val_data, out, state, history):
                LOG.info(
                    "early stop at step %d: no gain in %d evaluations (best AP50 %.4f at step %d)",
                    state.step,
                    recipe.patience,
                    state.best_ap50,
                    state.best_step,
                )
                break
            if state.step % recipe.save_every == 0 or over_time:
                save_checkpoint(out / "last.pt", model, ema, optimizer, state, recipe, {})
            if over_time:
                LOG.info("time budget of %.2f h reached at step %d", recipe.hours, state.step)
                break
    save_checkpoint(out / "last.pt", model, ema, optimizer, state, recipe, {})
    if val_data is None:
        save_checkpoint(out / "best.pt", model, ema, None, state, recipe, {})
    return state


def _evaluate(ema: ModelEMA, recipe: Recipe, val_data: Path, out: Path, state: State, history) -> bool:
    """Score the EMA, keep it as ``best.pt`` when it gains; True when training should stop early."""
    scores = evaluate_ema(ema.ema, recipe, val_data, out)
    gained = scores["ap50"] > state.best_ap50
    if gained:
        state.best_ap50, state.best_step, state.evals_without_gain = float(scores["ap50"]), state.step, 0
    else:
        state.evals_without_gain += 1
    record = {"step": state.step, "eval": scores, "best": gained, "s": round(state.seconds)}
    state.history.append(record)
    history.write(json.dumps(record) + "\n")
    history.flush()
    LOG.info(
        "step %d: val AP50 %.4f (best %.4f at step %d)", state.step, scores["ap50"], state.best_ap50, state.best_step
    )
    if gained:
        import torch

        torch.save({"ema": ema.ema.state_dict(), "state": asdict(state), "recipe": asdict(recipe)}, out / "best.pt")
    return state.evals_without_gain >= recipe.patience


def parse_blend(items: list[str]) -> list[tuple[Path, float]]:
    """``["run/best.pt", "other/best.pt:0.6"]`` -> [(path, 1.0), (path, 0.6)]."""
    parsed = []
    for item in items:
        path, sep, alpha = item.rpartition(":") if ":" in item else (item, "", "1")
        try:
            parsed.append((repo_path(path if sep else item), float(alpha)))
        except ValueError:
            raise VigilError(
                f"--export-from {item!r}: expected CHECKPOINT or CHECKPOINT:WEIGHT, e.g. run/best.pt:0.6"
            ) from None
    return parsed


def blend_with_source(parts: list[tuple[dict, float]], source_onnx: Path) -> dict:
    """``source + sum_i alpha_i * (fine-tune_i - source)``, tensor by tensor: weight-space ensembling of fine-tunes
    that started from the same source (WiSE-FT, Wortsman et al. 2022; task arithmetic, Ilharco et al. 2023). One
    fine-tune at alpha 1 is itself; a smaller alpha trades in-domain gains for what the source knew (WIDER crowds);
    a head-only fine-tune's change adds to a full one's."""
    from pipelines.detector.yolov5face_net import source_model

    source = source_model(source_onnx).state_dict()
    blended = {name: tensor.clone() for name, tensor in source.items()}
    for weights, alpha in parts:
        for name in blended:
            blended[name] += alpha * (weights[name] - source[name])
    return blended


def export_checkpoint(checkpoints: list[tuple[Path, float]], out: Path, source_onnx: Path | None = None) -> Path:
    """Write the checkpoints' EMA weights as the runtime's ONNX (:func:`yolov5face_net.export_onnx`): one checkpoint
    at weight 1 as it is, else blended with the source (:func:`blend_with_source`)."""
    import torch

    from pipelines.detector.yolov5face_net import YoloV5FaceNano, export_onnx

    saved = []
    for checkpoint, alpha in checkpoints:
        if not checkpoint.is_file():
            raise VigilError(f"{checkpoint}: checkpoint not found")
        saved.append((torch.load(checkpoint, weights_only=False), alpha))
    if len(saved) == 1 and saved[0][1] == 1.0:
        weights = saved[0][0]["ema"]
    else:
        weights = blend_with_source(
            [(ckpt["ema"], alpha) for ckpt, alpha in saved], source_onnx or data_path(SOURCE_ONNX)
        )
    model = YoloV5FaceNano()
    model.load_state_dict(weights)
    meta = {
        "vigil.source": "yolov5n-0.5.onnx (deepcam-cn/yolov5-face, GPL-3.0), fine-tuned by pipelines.detector.finetune",
        "vigil.fine_tunes": json.dumps(
            [
                {
                    "checkpoint": str(path),
                    "weight": alpha,
                    "step": ckpt.get("state", {}).get("step"),
                    "recipe": ckpt.get("recipe", {}),
                }
                for (path, alpha), (ckpt, _) in zip(checkpoints, saved)
            ]
        ),
    }
    return export_onnx(model.eval(), out, metadata=meta)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--route", choices=sorted(ROUTES), default="full")
    p.add_argument("--data", type=Path, help="Ultralytics-style data YAML whose 'train' split is trained on")
    p.add_argument(
        "--val-data", type=Path, help="data YAML whose 'val' split picks best.pt and stops early (never WIDER-200)"
    )
    p.add_argument("--out", type=Path, help="run folder (checkpoints, history.jsonl)")
    p.add_argument("--init", type=Path, default=None, help=f"source ONNX (default: the shared {SOURCE_ONNX})")
    p.add_argument("--resume", type=Path, help="continue the run in this folder from its last.pt")
    p.add_argument(
        "--export-from",
        nargs="+",
        metavar="CKPT[:WEIGHT]",
        help="write this checkpoint's EMA weights as ONNX to --out and exit; several (or a weight): source + "
        "sum of WEIGHT x (fine-tune - source)",
    )
    for name, kind in (
        ("lr", float),
        ("backbone-lr-mult", float),
        ("weight-decay", float),
        ("warmup-steps", int),
        ("steps", int),
        ("batch", int),
        ("imgsz", int),
        ("canvas", int),
        ("mosaic", float),
        ("seed", int),
        ("eval-imgsz", int),
        ("eval-every", int),
        ("patience", int),
        ("save-every", int),
        ("hours", float),
        ("distill", float),
    ):
        p.add_argument(f"--{name}", type=kind, default=None)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared 2-core machine more threads spin and run 10x slower)",
    )
    p.add_argument("--scale", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.set_num_threads(max(1, args.threads))
    if args.export_from:
        if args.out is None:
            raise VigilError("--export-from needs --out FILE.onnx")
        source = repo_path(args.init) if args.init else None
        print(f"wrote {export_checkpoint(parse_blend(args.export_from), repo_path(args.out), source_onnx=source)}")
        return 0
    out = repo_path(args.resume or args.out or "")
    if args.resume is None and (args.data is None or args.out is None):
        raise VigilError("training needs --data and --out (or --resume RUN)")
    overrides = {
        k: getattr(args, k)
        for k in (
            "lr",
            "backbone_lr_mult",
            "weight_decay",
            "warmup_steps",
            "steps",
            "batch",
            "imgsz",
            "canvas",
            "mosaic",
            "seed",
            "eval_imgsz",
            "eval_every",
            "patience",
            "save_every",
            "hours",
            "distill",
        )
    }
    overrides["scale"] = tuple(args.scale) if args.scale else None
    recipe = ROUTES[args.route].with_overrides(**overrides)
    if args.resume:
        saved = json.loads((out / "recipe.json").read_text())
        data, val, init = (
            Path(saved["data"]),
            None if saved["val_data"] == "None" else Path(saved["val_data"]),
            Path(saved["init"]),
        )
        kept = {k: v for k, v in saved.items() if k in Recipe.__dataclass_fields__}
        recipe = Recipe(**{**kept, "scale": tuple(kept["scale"])}).with_overrides(steps=args.steps, hours=args.hours)
    else:
        data, val, init = (
            repo_path(args.data),
            repo_path(args.val_data) if args.val_data else None,
            repo_path(args.init or data_path(SOURCE_ONNX)),
        )
    state = run(recipe, data, val, out, init, resume=args.resume is not None)
    print(
        json.dumps(
            {
                "step": state.step,
                "best_ap50": state.best_ap50,
                "best_step": state.best_step,
                "hours": round(state.seconds / 3600, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
