"""``/api/v1/health`` (no authentication, no biometric data) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from vigil.alerts.mqtt import OUTBOX_TABLE as MQTT_OUTBOX_TABLE
from vigil.server.auth import ApiError, check_principal, context_of
from vigil.server.roles import Permission

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])


@router.get("/health", summary="service health: cameras, sinks, outbox, models, watchlist (no login needed)")
def health(request: Request) -> dict:
    cache = request.app.state.answer_cache
    answer = cache.get(("health",))
    if answer is None:
        answer = health_json(context_of(request))
        cache.put(("health",), answer)
    return answer


def health_json(ctx) -> dict:
    cameras = [status.to_json() for status in ctx.hub.statuses()]
    state = ctx.hub.watchlist
    degraded = [f"camera {c['name']} {'down' if c['state'] == 'DOWN' else c['state']}" for c in cameras if not c["up"]]
    if state.error:
        degraded.append("watchlist reload failed")
    outbox = ctx.events.outbox_counts()
    outboxes = ctx.events.outbox_counts_by_table()  # every outbox-delivered sink (webhook, MQTT, ...)
    degraded += [f"{rows['dead']} {table} deliveries given up (vigil outbox retry)" for table, rows in outboxes.items()
                 if rows["dead"]]  # fmt: skip
    mqtt_outbox = ctx.events.outbox_counts(MQTT_OUTBOX_TABLE)
    return {
        "status": "degraded" if degraded else "ok",
        "problems": degraded,
        "version": ctx.info.version,
        "uptime_s": round(time.monotonic() - ctx.hub.started_mono_s, 1),
        "cameras": cameras,
        "sinks": list(ctx.info.sinks),
        "outbox": outbox,
        "mqtt_outbox": mqtt_outbox,
        "outboxes": outboxes,
        "models": list(ctx.info.models),
        "watchlist": {"people_enrolled": state.people, "loaded_at": state.loaded_at, "error": state.error or None},
    }


@metrics_router.get(
    "/metrics", summary="Prometheus metrics (token or session unless server.metrics_public)", response_class=Response
)
def metrics(request: Request) -> Response:
    ctx = context_of(request)
    if not ctx.server.metrics_public:
        principal = check_principal(request)
        if principal.via == "anonymous":
            raise ApiError(
                401,
                "authentication required (send Authorization: Bearer TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not principal.can(Permission.METRICS_READ):
            raise ApiError(403, "may not read metrics")
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
