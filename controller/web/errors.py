"""How every failure reads: an HTML error page for a browser, ``{"detail": ...}`` for the API, with
the status the failure's kind calls for (404 unknown id, 409 wrong state, 422 bad value, 500
unexpected, logged).
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..store import IllegalTransition, StoreError, StoreErrorKind
from .actions import Conflict
from .context import AppContext
from .queries import NotFound

log = logging.getLogger("synthloop.web")


def register_error_handlers(app: FastAPI, ctx: AppContext) -> None:
    """Map our error types (and FastAPI's) to status codes and pages."""
    settings, name, env = ctx.settings, ctx.name, ctx.env

    def _wants_html(request: Request) -> bool:
        return not request.url.path.startswith("/api/")

    def _error(request: Request, status: int, message: str, headers: dict | None = None) -> Response:
        if _wants_html(request):
            html = env.get_template("error.html").render(status=status, message=message, page="",
                                                         campaign=name, settings=settings)
            return HTMLResponse(html, status_code=status, headers=headers)
        return JSONResponse({"detail": message}, status_code=status, headers=headers)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return _error(request, 404, str(exc))

    @app.exception_handler(Conflict)
    @app.exception_handler(IllegalTransition)
    async def _conflict(request: Request, exc: Exception) -> Response:
        return _error(request, 409, str(exc))

    @app.exception_handler(StoreError)  # also controller.loop's ControlError (a StoreError)
    async def _store_error(request: Request, exc: StoreError) -> Response:
        status = {StoreErrorKind.NOT_FOUND: 404, StoreErrorKind.INVALID: 422}.get(exc.kind, 409)
        return _error(request, status, str(exc))

    @app.exception_handler(ValueError)
    async def _bad_value(request: Request, exc: ValueError) -> Response:
        return _error(request, 422, str(exc))

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException and the router's 404/405
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no page or endpoint at {request.url.path}"
        return _error(request, exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(request, 422, f"invalid request: {problems}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return _error(request, 500, f"internal error ({type(exc).__name__}: {exc}); see the server log")

