"""The operator's web page: server-rendered HTML pages, local static assets, strict browser security headers.

Each page (``/login``, ``/live``, ``/alerts``, ``/watchlist``, ``/system``) is an HTML document rendered here from a
template in ``templates/`` with the session's user, role, permissions and CSRF token filled in (escaped), and one
ES module from ``static/`` that reads and changes everything through the JSON API under ``/api/v1`` (the same role
table, audit and validation as any script). No build step, nothing from a CDN: the page works on an air-gapped
network. Text from the API is always put into the page as text (``textContent``), never parsed as HTML, and every
response carries a Content-Security-Policy that allows scripts, styles and images from this server only (no inline
script), so even a stored name with markup could not run.

An anonymous browser asking for a page is sent to ``/login?next=<page>``; a page the role may not see answers 403
with a page that says so (the API would refuse its data anyway).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vigil.server.auth import Principal, current_principal
from vigil.server.roles import Permission

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"
TEMPLATE_DIR = WEB_DIR / "templates"
DOCS_PREFIX = "/api/docs"  # Swagger UI needs its own inline script: it keeps the framework's headers
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
NO_STORE = {"Cache-Control": "no-store"}  # pages carry the session's CSRF token
NEXT_PATTERN = r"^/[a-z]{0,20}$"  # where login may send the browser back to: one of our own pages, never elsewhere


@dataclass(frozen=True)
class Page:
    """One page: ``name`` names its path, its template (templates/<name>.html) and its script (static/<name>.js)."""

    name: str
    title: str
    permission: Permission | None  # needed to open it (the API checks each call again)

    @property
    def path(self) -> str:
        return f"/{self.name}"


PAGES = (
    Page("live", "Live", Permission.CAMERAS_READ),
    Page("alerts", "Alerts", Permission.EVENTS_READ),
    Page("watchlist", "Watchlist", Permission.PEOPLE_READ),
    Page("system", "System", Permission.SYSTEM_READ),
)
HOME = "alerts"
Caller = Annotated[Principal, Depends(current_principal)]


class SecurityHeaders:
    """ASGI middleware: the headers above on every response (the API docs keep theirs: Swagger UI runs inline
    script). Plain ASGI rather than BaseHTTPMiddleware: it only edits the response start, streams (SSE) pass as
    they are."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(DOCS_PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Templates:
    """The page templates, read once per server (``$name`` placeholders; every value is HTML-escaped)."""

    def __init__(self, folder: Path = TEMPLATE_DIR) -> None:
        self._templates = {path.stem: Template(path.read_text(encoding="utf-8")) for path in folder.glob("*.html")}

    def render(self, name: str, **values: str) -> str:
        return self._templates[name].substitute({key: html.escape(value) for key, value in values.items()})

    def raw(self, name: str, **values: str) -> str:
        """A template whose values are already HTML (fragments rendered by :meth:`render`)."""
        return self._templates[name].substitute(values)


def nav_html(templates: Templates, principal: Principal, current: str) -> str:
    return "".join(
        templates.render(
            "nav_link", href=page.path, title=page.title, current="page" if page.name == current else "false"
        )
        for page in PAGES
        if page.permission is None or principal.can(page.permission)
    )


def render_page(templates: Templates, page: Page, principal: Principal, body: str | None = None) -> str:
    """The page's document for this caller: the header names the user and role and links only what the role may see;
    the CSRF token and permissions travel in meta tags for the page's script."""
    session = principal.session
    escape = html.escape
    return templates.raw(
        "layout",
        title=escape(page.title),
        page=escape(page.name),
        csrf=escape(session.csrf_token if session else ""),
        user=escape(principal.name.removeprefix("user:")),
        role=escape(principal.role_name),
        permissions=escape(" ".join(sorted(p.value for p in principal.permissions))),
        nav=nav_html(templates, principal, page.name),
        body=templates.render(page.name) if body is None else body,
    )


def page_response(templates: Templates, page: Page, principal: Principal) -> Response:
    if principal.via == "anonymous":
        return RedirectResponse(f"/login?next={quote(page.path)}", status_code=303)
    if page.permission is not None and not principal.can(page.permission):
        body = templates.render("forbidden", role=principal.role_name, title=page.title)
        return HTMLResponse(render_page(templates, page, principal, body), status_code=403, headers=NO_STORE)
    return HTMLResponse(render_page(templates, page, principal), headers=NO_STORE)


def build_router(templates: Templates) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def home(principal: Caller) -> Response:
        return RedirectResponse("/login" if principal.via == "anonymous" else f"/{HOME}", status_code=303)

    @router.get("/login")
    def login(principal: Caller, next: Annotated[str, Query(max_length=100)] = "/") -> Response:
        if principal.via != "anonymous":
            return RedirectResponse(next if re.fullmatch(NEXT_PATTERN, next) else "/", status_code=303)
        return HTMLResponse(templates.render("login"), headers=NO_STORE)

    for page in PAGES:
        router.add_api_route(page.path, _page_handler(templates, page), methods=["GET"])
    return router


def _page_handler(templates: Templates, page: Page) -> Callable[[Principal], Response]:
    def handler(principal: Caller) -> Response:
        return page_response(templates, page, principal)

    handler.__name__ = f"page_{page.name}"
    return handler


class StaticAssets(StaticFiles):
    """The page's CSS, scripts and icons: revalidated on every load (ETag; a 304 costs a few hundred bytes) so an
    upgrade never runs a stale script against a new API."""

    def file_response(self, *args, **kwargs) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def add_web(app: FastAPI) -> None:
    templates = Templates()
    app.include_router(build_router(templates))
    app.mount("/static", StaticAssets(directory=STATIC_DIR), name="static")
    app.add_middleware(SecurityHeaders)
