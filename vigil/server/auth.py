"""Who is calling: a bearer token or a session cookie; what they may do; CSRF on cookie requests that change things.

Every API route declares one permission (``Depends(require(Permission.X))``). The dependency resolves the caller
(an ``Authorization: Bearer vgl_...`` header, else the ``vigil_session`` cookie), answers 401 to anonymous callers
and 403 (audited) to callers without the permission, and for a cookie-authenticated POST/PUT/PATCH/DELETE requires
the session's CSRF token in the ``X-CSRF-Token`` header (a bearer token is not sent by browsers on their own, so it
needs none). The resolved caller is kept in ``request.state.principal`` for the error handlers' audit entries.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from vigil.server.context import ServiceContext
from vigil.server.roles import Permission, permissions_of
from vigil.store.audit import Actor, Outcome
from vigil.store.users import Role, Session

SESSION_COOKIE = "vigil_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ApiError(Exception):
    """An error answer: HTTP ``status``, one-line ``message``; audited when ``action`` is given."""

    def __init__(
        self,
        status: int,
        message: str,
        action: str | None = None,
        object_: str | None = None,
        outcome: Outcome = Outcome.INVALID,
        extra: dict | None = None,
        headers: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.action, self.object = status, message, action, object_
        self.outcome, self.extra, self.headers = outcome, extra or {}, headers


@dataclass(frozen=True)
class Principal:
    actor: Actor
    role: Role | None
    permissions: frozenset[Permission]
    via: str  # "token" | "session" | "anonymous"
    session: Session | None = None

    @property
    def name(self) -> str:
        return self.actor.name

    @property
    def role_name(self) -> str:
        return self.role.value if self.role is not None else "anonymous"

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


def context_of(request: Request) -> ServiceContext:
    return request.app.state.context


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def resolve_principal(request: Request) -> Principal:
    """The caller of ``request`` (anonymous when no valid credential); an invalid bearer token is a 401."""
    ctx = context_of(request)
    client = client_address(request)
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        token = ctx.tokens.resolve(secret.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise ApiError(
                401,
                "invalid, revoked or expired API token (send Authorization: Bearer TOKEN)",
                "auth.token",
                None,
                Outcome.DENIED,
                headers={"WWW-Authenticate": "Bearer"},
            )
        actor = Actor(f"token:{token.id}", token.role.value, client)
        return Principal(actor, token.role, permissions_of(token.role, ctx.server.operators_can_enroll), "token")
    cookie = request.cookies.get(SESSION_COOKIE)
    session = ctx.sessions.resolve(cookie) if cookie else None
    if session is None:
        return Principal(Actor("anonymous", None, client), None, frozenset(), "anonymous")
    user = session.user
    actor = Actor(f"user:{user.username}", user.role.value, client)
    return Principal(actor, user.role, permissions_of(user.role, ctx.server.operators_can_enroll), "session", session)


async def current_principal(request: Request) -> Principal:
    """The caller, resolved on the event loop: one indexed lookup (a thread hop per request would cost more under
    concurrent load than the lookup itself)."""
    return check_principal(request)


def check_principal(request: Request) -> Principal:
    principal = resolve_principal(request)
    request.state.principal = principal
    if principal.session is not None and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), principal.session.csrf_token.encode()):
            raise ApiError(
                403,
                f"CSRF check failed: send the {CSRF_HEADER} header given by /api/v1/auth/me",
                "auth.csrf",
                f"{request.method} {request.url.path}",
                Outcome.DENIED,
            )
    return principal


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through callers holding ``permission`` (401 anonymous, 403 otherwise)."""

    async def dependency(request: Request, principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.via == "anonymous":
            raise ApiError(
                401,
                "authentication required (log in, or send Authorization: Bearer TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not principal.can(permission):
            raise ApiError(
                403,
                f"role {principal.role_name} may not do this ({permission.value})",
                "access.denied",
                f"{request.method} {request.url.path}",
                Outcome.DENIED,
            )
        return principal

    dependency.__name__ = f"require_{permission.name.lower()}"
    return dependency


async def authenticated(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """Any logged-in caller (``/auth/me``, logout)."""
    if principal.via == "anonymous":
        raise ApiError(401, "authentication required (log in, or send Authorization: Bearer TOKEN)")
    return principal
