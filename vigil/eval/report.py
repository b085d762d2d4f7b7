"""Evaluation reports: the JSON file and a ROC plot (PNG, same stem) next to it; matplotlib's Agg backend, no
display."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vigil.errors import VigilError
from vigil.eval.verification import RocCurve


def png_path_for(json_path: Path) -> Path:
    """``report.json`` -> ``report.png`` (same folder, same stem)."""
    return Path(json_path).with_suffix(".png")


def write_report(
    json_path: Path, report: dict, roc: RocCurve | None, title: str, mark_far: float | None = 1e-3
) -> Path | None:
    """Write ``report`` as JSON to ``json_path`` and, when ``roc`` is given, the ROC plot beside it.

    Returns the PNG path (None without a ROC). The report gets a ``roc_png`` key naming it.
    """
    json_path = Path(json_path)
    png = png_path_for(json_path) if roc is not None else None
    report = dict(report, roc_png=str(png) if png else None)
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, default=_json_default) + "\n", encoding="utf-8")
        if roc is not None and png is not None:
            plot_roc(png, roc, title, mark_far)
    except OSError as exc:
        raise VigilError(f"{json_path}: cannot write the report ({exc.strerror or exc.__class__.__name__})") from None
    return png


def plot_roc(png_path: Path, roc: RocCurve, title: str, mark_far: float | None = 1e-3) -> None:
    """Two panels: TAR vs FAR on a log FAR axis (the low-FAR region that matters for a watchlist) and linear."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.2), dpi=100)
    log_ax, lin_ax = figure.subplots(1, 2)
    positive = roc.far > 0
    floor = float(roc.far[positive].min()) / 2 if positive.any() else 1e-4
    log_ax.step(np.maximum(roc.far, floor), roc.tar, where="post", color="tab:blue")
    log_ax.set_xscale("log")
    log_ax.set_xlim(floor, 1.0)
    log_ax.set_xlabel("false accept rate (log)")
    lin_ax.plot(roc.far, roc.tar, color="tab:blue", label=f"AUC {roc.auc:.4f}")
    lin_ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    lin_ax.set_xlabel("false accept rate")
    lin_ax.legend(loc="lower right")
    if mark_far is not None and positive.any():
        tar = _tar_at(roc, mark_far)
        log_ax.axvline(mark_far, color="tab:red", linestyle=":", linewidth=1)
        log_ax.plot([mark_far], [tar], "o", color="tab:red", label=f"TAR {tar:.4f} at FAR {mark_far:g}")
        log_ax.legend(loc="lower right")
    for ax in (log_ax, lin_ax):
        ax.set_ylabel("true accept rate")
        ax.set_ylim(0.0, 1.01)
        ax.grid(True, which="both", alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(str(png_path))


def _tar_at(roc: RocCurve, far: float) -> float:
    """Highest TAR among ROC points with FAR <= ``far`` (the step curve's value there)."""
    allowed = roc.far <= far + 1e-12
    return float(roc.tar[allowed].max()) if allowed.any() else 0.0


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
