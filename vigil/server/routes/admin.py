"""Admin: users, API tokens, the audit log, the running system's settings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from vigil.alerts import utc_timestamp
from vigil.server.auth import ApiError, Principal, context_of, require
from vigil.server.roles import Permission
from vigil.store.audit import ACTION_PATTERN, AuditFilter, Outcome
from vigil.store.users import MAX_PASSWORD_CHARS, TOKEN_NAME_PATTERN, USERNAME_PATTERN, Role

router = APIRouter(tags=["admin"])
Username = Annotated[str, PathParam(pattern=USERNAME_PATTERN)]
ACTOR_PATTERN = r"^(anonymous|system|(user|token|cli):[A-Za-z0-9_.-]{1,64})$"
OBJECT_PATTERN = r"^[A-Za-z0-9_.:/ -]{1,200}$"


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=USERNAME_PATTERN)
    role: Role
    password: str = Field(max_length=MAX_PASSWORD_CHARS)


class UserChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    password: str | None = Field(default=None, max_length=MAX_PASSWORD_CHARS)
    disabled: bool | None = None


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    name: str = Field(default="", pattern=TOKEN_NAME_PATTERN)
    expires_days: float | None = Field(default=None, gt=0, le=3650)


@router.get("/users", summary="users")
def list_users(request: Request, _: Annotated[Principal, Depends(require(Permission.USERS_MANAGE))]) -> dict:
    return {"items": [user.to_json() for user in context_of(request).users.list()]}


@router.post("/users", status_code=201, summary="add a user")
def create_user(
    body: NewUser, request: Request, principal: Annotated[Principal, Depends(require(Permission.USERS_MANAGE))]
) -> dict:
    ctx = context_of(request)
    user = ctx.users.add(body.username, body.role, body.password)
    ctx.audit.record(principal.actor, "user.create", f"user:{user.username}", detail=f"role {user.role.value}")
    return user.to_json()


@router.patch("/users/{username}", summary="change a user's role, password or disabled state (ends their sessions)")
def update_user(
    username: Username,
    body: UserChanges,
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.USERS_MANAGE))],
) -> dict:
    ctx = context_of(request)
    ctx.users.require(username)
    if body.password is not None:
        ctx.users.set_password(username, body.password)
    user = ctx.users.update(username, body.role, body.disabled)
    changed = sorted(body.model_fields_set)
    ctx.audit.record(principal.actor, "user.update", f"user:{username}", detail=f"changed {', '.join(changed)}")
    return user.to_json()


@router.delete("/users/{username}", summary="delete a user (never the last admin)")
def delete_user(
    username: Username, request: Request, principal: Annotated[Principal, Depends(require(Permission.USERS_MANAGE))]
) -> dict:
    ctx = context_of(request)
    ctx.users.delete(username)
    ctx.audit.record(principal.actor, "user.delete", f"user:{username}")
    return {"username": username, "deleted": True}


@router.get("/tokens", summary="API tokens (never their secrets)")
def list_tokens(request: Request, _: Annotated[Principal, Depends(require(Permission.USERS_MANAGE))]) -> dict:
    return {"items": [token.to_json() for token in context_of(request).tokens.list()]}


@router.post("/tokens", status_code=201, summary="create a token: its secret is in this answer only")
def create_token(
    body: NewToken, request: Request, principal: Annotated[Principal, Depends(require(Permission.USERS_MANAGE))]
) -> dict:
    ctx = context_of(request)
    token, secret = ctx.tokens.create(body.role, body.name, principal.name, body.expires_days)
    ctx.audit.record(principal.actor, "token.create", f"token:{token.id}", detail=f"role {token.role.value}")
    return {**token.to_json(), "secret": secret}


@router.delete("/tokens/{token_id}", summary="revoke a token")
def revoke_token(
    token_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{8}$")],
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.USERS_MANAGE))],
) -> dict:
    ctx = context_of(request)
    token = ctx.tokens.revoke(token_id)
    ctx.audit.record(principal.actor, "token.revoke", f"token:{token_id}")
    return token.to_json()


@router.get("/audit", summary="the audit log, newest first; filters and cursor")
def audit_log(
    request: Request,
    _: Annotated[Principal, Depends(require(Permission.AUDIT_READ))],
    since: datetime | None = None,
    until: datetime | None = None,
    actor: Annotated[str | None, Query(pattern=ACTOR_PATTERN)] = None,
    action: Annotated[
        str | None,
        Query(
            pattern=ACTION_PATTERN.rstrip("$") + r"\.?$",
            max_length=64,
            description="exact, or a prefix ending in '.' (person.)",
        ),
    ] = None,
    object: Annotated[str | None, Query(pattern=OBJECT_PATTERN, description="e.g. event:<id>, person:<id>")] = None,
    outcome: Outcome | None = None,
    cursor: Annotated[int | None, Query(ge=1, description="the 'next' value of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    for moment in (since, until):
        if moment is not None and moment.tzinfo is None:
            raise ApiError(422, "since/until: give a time zone (e.g. 2026-01-31T08:00:00Z)", "request.invalid")
    where = AuditFilter(
        since=utc_timestamp(since) if since else None,
        until=utc_timestamp(until) if until else None,
        actor=actor,
        action=action,
        object=object,
        outcome=outcome.value if outcome else None,
    )
    entries = context_of(request).audit.query(where, cursor, limit)
    return {"items": [entry.to_json() for entry in entries], "next": entries[-1].seq if len(entries) == limit else None}


@router.get("/system", summary="settings, models, sinks, retention, watchlist state (admins)")
def system(request: Request, _: Annotated[Principal, Depends(require(Permission.SYSTEM_READ))]) -> dict:
    ctx = context_of(request)
    server = ctx.server
    job = ctx.retention_job
    return {
        "version": ctx.info.version,
        "models": list(ctx.info.models),
        "sinks": list(ctx.info.sinks),
        "cameras": list(ctx.info.cameras),
        "outbox": ctx.events.outbox_counts(),
        "server": {
            "listen": server.listen,
            "tls": server.tls is not None,
            "metrics_public": server.metrics_public,
            "operators_can_enroll": server.operators_can_enroll,
            "session_idle_timeout_s": server.session_idle_timeout_s,
            "max_upload_bytes": server.max_upload_bytes,
        },
        "retention": {**ctx.retention.model_dump(), "last_run": job.last_run if job else None},
        "watchlist": {
            "path": ctx.hub.watchlist.path,
            "people": ctx.hub.watchlist.people,
            "loaded_at": ctx.hub.watchlist.loaded_at,
            "error": ctx.hub.watchlist.error or None,
        },
    }
