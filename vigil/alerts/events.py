"""Event records from rules decisions: unique ids, UTC timestamps, and one readable line per event.

The records themselves (:class:`vigil.types.Alert`, :class:`vigil.types.UnknownEvent`) live in :mod:`vigil.types`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from vigil.types import Alert, Decision, DecisionKind, Event, UnknownEvent


def new_event_id() -> str:
    """A unique event id (uuid4 hex), stable across retries because it is stored with the event."""
    return uuid.uuid4().hex


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: ``2026-11-23T09:11:37.123Z`` (now when ``moment`` is None)."""
    moment = datetime.now(UTC) if moment is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_from_decision(
    decision: Decision,
    *,
    bbox: Sequence[float] | np.ndarray,
    frame_index: int,
    video_ts_s: float,
    snapshot: str | None,
    snapshot_frame_index: int | None = None,
    event_id: str | None = None,
    ts: str | None = None,
) -> Event:
    """Turn a rules :class:`~vigil.types.Decision` into the event record the sinks take; ``snapshot_frame_index`` is
    the frame the snapshot was cut from (the track's best face, often an earlier frame than ``frame_index``)."""
    event_id = event_id or new_event_id()
    ts = ts or utc_timestamp()
    x1, y1, x2, y2 = (float(v) for v in bbox[:4])
    box = (x1, y1, x2, y2)
    if decision.kind is DecisionKind.UNKNOWN or decision.person is None or decision.stage is None:
        return UnknownEvent(
            event_id,
            decision.camera,
            decision.track_id,
            decision.score,
            ts,
            video_ts_s,
            frame_index,
            box,
            snapshot,
            snapshot_frame_index,
        )
    person = decision.person
    return Alert(
        id=event_id,
        stage=decision.stage,
        person_id=person.id,
        person_name=person.name,
        list=person.list,
        camera=decision.camera,
        track_id=decision.track_id,
        score=decision.score,
        margin=decision.margin,
        ts=ts,
        video_ts_s=video_ts_s,
        frame_index=frame_index,
        bbox=box,
        snapshot=snapshot,
        label=decision.label,
        snapshot_frame_index=snapshot_frame_index,
    )


def describe(event: Event) -> str:
    """One readable line for logs and the console."""
    where = f"camera={event.camera} track={event.track_id} frame={event.frame_index} t={event.video_ts_s:.2f}s"
    if isinstance(event, UnknownEvent):
        return f"UNKNOWN face {where} best_score={event.score:.3f} id={event.id}"
    return (
        f"ALERT {event.stage.value} [{event.label or event.list.value}] {event.person_id} ({event.person_name}) "
        f"{where} score={event.score:.3f} margin={event.margin:.3f} id={event.id}"
    )
