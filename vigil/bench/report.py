"""Saving benchmark reports: every `vigil bench` command prints and saves one JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from vigil.errors import VigilError


def save_report(report: dict, path: Path | str) -> Path:
    """Write ``report`` as indented JSON to ``path`` (folders created); VigilError naming the file on failure."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise VigilError(f"{out}: cannot write the report ({exc.strerror or exc.__class__.__name__})") from None
    print(f"saved {out}")
    return out
