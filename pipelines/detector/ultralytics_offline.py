"""Ultralytics offline for training: the runtime's patches (:mod:`vigil.ultralytics_offline`: no network, no
installs, no telemetry, no font or AMP-check downloads, any download refused with one clear line) plus what only
training needs.

Call ``configure_offline()`` before building any ``YOLO`` object. On top of the runtime's patches it

* sets ``YOLO_VERBOSE`` (training logs its progress) and, unless already set, ``YOLO_CONFIG_DIR`` to a private
  folder so the user's settings file is untouched (before Ultralytics is imported: it reads both at import);
* reads results.csv with the csv module instead of polars (polars is a 50 MB wheel we do not carry).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from vigil.ultralytics_offline import configure_ultralytics_offline


def configure_offline(config_dir: Path | None = None) -> None:
    """Patch Ultralytics (imported here) for offline training; idempotent."""
    os.environ.setdefault("YOLO_VERBOSE", "True")
    if config_dir is not None:
        Path(config_dir).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    configure_ultralytics_offline()
    import ultralytics.engine.trainer as trainer_mod

    trainer_mod.BaseTrainer.read_results_csv = _read_results_csv


def _read_results_csv(self: Any) -> dict:
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


def _to_number(value: str) -> float | str:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
