"""Ultralytics without the network: no downloads, no pip installs, no telemetry, no font fetch, no AMP-check weights.

:func:`configure_ultralytics_offline` runs before any Ultralytics model is built (:class:`vigil.detect.FaceDetector`
calls it; ``pipelines/detector`` calls it through its training-only additions in
``pipelines.detector.ultralytics_offline``). Idempotent. It

* sets ``YOLO_OFFLINE=1`` (``is_online()`` is False, so no asset download or update check is attempted) and
  ``YOLO_AUTOINSTALL=false`` (no ``pip install`` of missing export/runtime packages), and resets the flags Ultralytics
  computed at its import in case it was imported earlier;
* turns the ``sync`` setting (analytics, crash reports) off;
* replaces the font check with a font that ships with matplotlib, so plotting never fetches Arial.ttf;
* replaces the AMP check (it downloads a reference model) with "AMP on where CUDA is used";
* makes any remaining download attempt fail at once with one clear line instead of hanging: a local file is returned
  as it is, anything else raises :class:`OfflineDownloadError`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from vigil.errors import ModelError


class OfflineDownloadError(RuntimeError):
    """Ultralytics tried to download something while offline."""


def configure_ultralytics_offline() -> None:
    """Make Ultralytics work without network access (see the module docstring)."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    import ultralytics.utils as yolo_utils
    from ultralytics.utils import SETTINGS, checks, events

    # in case ultralytics was imported before this call: the flags below were computed at its import
    yolo_utils.ONLINE = checks.ONLINE = events.ONLINE = False
    checks.AUTOINSTALL = False
    events.events.enabled = False
    if SETTINGS.get("sync", True):
        SETTINGS.update(sync=False)
    _patch_font_check()
    _patch_amp_check()
    _refuse_downloads()


def _local_font() -> str | None:
    """A TrueType font that ships with matplotlib (DejaVuSans), or None when matplotlib is absent."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return None
    font = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return str(font) if font.is_file() else None


def _patch_font_check() -> None:
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.checks as checks
    import ultralytics.utils.plotting as plotting

    local = _local_font()

    def offline_font(font: str = "Arial.ttf") -> Path | str:
        candidate = Path(font)
        if candidate.is_file():
            return candidate
        if local is None:
            raise ModelError(f"{font}: font not found locally and downloads are disabled (install matplotlib)")
        return Path(local)

    for module in (checks, plotting, data_utils):
        module.check_font = offline_font


def amp_without_download(model: Any) -> bool:
    """AMP on CUDA devices, off elsewhere (Ultralytics' own check downloads a model to compare)."""
    device = next(model.parameters()).device
    return bool(device.type == "cuda")


def _patch_amp_check() -> None:
    import ultralytics.engine.trainer as trainer
    import ultralytics.utils.checks as checks

    trainer.check_amp = amp_without_download
    checks.check_amp = amp_without_download


def _refuse_download(url: object = "", file: object = None, *args: object, **kwargs: object) -> None:
    raise OfflineDownloadError(f"offline: refusing to download {url or file} (vigil runs with no network access)")


def _refuse_downloads() -> None:
    """``safe_download`` refuses; ``attempt_download_asset`` returns local files as they are and refuses the rest."""
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils.downloads as downloads

    downloads.safe_download = _refuse_download
    if getattr(downloads.attempt_download_asset, "__wrapped__", None) is not None:
        return  # already patched

    def attempt_download_asset(file: object, *args: object, **kwargs: object) -> str:
        if Path(str(file)).exists():
            return str(file)
        raise OfflineDownloadError(f"offline: {file} is not a local file and will not be downloaded")

    attempt_download_asset.__wrapped__ = downloads.attempt_download_asset  # type: ignore[attr-defined]
    downloads.attempt_download_asset = attempt_download_asset
    if hasattr(tasks, "attempt_download_asset"):
        tasks.attempt_download_asset = attempt_download_asset
