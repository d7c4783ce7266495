"""The FastAPI application: HTML pages, the JSON API, server-sent events, write actions.

Why one app for pages and API: every page is rendered from the same read model
(:mod:`controller.web.queries`) the JSON API returns, so what a researcher sees and what a
script reads cannot drift apart. Reads use their own engine (plain deferred SQLite
transactions, ``query_only``) so the web app never takes the write lock the closed loop needs;
writes go through :class:`~controller.store.Store` exactly like the CLI.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .aggregates import LabTimeCache, StepTotals
from .api_docs import register_api_docs
from .api_read import register_read_api
from .api_write import register_write_api
from .context import AppContext, WebSettings, docs_assets_dir, read_engine_for, writer_dependency
from .errors import register_error_handlers
from .pages import register_pages
from .templating import template_env
from .timing import ServerTiming

STATIC_DIR = Path(__file__).with_name("data") / "static"

__all__ = ["STATIC_DIR", "AppContext", "WebSettings", "create_app", "read_engine_for"]


def create_app(settings: WebSettings) -> FastAPI:
    """Build the app for one campaign (its config and store are fixed for the app's life)."""
    if settings.read_engine is None:
        settings.read_engine = read_engine_for(settings.store.url)
    cfg = settings.config
    name = cfg.campaign.name
    app = FastAPI(
        title=f"synthloop — {name}",
        version="1",
        description=(
            "Monitoring and approval API of one synthloop campaign. Reads are open; write actions "
            "(approve, reject, edit conditions) need `Authorization: Bearer <web.token>` from the "
            "campaign config and are refused in read-only mode. Live events: "
            "`GET /api/events/stream` (server-sent events)."
        ),
        openapi_tags=[{"name": "read"}, {"name": "write"}, {"name": "events"}, {"name": "pages"}],
        docs_url=None, redoc_url=None,  # served below from bundled assets: no CDN on a lab network
    )
    app.state.settings = settings
    app.state.shutting_down = False
    app.add_middleware(ServerTiming)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    docs_assets = docs_assets_dir()
    if docs_assets is not None:
        app.mount("/static-docs", StaticFiles(directory=docs_assets), name="static-docs")
    ctx = AppContext(settings, template_env(), StepTotals(), LabTimeCache(), docs_assets,
                     writer_dependency(settings))
    register_error_handlers(app, ctx)
    register_read_api(app, ctx)
    register_write_api(app, ctx)
    register_api_docs(app, ctx)
    register_pages(app, ctx)
    return app
