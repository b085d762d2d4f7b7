"""Make Ultralytics run with no network access: no fonts, weights, hub, AMP-check weights or telemetry.

Call ``configure_offline()`` before building any ``YOLO`` object. It

* sets ``YOLO_OFFLINE=1`` (Ultralytics' own switch: ``is_online()`` is False, no update checks) and,
  unless already set, ``YOLO_CONFIG_DIR`` to a private folder so the user's settings file is untouched;
* turns settings ``sync`` (telemetry) off;
* replaces the dataset check's font download with a no-op (labels are never drawn: ``plots=False``);
* replaces the AMP check (which downloads yolo26n.pt) with a decision that needs no download: AMP on
  CUDA, off on CPU/MPS;
* reads results.csv with the csv module instead of polars (polars is a 50 MB wheel we do not carry);
* makes any remaining download attempt fail at once with one clear line instead of hanging.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path


class OfflineDownloadError(RuntimeError):
    """Ultralytics tried to download something while offline."""


def configure_offline(config_dir: Path | None = None) -> None:
    """Patch Ultralytics (imported here) for offline use; idempotent."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "True")
    if config_dir is not None:
        Path(config_dir).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as trainer_mod
    import ultralytics.utils.checks as checks
    import ultralytics.utils.downloads as downloads
    from ultralytics.utils import SETTINGS

    if SETTINGS.get("sync", False):
        SETTINGS.update({"sync": False})
    data_utils.check_font = _no_font
    checks.check_font = _no_font
    trainer_mod.check_amp = _amp_without_download
    checks.check_amp = _amp_without_download
    trainer_mod.BaseTrainer.read_results_csv = _read_results_csv
    downloads.safe_download = _refuse_download
    _patch_attempt_download(downloads)


def _no_font(font: str = "Arial.ttf"):
    """Offline: never download a font (plots are off)."""
    return None


def _amp_without_download(model) -> bool:
    """AMP on CUDA devices, off elsewhere (Ultralytics' own check downloads a model to compare)."""
    device = next(model.parameters()).device
    return device.type == "cuda"


def _read_results_csv(self) -> dict:
    """results.csv -> {column: [values]} without polars (numbers as floats where they parse)."""
    try:
        with open(self.csv, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return {}
    out: dict[str, list] = {}
    for row in rows:
        for key, value in row.items():
            out.setdefault(key.strip(), []).append(_to_number(value))
    return out


def _to_number(value: str):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _refuse_download(url="", file=None, *args, **kwargs):
    raise OfflineDownloadError(f"offline: refusing to download {url or file} (vigil trains with no network access)")


def _patch_attempt_download(downloads) -> None:
    """attempt_download_asset: return local files as they are, refuse anything that would be fetched."""
    original = downloads.attempt_download_asset

    def attempt_download_asset(file, *args, **kwargs):
        if Path(str(file)).exists():
            return str(file)
        raise OfflineDownloadError(f"offline: {file} is not a local file and will not be downloaded")

    attempt_download_asset.__wrapped__ = original
    downloads.attempt_download_asset = attempt_download_asset
    import ultralytics.nn.tasks as tasks

    if hasattr(tasks, "attempt_download_asset"):
        tasks.attempt_download_asset = attempt_download_asset
