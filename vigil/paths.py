"""Where things live: the repo's models folder and the shared data folder (overridable)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "VIGIL_DATA_DIR"


def repo_root() -> Path:
    """The folder that holds the vigil package (the repo root in a checkout)."""
    return Path(__file__).resolve().parent.parent


def repo_path(path: str | Path) -> Path:
    """``path`` as given when absolute, else relative to the repo root (pipelines' defaults such as ``work/...``)."""
    path = Path(path)
    return path if path.is_absolute() else repo_root() / path


def models_dir() -> Path:
    """The shipped models folder (``models/`` beside the package)."""
    return repo_root() / "models"


def data_dir() -> Path:
    """The shared data folder: ``$VIGIL_DATA_DIR`` if set, else ``<repo>/../shared/data``."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return (repo_root().parent / "shared" / "data").resolve()


def data_path(*parts: str) -> Path:
    """A path under the shared data folder (it may not exist: check with ``missing_data_reason``)."""
    return data_dir().joinpath(*parts)


def missing_data_reason(*parts: str) -> str | None:
    """None when ``data_dir()/parts`` exists, else a sentence saying what is missing and how to point to it."""
    path = data_path(*parts)
    if path.exists():
        return None
    return f"shared data not found: {path} (set {DATA_DIR_ENV} to the folder holding lfw/, celeba299/, video/ ...)"
