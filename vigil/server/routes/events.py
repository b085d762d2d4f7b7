"""Events: list with filters and cursor, detail, snapshot (audited), acknowledge, false-match mark."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from vigil.alerts import utc_timestamp
from vigil.alerts.snapshots import SNAPSHOT_DIRNAME
from vigil.config import CAMERA_NAME_PATTERN
from vigil.server.auth import ApiError, Principal, context_of, require
from vigil.server.roles import Permission
from vigil.server.views import current_watchlist, event_json, event_row_json, first_photo_ids, may_see_snapshot
from vigil.store.audit import Outcome
from vigil.store.events import EVENT_ID_PATTERN, MAX_NOTE_CHARS, MAX_PAGE, EventFilter, StoredEvent
from vigil.watchlist import PERSON_ID_PATTERN

router = APIRouter(tags=["events"])
EventId = Annotated[str, PathParam(pattern=EVENT_ID_PATTERN, description="32 hex digits")]
SnapshotView = Annotated[
    Literal["thumbnail", "full"],
    Query(description="where the page shows it (row thumbnail or full view); recorded in the audit entry"),
]


class EventQuery(BaseModel):
    """The events list's query parameters (one model: validated in one pass; an unknown parameter is refused)."""

    model_config = ConfigDict(extra="forbid")
    camera: str | None = Field(None, pattern=CAMERA_NAME_PATTERN, max_length=100)
    person: str | None = Field(None, pattern=PERSON_ID_PATTERN, max_length=64, description="person id")
    type: Literal["alert", "unknown"] | None = None
    stage: Literal["provisional", "confirmed"] | None = None
    since: datetime | None = Field(None, description="ISO-8601 with zone, inclusive")
    until: datetime | None = Field(None, description="ISO-8601 with zone, exclusive")
    cursor: str | None = Field(None, max_length=100, description="the 'next' value of the previous page")
    limit: int = Field(50, ge=1, le=MAX_PAGE)


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=MAX_NOTE_CHARS)


def _utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ApiError(422, "since/until: give a time zone (e.g. 2026-01-31T08:00:00Z)", "request.invalid")
    return utc_timestamp(moment)


@router.get("/events", summary="events, newest first; filters and cursor pagination", response_class=JSONResponse)
async def list_events(
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.EVENTS_READ))],
    query: Annotated[EventQuery, Query()],
) -> Response:
    ctx = context_of(request)
    seen = frozenset(
        p for p in (Permission.SNAPSHOT_ANY, Permission.SNAPSHOT_WATCHLIST, Permission.PHOTOS_READ) if principal.can(p)
    )
    key = ("events", str(request.url.query), seen, ctx.hub.feed.published, ctx.events.version)
    body = request.app.state.answer_cache.get(key)
    if body is None:
        where = EventFilter(
            camera=query.camera,
            person_id=query.person,
            type=query.type,
            stage=query.stage,
            since=_utc(query.since),
            until=_utc(query.until),
        )
        page = ctx.events.page_rows(where, query.cursor, query.limit)
        photos = first_photo_ids(current_watchlist(ctx.watchlist))
        items = ",".join(event_row_json(row, principal, photos) for row in page.items)
        # the stored JSON text is passed on as it is: no parse and re-encode of 50 records per page
        body = f'{{"items":[{items}],"next":{json.dumps(page.next)}}}'.encode()
        request.app.state.answer_cache.put(key, body)
    return Response(body, media_type="application/json")


def _event(request: Request, event_id: str) -> StoredEvent:
    event = context_of(request).events.get(event_id)
    if event is None:
        raise ApiError(404, f"event {event_id} does not exist")
    return event


@router.get("/events/{event_id}", summary="one event")
def get_event(
    event_id: EventId, request: Request, principal: Annotated[Principal, Depends(require(Permission.EVENTS_READ))]
) -> dict:
    event = _event(request, event_id)
    return event_json(event.record, principal, first_photo_ids(current_watchlist(context_of(request).watchlist)), event)


@router.get(
    "/events/{event_id}/snapshot.jpg",
    summary="the event's face snapshot (JPEG); every read is audited",
    response_class=FileResponse,
)
def snapshot(
    event_id: EventId,
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.EVENTS_READ))],
    view: SnapshotView = "thumbnail",
) -> FileResponse:
    ctx = context_of(request)
    event = _event(request, event_id)
    if not may_see_snapshot(principal, event.type):
        raise ApiError(
            403,
            f"role {principal.role_name} may not see snapshots of faces that matched nobody",
            "snapshot.read",
            f"event:{event_id}",
            Outcome.DENIED,
        )
    root = (ctx.data_dir / SNAPSHOT_DIRNAME).resolve()
    path = Path(event.snapshot).resolve() if event.snapshot else None
    if path is None or not path.is_relative_to(root) or not path.is_file():
        raise ApiError(404, f"event {event_id} has no snapshot (none was saved, or retention deleted it)")
    ctx.audit.record(principal.actor, "snapshot.read", f"event:{event_id}", detail=f"view={view}")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@router.post("/events/{event_id}/ack", summary="acknowledge an event (who, when, note)")
def acknowledge(
    event_id: EventId,
    body: Note,
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.EVENTS_REVIEW))],
) -> dict:
    ctx = context_of(request)
    mark = ctx.events.acknowledge(event_id, principal.name, body.note)
    ctx.audit.record(principal.actor, "event.acknowledge", f"event:{event_id}", detail=body.note or None)
    return {"id": event_id, "acknowledged": mark.to_json()}


@router.post("/events/{event_id}/false-match", summary="mark an alert as not its person (kept for feedback)")
def false_match(
    event_id: EventId,
    body: Note,
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.EVENTS_REVIEW))],
) -> dict:
    ctx = context_of(request)
    mark = ctx.events.mark_false_match(event_id, principal.name, body.note)
    ctx.audit.record(principal.actor, "event.false_match", f"event:{event_id}", detail=body.note or None)
    return {"id": event_id, "false_match": mark.to_json()}


@router.delete("/events/{event_id}/false-match", summary="withdraw a false-match mark")
def clear_false_match(
    event_id: EventId, request: Request, principal: Annotated[Principal, Depends(require(Permission.EVENTS_REVIEW))]
) -> dict:
    ctx = context_of(request)
    ctx.events.clear_false_match(event_id)
    ctx.audit.record(principal.actor, "event.false_match_cleared", f"event:{event_id}")
    return {"id": event_id, "false_match": None}
