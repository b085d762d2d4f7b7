"""The shipped models: ``models/manifest.yaml``, checksums verified at load, default model per kind.

Manifest shape (one entry per shipped file)::

    defaults: {detector: <name>, recognizer: <name>, landmarks: <name>}
    models:
      <name>:
        kind: detector | recognizer | landmarks
        file: detector/<file>          # relative to models/
        sha256: <hex>
        input_size: [W, H]
        format: ultralytics | onnx | ensemble
        # recognizer only
        colour_order: BGR              # what the model's input takes (the graph converts if it needs RGB)
        input_dtype: uint8
        normalisation: "..."           # prose: what the graph does to pixels
        embedding_size: 128
        alignment_template: [[x, y] x 5]   # chip pixels, vigil 5-point order
        # detector only
        keypoints: [eye_left, eye_right, nose, mouth_left, mouth_right]
        # landmarks (the refiner, vigil/refine.py) only
        crop_context: 1.4              # crop side / the detector box's longer side
        mirror_average: true
        card: detector/<name>.md
        licence: <SPDX id>             # the model's own licence (vigil is AGPL-3.0-only)
        licence_note: "..."           # where it comes from, and the terms of its training data
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from vigil.errors import ModelError
from vigil.paths import models_dir

ModelKind = Literal["detector", "recognizer", "landmarks"]
MANIFEST_NAME = "manifest.yaml"
# how a model's input is cut, which a user file of the same kind must share (a landmark model's crop); calibrated
# thresholds are never borrowed
GEOMETRY_KEYS = ("crop_context", "mirror_average")
_CHUNK_BYTES = 1 << 20
WEIGHT_SUM_TOLERANCE = 1e-6  # an ensemble's member weights must sum to 1 within this


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: ModelKind
    path: Path
    sha256: str | None  # None for a user-supplied model that is not in the manifest
    input_size: tuple[int, int]
    format: str
    embedding_size: int | None = None
    alignment_template: np.ndarray | None = None  # (5, 2) float32, chip pixels
    colour_order: str = "BGR"
    extra: dict = field(default_factory=dict)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(spec: ModelSpec) -> None:
    """Raise ModelError (one line naming the file) when the file is missing or its sha256 differs."""
    if not spec.path.is_file():
        raise ModelError(f"{spec.path}: model file not found")
    if spec.sha256 is None:
        return
    actual = sha256_of(spec.path)
    if actual != spec.sha256:
        raise ModelError(
            f"{spec.path}: checksum mismatch (manifest sha256 {spec.sha256[:12]}..., file {actual[:12]}...); "
            "the file is corrupt or was replaced"
        )


class ModelRegistry:
    """Reads ``models/manifest.yaml`` and hands out verified model specs."""

    def __init__(self, root: Path | None = None, logger: logging.Logger | None = None) -> None:
        self.root = root or models_dir()
        self.log = logger or logging.getLogger("vigil.models")
        self.manifest_path = self.root / MANIFEST_NAME
        self._specs, self._defaults = self._read_manifest()

    def _read_manifest(self) -> tuple[dict[str, ModelSpec], dict[str, str]]:
        if not self.manifest_path.is_file():
            raise ModelError(f"{self.manifest_path}: model manifest not found")
        try:
            raw = yaml.safe_load(self.manifest_path.read_text(encoding="utf-8")) or {}
            specs = {name: self._spec_from_entry(name, entry) for name, entry in (raw.get("models") or {}).items()}
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{self.manifest_path}: invalid manifest ({exc})") from None
        return specs, dict(raw.get("defaults") or {})

    def _spec_from_entry(self, name: str, entry: dict) -> ModelSpec:
        template = entry.get("alignment_template")
        known = {
            "kind",
            "file",
            "sha256",
            "input_size",
            "format",
            "embedding_size",
            "alignment_template",
            "colour_order",
        }
        return ModelSpec(
            name=name,
            kind=entry["kind"],
            path=self.root / entry["file"],
            sha256=str(entry["sha256"]),
            input_size=(int(entry["input_size"][0]), int(entry["input_size"][1])),
            format=str(entry["format"]),
            embedding_size=entry.get("embedding_size"),
            alignment_template=None if template is None else np.asarray(template, dtype=np.float32).reshape(5, 2),
            colour_order=str(entry.get("colour_order", "BGR")),
            extra={k: v for k, v in entry.items() if k not in known},
        )

    @property
    def specs(self) -> dict[str, ModelSpec]:
        return dict(self._specs)

    def default(self, kind: ModelKind) -> ModelSpec:
        name = self._defaults.get(kind)
        if name is None or name not in self._specs:
            raise ModelError(f"{self.manifest_path}: no default {kind} model listed")
        return self._specs[name]

    def resolve(self, kind: ModelKind, path: Path | None) -> ModelSpec:
        """The spec for ``path`` (the default model when None), checksum verified when the manifest lists it.

        A user file not in the manifest is accepted without a checksum; a recognizer not in the manifest borrows
        the default recognizer's alignment template and input size (logged).
        """
        if path is None:
            spec = self.default(kind)
        else:
            spec = self._lookup_by_path(Path(path)) or self._user_spec(kind, Path(path))
        verify_checksum(spec)
        return spec

    def named(self, name: str, kind: ModelKind, where: str = "") -> ModelSpec:
        """The manifest entry ``name`` (of ``kind``), checksum verified; ModelError naming ``where`` otherwise."""
        spec = self._specs.get(name)
        if spec is None or spec.kind != kind:
            raise ModelError(f"{where or self.manifest_path}: no {kind} named {name!r} in {self.manifest_path}")
        verify_checksum(spec)
        return spec

    def _lookup_by_path(self, path: Path) -> ModelSpec | None:
        resolved = path.resolve()
        for spec in self._specs.values():
            if spec.path.resolve() == resolved:
                return spec
        return None

    def _user_spec(self, kind: ModelKind, path: Path) -> ModelSpec:
        base = self.default(kind)
        if base.format == "ensemble":  # a single user ONNX borrows the settings of the ensemble's first member
            base = self.named(read_members(base.path)[0].model, kind, where=str(base.path))
        self.log.warning(
            "%s: not in %s, no checksum to verify; using %s's settings", path, self.manifest_path, base.name
        )
        fmt = "onnx" if path.suffix.lower() == ".onnx" else base.format
        return ModelSpec(
            name=path.stem,
            kind=kind,
            path=path,
            sha256=None,
            input_size=base.input_size,
            format=fmt,
            embedding_size=base.embedding_size,
            alignment_template=base.alignment_template,
            colour_order=base.colour_order,
            extra={key: base.extra[key] for key in GEOMETRY_KEYS if key in base.extra},
        )


# --- ensemble member lists: the ``members`` of a ``format: ensemble`` file (the format: vigil/ensemble.py) ---


@dataclass(frozen=True)
class MemberSpec:
    """One line of the ensemble file: a manifest recognizer and its fusion weight."""

    model: str
    weight: float
    sha256: str


def read_members(path: Path) -> list[MemberSpec]:
    """The ``members`` of an ensemble file; ModelError (one line naming the file and field) when invalid."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: cannot read ensemble file ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or set(raw) != {"members"} or not isinstance(raw["members"], list):
        raise ModelError(
            f"{path}: expected exactly one key 'members' (a list), "
            f"got {sorted(raw) if isinstance(raw, dict) else type(raw).__name__}"
        )
    members = [_member(path, i, entry) for i, entry in enumerate(raw["members"])]
    if len(members) < 2:
        raise ModelError(f"{path}: members: an ensemble needs at least 2 models, got {len(members)}")
    if len({m.model for m in members}) != len(members):
        raise ModelError(f"{path}: members: a model is listed twice")
    total = sum(m.weight for m in members)
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ModelError(f"{path}: members: weights must sum to 1, got {total:g}")
    return members


def _member(path: Path, index: int, entry) -> MemberSpec:
    where = f"{path}: members[{index}]"
    if not isinstance(entry, dict) or set(entry) != {"model", "weight", "sha256"}:
        raise ModelError(f"{where}: expected keys model, weight and sha256, got {entry!r}")
    weight = entry["weight"]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 < float(weight) <= 1.0:
        raise ModelError(f"{where}.weight: must be a number in (0, 1], got {weight!r}")
    return MemberSpec(model=str(entry["model"]), weight=float(weight), sha256=str(entry["sha256"]))


def calibrated_match_threshold(spec: ModelSpec, flip_average: bool) -> float | None:
    """The recognizer's calibrated cosine threshold for the embedding mode (None when the manifest has none).

    Manifest keys: ``match_threshold`` (one embedding per chip) and ``match_threshold_flip_average`` (chip and
    mirror averaged, vigil.embed.OnnxEmbedder's ``flip_average``).
    """
    value = spec.extra.get("match_threshold_flip_average" if flip_average else "match_threshold")
    return None if value is None else float(value)


def calibrated_cascade_reject(spec: ModelSpec, flip_average: bool) -> float | None:
    """An ensemble's calibrated cascade reject cosine for its fast member (vigil/cascade.py; None when the manifest
    has none). Manifest keys: ``cascade_reject_cosine`` and ``cascade_reject_cosine_flip_average``."""
    value = spec.extra.get("cascade_reject_cosine_flip_average" if flip_average else "cascade_reject_cosine")
    return None if value is None else float(value)
