"""The recognition settings each camera runs with: its ``overrides`` over the global ones.

Four settings may differ per camera (``cameras[].overrides`` in the config): ``rules.match_threshold``,
``rules.margin``, ``detector.min_face_px`` and ``rules.unknown_events``. A camera's key left unset takes the global
value; the global match threshold is the recognizer's calibrated one when ``rules.match_threshold`` is unset
(:func:`vigil.runtime.effective_rules`). A person's own ``threshold`` in the watchlist still comes first: person,
then camera, then global.

:func:`camera_settings_table` computes the table once; the rules engine takes each camera's rules from it
(:meth:`CameraSettingsTable.rules_for`), the pipeline each camera's minimum face size and identity threshold, and
``vigil doctor`` prints it (:func:`format_camera_settings`). Frames of a camera the config does not list (``vigil
process`` names them after the file) get the global values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vigil.config import CameraConfig, RulesConfig

OVERRIDABLE = ("match_threshold", "margin", "min_face_px", "unknown_events")


@dataclass(frozen=True)
class CameraSettings:
    """The effective values for one camera; ``overridden`` names those that came from the camera's overrides."""

    match_threshold: float
    margin: float
    min_face_px: int
    unknown_events: bool
    overridden: frozenset[str] = frozenset()

    def rules(self, base: RulesConfig) -> RulesConfig:
        """``base`` (the resolved global rules) with this camera's threshold, margin and unknown-face setting."""
        return base.model_copy(
            update={
                "match_threshold": self.match_threshold,
                "margin": self.margin,
                "unknown_events": self.unknown_events,
            }
        )


@dataclass(frozen=True)
class CameraSettingsTable:
    """The global settings (``default``) and each configured camera's effective ones."""

    default: CameraSettings
    cameras: Mapping[str, CameraSettings] = field(default_factory=dict)

    def for_camera(self, camera: str) -> CameraSettings:
        return self.cameras.get(camera, self.default)

    def rules_for(self, base: RulesConfig) -> dict[str, RulesConfig]:
        """Each configured camera's rules: ``base`` with its effective settings."""
        return {name: settings.rules(base) for name, settings in self.cameras.items()}


def global_settings(rules: RulesConfig, min_face_px: int) -> CameraSettings:
    """The global values (``rules`` resolved: its match threshold set)."""
    if rules.match_threshold is None:
        raise ValueError("rules.match_threshold is unresolved: pass the rules through runtime.effective_rules first")
    return CameraSettings(rules.match_threshold, rules.margin, min_face_px, rules.unknown_events)


def camera_settings_table(cameras: Sequence[CameraConfig], rules: RulesConfig, min_face_px: int) -> CameraSettingsTable:
    """Every camera's effective settings: its overrides over the globals (``rules`` resolved, ``min_face_px`` the
    detector's)."""
    default = global_settings(rules, min_face_px)
    table = {}
    for camera in cameras:
        given = {key: getattr(camera.overrides, key) for key in OVERRIDABLE}
        given = {key: value for key, value in given.items() if value is not None}
        values = {key: given.get(key, getattr(default, key)) for key in OVERRIDABLE}
        table[camera.name] = CameraSettings(**values, overridden=frozenset(given))
    return CameraSettingsTable(default, table)


def format_camera_settings(table: CameraSettingsTable) -> list[str]:
    """The table as text lines for ``vigil doctor``: the globals, then one row per camera, ``*`` after a value that
    is the camera's own."""
    rows = [("(global)", table.default), *table.cameras.items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"  {'camera':<{width}}  " + "  ".join(f"{key:>15}" for key in OVERRIDABLE)]
    for name, settings in rows:
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{_cell(settings, key):>15}" for key in OVERRIDABLE))
    return lines


def _cell(settings: CameraSettings, key: str) -> str:
    value = getattr(settings, key)
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, float):
        text = f"{value:.4f}"
    else:
        text = str(value)
    return text + ("*" if key in settings.overridden else "")
