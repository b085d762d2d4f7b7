"""Server-Sent Events: new events and camera up/down changes as they happen.

``GET /api/v1/stream`` answers ``text/event-stream``: first one ``camera`` message per camera (the current state),
then ``event: alert`` / ``event: unknown`` (the event as ``GET /events/{id}`` shows it to this caller) and
``event: camera`` messages; ``event: dropped`` says how many messages this client missed because it read too slowly
(its queue holds ``server.sse_queue_size``; the pipeline never waits for a reader); a comment line every 15 s keeps
proxies from closing the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from vigil.server.auth import Principal, context_of, require
from vigil.server.roles import Permission
from vigil.server.views import current_watchlist, event_json, first_photo_ids

router = APIRouter(tags=["stream"])
KEEPALIVE_S = 15.0
WAKE_CHECK_S = 1.0  # how often a quiet stream checks whether the server is stopping


def sse(kind: str, payload: dict, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"


@router.get(
    "/stream", summary="Server-Sent Events: new events and camera status changes", response_class=StreamingResponse
)
async def stream(
    request: Request, principal: Annotated[Principal, Depends(require(Permission.STREAM))]
) -> StreamingResponse:
    ctx = context_of(request)
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def notify() -> None:  # called from the pipeline thread
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(wake.set)

    subscription = ctx.hub.feed.subscribe(ctx.server.sse_queue_size, notify)
    return StreamingResponse(
        _messages(request, principal, subscription, wake),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _messages(request: Request, principal: Principal, subscription, wake: asyncio.Event) -> AsyncIterator[str]:
    ctx = context_of(request)
    sequence = 0
    try:
        yield "retry: 2000\n\n"
        for status in ctx.hub.statuses():
            yield sse("camera", status.to_json())
        quiet_s = 0.0
        while not ctx.hub.closed.is_set():
            try:
                await asyncio.wait_for(wake.wait(), WAKE_CHECK_S)
            except TimeoutError:
                quiet_s += WAKE_CHECK_S
                if quiet_s >= KEEPALIVE_S:
                    quiet_s = 0.0
                    yield ": keep-alive\n\n"
                continue
            wake.clear()
            quiet_s = 0.0
            items, dropped = subscription.drain()
            if dropped:
                yield sse("dropped", {"messages": dropped})
            photos = (
                first_photo_ids(current_watchlist(ctx.watchlist)) if any(kind == "event" for kind, _ in items) else {}
            )
            for kind, payload in items:
                sequence += 1
                if kind == "event":
                    yield sse(payload["type"], event_json(payload, principal, photos), sequence)
                else:
                    yield sse("camera", payload.to_json(), sequence)
    finally:
        subscription.close()
