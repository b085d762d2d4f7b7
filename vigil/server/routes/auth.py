"""Log in (session cookie + CSRF token), log out, who am I. Failed logins are rate-limited per user and address."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from vigil.server.auth import SESSION_COOKIE, ApiError, Principal, authenticated, client_address, context_of
from vigil.store.audit import Actor, Outcome

router = APIRouter(tags=["auth"])


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


def me_json(principal: Principal) -> dict:
    return {
        "user": principal.name,
        "role": principal.role.value if principal.role else None,
        "auth": principal.via,
        "permissions": sorted(p.value for p in principal.permissions),
        "csrf_token": principal.session.csrf_token if principal.session else None,
    }


@router.post("/auth/login", summary="log in: sets the session cookie; returns the CSRF token for later writes")
def login(body: Login, request: Request, response: Response) -> dict:
    ctx = context_of(request)
    client = client_address(request)
    keys = (f"user:{body.username}", f"addr:{client}")
    actor = Actor("anonymous", None, client)
    wait_s = ctx.throttle.retry_after_s(keys, ctx.monotonic())
    if wait_s > 0:
        raise ApiError(
            429,
            f"too many failed logins; retry in {wait_s:.0f} s",
            "login.throttled",
            f"user:{body.username}",
            Outcome.DENIED,
            headers={"Retry-After": str(int(wait_s) + 1)},
        )
    user = ctx.users.verify(body.username, body.password)
    if user is None:
        ctx.throttle.record_failure(keys, ctx.monotonic())
        ctx.audit.record(actor, "login.failure", f"user:{body.username}", Outcome.DENIED, "wrong user name or password")
        raise ApiError(401, "wrong user name or password")
    ctx.throttle.clear(keys[0])
    cookie, session = ctx.sessions.create(user, client)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(ctx.server.session_max_age_s),
        httponly=True,
        samesite="strict",
        secure=ctx.server.tls is not None,
        path="/",
    )
    ctx.audit.record(Actor(f"user:{user.username}", user.role.value, client), "login.success", f"user:{user.username}")
    return {"user": user.username, "role": user.role.value, "csrf_token": session.csrf_token}


@router.post("/auth/logout", summary="end this session")
def logout(request: Request, response: Response, principal: Annotated[Principal, Depends(authenticated)]) -> dict:
    ctx = context_of(request)
    if principal.via == "session":
        ctx.sessions.delete(request.cookies.get(SESSION_COOKIE, ""))
        response.delete_cookie(SESSION_COOKIE, path="/")
    ctx.audit.record(principal.actor, "logout", principal.name)
    return {"ok": True}


@router.get("/auth/me", summary="the caller: user or token, role, permissions, CSRF token (sessions)")
def me(principal: Annotated[Principal, Depends(authenticated)]) -> dict:
    return me_json(principal)
