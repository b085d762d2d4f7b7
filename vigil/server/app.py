"""The FastAPI application: routes, one error shape, local API docs, the web page (vigil/server/web.py).

Every error is ``{"error": "<one line>"}`` (plus fields such as ``result`` for a refused photo) with a 4xx/5xx status.
Invalid input is audited (``request.invalid`` or the route's own action) with the caller, and nothing is written.
The API docs are Swagger UI served from this process (``/api/docs``; files from the fastapi-offline package), never
from a CDN; the schema is ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from vigil import __version__
from vigil.server.auth import ApiError, Principal, client_address
from vigil.server.cache import ResponseCache
from vigil.server.context import ServiceContext
from vigil.server.metrics import VigilCollector
from vigil.store.audit import Actor, Outcome
from vigil.store.db import ConflictError, NotFoundError, StoreError

log = logging.getLogger("vigil.server")
API_PREFIX = "/api/v1"
ANSWER_TTL_S = 1.0  # event pages and health are recomputed at least this often (sooner on news: vigil/server/cache.py)
DOCS_STATIC = Path(fastapi_offline.__file__).parent / "static"


def create_app(ctx: ServiceContext) -> FastAPI:
    from vigil.server.routes import admin, auth, cameras, events, health, people, stream
    from vigil.server.web import add_web

    app = FastAPI(
        title="vigil",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{API_PREFIX}/openapi.json",
        description="Face-watchlist alerts as a service. Authenticate with a session cookie "
        "(POST /api/v1/auth/login) or `Authorization: Bearer TOKEN` (`vigil token create`).",
    )
    app.state.context = ctx
    app.state.frame_cache = cameras.FrameCache()
    app.state.answer_cache = ResponseCache(ANSWER_TTL_S)
    app.state.metrics_registry = CollectorRegistry(auto_describe=False)
    app.state.metrics_registry.register(VigilCollector(ctx))
    for module in (auth, events, cameras, people, stream, admin, health):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(health.metrics_router)
    _add_docs(app)
    add_web(app)
    _add_error_handlers(app)
    return app


def _add_docs(app: FastAPI) -> None:
    app.mount("/api/docs/static", StaticFiles(directory=DOCS_STATIC), name="docs-static")

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "",
            title="vigil API",
            swagger_js_url="/api/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/api/docs/static/swagger-ui.css",
            swagger_favicon_url="/api/docs/static/favicon.png",
        )


def _actor(request: Request) -> Actor:
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal.actor if principal is not None else Actor("anonymous", None, client_address(request))


def _audit(request: Request, action: str, object_: str | None, outcome: Outcome, detail: str) -> None:
    try:
        request.app.state.context.audit.record(_actor(request), action, object_, outcome, detail)
    except Exception as exc:  # the answer must still go out; the failure is logged
        log.error("audit: cannot record %s (%s)", action, exc)


def _error(status: int, message: str, extra: dict | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, **(extra or {})}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    def api_error(request: Request, exc: ApiError) -> JSONResponse:
        if exc.action is not None:
            _audit(request, exc.action, exc.object, exc.outcome, exc.message)
        return _error(exc.status, exc.message, exc.extra, exc.headers)

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = validation_message(exc)
        _audit(request, "request.invalid", f"{request.method} {request.url.path}", Outcome.INVALID, message)
        return _error(422, message)

    @app.exception_handler(StoreError)
    def store_error(request: Request, exc: StoreError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, ConflictError) else 422
        if status != 404:
            _audit(request, "request.invalid", f"{request.method} {request.url.path}", Outcome.INVALID, str(exc))
        return _error(status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


def validation_message(exc: RequestValidationError) -> str:
    """The first problem as ``where.field: message`` (and how many more), one line."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body" or len(first.get("loc", ())) == 1)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"
