"""The FastAPI application: HTML pages, the JSON API, server-sent events, write actions.

Why one app for pages and API: every page is rendered from the same read model
(:mod:`controller.web.queries`) the JSON API returns, so what a researcher sees and what a
script reads cannot drift apart. Reads use their own engine (plain deferred SQLite
transactions, ``query_only``) so the web app never takes the write lock the closed loop needs;
writes go through :class:`~controller.store.Store` exactly like the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import CampaignConfig
from ..store import Campaign, IllegalTransition, Store, StoreError, StoreErrorKind
from . import actions, queries, svg
from .actions import ApproveRequest, CampaignAction, ConditionsEdit, Conflict, RejectRequest
from .aggregates import LabTimeCache, StepTotals
from .queries import NotFound

log = logging.getLogger("synthloop.web")

STATIC_DIR = Path(__file__).with_name("data") / "static"


@dataclass
class WebSettings:
    """Everything the app needs: the campaign's config, its store and the write policy."""

    config: CampaignConfig
    store: Store
    token: str | None = None
    read_only: bool = False
    poll_interval_s: float = 0.5
    read_engine: Engine | None = field(default=None, repr=False)


def read_engine_for(url: str) -> Engine:
    """An engine for reads only: deferred transactions and ``query_only`` on SQLite.

    The store's own engine opens every transaction with ``BEGIN IMMEDIATE`` (right for the
    loop's writes); a page view must not queue behind or block the loop, and in WAL mode a
    plain read transaction does neither.
    """
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa_event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA query_only=1")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


# --------------------------------------------------------------------------- templates


def _pct(value: Any, digits: int = 0) -> str:
    return "–" if value is None else f"{100 * float(value):.{digits}f} %"


def _num(value: Any, fmt: str = ".3g") -> str:
    return "–" if value is None else format(float(value), fmt)


def _when(value: str | None) -> str:
    return (value or "–").replace("T", " ").split("+")[0]


def _env() -> Environment:
    env = Environment(loader=PackageLoader("controller.web", "data/templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_pct, num=_num, when=_when, tojson_compact=lambda v: json.dumps(v, default=str))
    return env


# --------------------------------------------------------------------------- middleware


class ServerTiming:
    """ASGI middleware adding ``Server-Timing: app;dur=MS`` so benchmarks can read server time."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"server-timing", f"app;dur={ms:.1f}".encode())]
            await send(message)

        await self.app(scope, receive, timed_send)


# --------------------------------------------------------------------------- app


def _docs_assets_dir() -> Path | None:
    """Swagger UI and ReDoc files shipped by the ``fastapi-offline`` package, if installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    path = Path(fastapi_offline.__file__).with_name("static")
    return path if (path / "swagger-ui-bundle.js").exists() else None


def parse_id(raw: str, what: str) -> int:
    """Ids arrive as path text; a non-number is an unknown id (404), not a validation error."""
    try:
        value = int(raw)
    except ValueError:
        raise NotFound(f"no {what} with id {raw!r}: ids are positive integers") from None
    if value < 1:
        raise NotFound(f"no {what} with id {value}: ids are positive integers")
    return value


def create_app(settings: WebSettings) -> FastAPI:
    """Build the app for one campaign (its config and store are fixed for the app's life)."""
    if settings.read_engine is None:
        settings.read_engine = read_engine_for(settings.store.url)
    cfg = settings.config
    name = cfg.campaign.name
    env = _env()
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
    step_totals = StepTotals()  # finished-step totals per instrument, advanced from the event log
    lab_time = LabTimeCache()
    app.state.shutting_down = False
    app.add_middleware(ServerTiming)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    docs_assets = _docs_assets_dir()
    if docs_assets is not None:
        app.mount("/static-docs", StaticFiles(directory=docs_assets), name="static-docs")
    bearer = HTTPBearer(auto_error=False, description="web.token from campaign.yaml")

    @contextlib.contextmanager
    def reading() -> Iterator[tuple[Session, Campaign | None]]:
        with Session(settings.read_engine) as session:
            campaign = session.exec(select(Campaign).where(Campaign.name == name)).first()
            yield session, campaign

    def read(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with reading() as (session, campaign):
            return fn(session, campaign, *args, **kwargs)

    def campaign_id() -> int:
        with reading() as (_, campaign):
            if campaign is None:
                raise NotFound(f"campaign {name!r} has not started: its store holds no record yet")
            return int(campaign.id)

    def require_writer(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.read_only:
            raise HTTPException(403, "read-only mode: this server refuses write actions "
                                     "(web.read_only in campaign.yaml or serve --read-only)")
        if not settings.token:
            raise HTTPException(403, "write actions are disabled: set web.token in campaign.yaml "
                                     "(at least 8 characters) and restart the server")
        if credentials is None:
            raise HTTPException(401, "authentication required: send 'Authorization: Bearer <web.token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), settings.token.encode()):
            raise HTTPException(401, "wrong token: it does not match web.token of this campaign",
                                headers={"WWW-Authenticate": "Bearer"})

    # ------------------------------------------------------------------ errors
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

    # ------------------------------------------------------------------ JSON API: reads
    @app.get("/api/overview", tags=["read"], summary="Budget, targets made/attempted, lab time, instruments")
    def api_overview() -> dict:
        with reading() as (session, campaign):
            return queries.overview(session, campaign, cfg, step_totals)

    @app.get("/api/lab-time", tags=["read"],
             summary="Lab time in days: the instrument makespan (as `synthloop report`), cached")
    def api_lab_time() -> dict:
        with reading() as (session, campaign):
            if campaign is None:
                return {"lab_days": None, "as_of_event": 0, "cached": False}
            return lab_time.get(settings.store, session, int(campaign.id))

    @app.get("/api/proposals", tags=["read"],
             summary="Proposed experiments grouped by target with predictions and recipes")
    def api_proposals(limit: int = Query(200, ge=1, le=queries.MAX_LIST), offset: int = Query(0, ge=0)) -> dict:
        return read(queries.proposals, limit=limit, offset=offset, cfg=cfg) | {"approval_mode": cfg.campaign.approval_mode}

    @app.get("/api/in-flight", tags=["read"], summary="Experiments between approval and verdict, with their current step")
    def api_in_flight(limit: int = Query(200, ge=1, le=queries.MAX_LIST)) -> dict:
        return read(queries.in_flight, limit=limit)

    @app.get("/api/results", tags=["read"], summary="Finished experiments (succeeded/failed), newest first")
    def api_results(limit: int = Query(50, ge=1, le=queries.MAX_LIST), offset: int = Query(0, ge=0)) -> dict:
        return read(queries.results, limit=limit, offset=offset)

    @app.get("/api/experiments/{experiment_id}", tags=["read"],
             summary="One experiment: recipe, steps, measurements, phase tables")
    def api_experiment(experiment_id: str) -> dict:
        return read(queries.experiment_detail, parse_id(experiment_id, "experiment"))

    @app.get("/api/experiments/{experiment_id}/xrd", tags=["read"],
             summary="XRD arrays: observed, fitted, difference, phase ticks")
    def api_xrd(experiment_id: str) -> dict:
        return read(queries.xrd_data, parse_id(experiment_id, "experiment"))

    @app.get("/api/experiments/{experiment_id}/xrd.svg", tags=["read"], summary="XRD plot as SVG",
             response_class=Response)
    def api_xrd_svg(experiment_id: str) -> Response:
        data = read(queries.xrd_data, parse_id(experiment_id, "experiment"))
        return Response(svg.xrd_svg(data, f"XRD of experiment {data['experiment_id']}"), media_type="image/svg+xml")

    @app.get("/api/targets", tags=["read"], summary="Targets, newest first")
    def api_targets(limit: int = Query(200, ge=1, le=queries.MAX_LIST), offset: int = Query(0, ge=0)) -> dict:
        return read(queries.targets, limit=limit, offset=offset)

    @app.get("/api/targets/{target_id}/recipes", tags=["read"],
             summary="Recipe history of a target: which replaced which and why")
    def api_recipe_history(target_id: str) -> dict:
        return read(queries.recipe_history, parse_id(target_id, "target"))

    @app.get("/api/models", tags=["read"], summary="Model versions with their metrics")
    def api_models() -> dict:
        return read(queries.models)

    @app.get("/api/models/{model_id}", tags=["read"], summary="Parity and calibration of one model version")
    def api_model(model_id: str) -> dict:
        return read(queries.model_quality, parse_id(model_id, "model version"))

    @app.get("/api/models/{model_id}/parity.svg", tags=["read"], response_class=Response)
    def api_parity_svg(model_id: str) -> Response:
        q = read(queries.model_quality, parse_id(model_id, "model version"))
        return Response(svg.parity_svg(q["parity"], f"parity {q['kind']} v{q['version']}"), media_type="image/svg+xml")

    @app.get("/api/models/{model_id}/calibration.svg", tags=["read"], response_class=Response)
    def api_calibration_svg(model_id: str) -> Response:
        q = read(queries.model_quality, parse_id(model_id, "model version"))
        return Response(svg.calibration_svg(q["calibration"]), media_type="image/svg+xml")

    @app.get("/api/events", tags=["events"], summary="Events after an id (polling alternative to the stream)")
    def api_events(after: int = Query(0, ge=0), limit: int = Query(200, ge=1, le=1000)) -> dict:
        return {"events": read(queries.events_after, after=after, limit=limit)}

    @app.get("/api/event-log", tags=["events"],
             summary="Events newest first, filtered by kind/actor prefix, entity and entity id; page with before")
    def api_event_log(kind: str | None = Query(None, max_length=100), entity: str | None = Query(None, max_length=50),
                      entity_id: int | None = Query(None, ge=1), actor: str | None = Query(None, max_length=100),
                      before: int | None = Query(None, ge=1), limit: int = Query(100, ge=1, le=1000)) -> dict:
        return read(queries.event_log, kind=kind, entity=entity, entity_id=entity_id, actor=actor,
                    before=before, limit=limit)

    @app.get("/api/events/stream", tags=["events"], response_class=StreamingResponse,
             summary="Server-sent events: every new event row, as `event: campaign` with JSON data")
    async def api_stream(request: Request, after: int | None = Query(None, ge=0),
                         last_event_id: str | None = Header(None)) -> StreamingResponse:
        # a reconnecting EventSource sends Last-Event-ID: it wins over the page's initial ?after=
        start = int(last_event_id) if last_event_id and last_event_id.isdigit() else after
        if start is None:
            start = await run_in_threadpool(read, queries.last_event_id)

        async def stream() -> AsyncIterator[str]:
            last, idle = start, 0.0
            yield "retry: 2000\n\n"
            yield f": connected after event {last}\n\n"
            while not app.state.shutting_down and not await request.is_disconnected():
                events = await run_in_threadpool(read, queries.events_after, after=last, limit=200)
                for ev in events:
                    last = ev["id"]
                    yield f"id: {ev['id']}\nevent: campaign\ndata: {json.dumps(ev, default=str)}\n\n"
                idle = 0.0 if events else idle + settings.poll_interval_s
                if idle >= 15:
                    idle = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(settings.poll_interval_s)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/health", tags=["read"], summary="Liveness and the write policy of this server")
    def api_health() -> dict:
        with reading() as (_, campaign):
            return {"ok": True, "campaign": name, "started": campaign is not None,
                    "read_only": settings.read_only, "writes_enabled": bool(settings.token) and not settings.read_only,
                    "approval_mode": cfg.campaign.approval_mode}

    # ------------------------------------------------------------------ JSON API: writes
    @app.post("/api/experiments/{experiment_id}/approve", tags=["write"], dependencies=[Depends(require_writer)],
              summary="Approve a proposed experiment (proposed → approved), like `synthloop approve ID`")
    def api_approve(experiment_id: str, body: ApproveRequest | None = None) -> dict:
        eid = parse_id(experiment_id, "experiment")
        campaign_id()  # a clear 404 when the campaign has not started
        return actions.approve(settings.store, name, eid, body or ApproveRequest())

    @app.post("/api/experiments/{experiment_id}/reject", tags=["write"], dependencies=[Depends(require_writer)],
              summary="Reject a proposed experiment (proposed → cancelled) with a reason")
    def api_reject(experiment_id: str, body: RejectRequest | None = None) -> dict:
        eid = parse_id(experiment_id, "experiment")
        campaign_id()
        return actions.reject(settings.store, name, eid, body or RejectRequest())

    @app.patch("/api/recipes/{recipe_id}/conditions", tags=["write"], dependencies=[Depends(require_writer)],
               summary="Edit setpoint/dwell of a proposed recipe's heating segment")
    def api_edit_conditions(recipe_id: str, body: ConditionsEdit) -> dict:
        return actions.edit_conditions(settings.store, campaign_id(), cfg, parse_id(recipe_id, "recipe"), body)

    @app.post("/api/campaign/{action}", tags=["write"], dependencies=[Depends(require_writer)],
              summary="Pause, resume or stop the campaign (as `synthloop pause|resume|stop`)")
    def api_campaign_control(action: str, body: CampaignAction | None = None) -> dict:
        if action not in ("pause", "resume", "stop"):
            raise NotFound(f"no campaign action {action!r}: use pause, resume or stop")
        campaign_id()
        return actions.campaign_control(settings.store, name, action, body or CampaignAction())

    # ------------------------------------------------------------------ API documentation
    def _no_docs_assets() -> HTMLResponse:
        return HTMLResponse("<p>The API documentation's assets are not installed: "
                            "<code>pip install fastapi-offline</code> (part of <code>synthloop[web]</code>). "
                            "The schema itself is at <a href='/openapi.json'>/openapi.json</a>.</p>", 503)

    @app.get("/docs", include_in_schema=False)
    def page_docs() -> HTMLResponse:
        if docs_assets is None:
            return _no_docs_assets()
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} — API",
                                   swagger_js_url="/static-docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static-docs/swagger-ui.css",
                                   swagger_favicon_url="/static-docs/favicon.png")

    redoc_js: list[bytes] = []

    @app.get("/docs-assets/redoc.js", include_in_schema=False)
    def redoc_script() -> Response:
        """ReDoc's bundle with its one outside fetch (the vendor's logo from a CDN) pointed home."""
        if docs_assets is None:
            raise NotFound("the API documentation's assets are not installed (pip install fastapi-offline)")
        if not redoc_js:
            text = (docs_assets / "redoc.standalone.js").read_bytes()
            redoc_js.append(text.replace(b"https://cdn.redoc.ly/redoc/logo-mini.svg", b"/static-docs/favicon.png"))
        return Response(redoc_js[0], media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/redoc", include_in_schema=False)
    def page_redoc() -> HTMLResponse:
        if docs_assets is None:
            return _no_docs_assets()
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} — API",
                              redoc_js_url="/docs-assets/redoc.js",
                              redoc_favicon_url="/static-docs/favicon.png", with_google_fonts=False)

    # ------------------------------------------------------------------ pages
    def page(template: str, page_name: str, **context: Any) -> HTMLResponse:
        with reading() as (session, campaign):
            last = queries.last_event_id(session, campaign)
            sidebar = queries.recent_events(session, campaign)
        html = env.get_template(template).render(page=page_name, campaign=name, settings=settings,
                                                 approval_mode=cfg.campaign.approval_mode,
                                                 last_event_id=last, sidebar_events=sidebar, **context)
        return HTMLResponse(html)

    @app.get("/", response_class=HTMLResponse, tags=["pages"], include_in_schema=False)
    def page_overview() -> HTMLResponse:
        with reading() as (session, campaign):
            data = queries.overview(session, campaign, cfg, step_totals)
        return page("overview.html", "overview", o=data,
                    yield_plot=svg.yield_svg(data.get("yields", []), cfg.recipes.yield_threshold),
                    error_plot=svg.model_error_svg(data.get("model_error", [])))

    @app.get("/proposals", response_class=HTMLResponse, tags=["pages"], include_in_schema=False)
    def page_proposals(offset: int = Query(0, ge=0)) -> HTMLResponse:
        data = read(queries.proposals, limit=100, offset=offset, cfg=cfg)
        return page("proposals.html", "proposals", p=data, writable=bool(settings.token) and not settings.read_only)

    @app.get("/in-flight", response_class=HTMLResponse, tags=["pages"], include_in_schema=False)
    def page_in_flight() -> HTMLResponse:
        return page("inflight.html", "in-flight", f=read(queries.in_flight))

    @app.get("/results", response_class=HTMLResponse, tags=["pages"], include_in_schema=False)
    def page_results(offset: int = Query(0, ge=0)) -> HTMLResponse:
        return page("results.html", "results", r=read(queries.results, limit=50, offset=offset))

    @app.get("/experiments/{experiment_id}", response_class=HTMLResponse, tags=["pages"], include_in_schema=False)
    def page_experiment(experiment_id: str) -> HTMLResponse:
        eid = parse_id(experiment_id, "experiment")
        detail = read(queries.experiment_detail, eid)
        plot, has_fit = None, False
        if any(m["kind"] == "xrd" for m in detail["measurements"]):
            data = read(queries.xrd_data, eid)
            plot, has_fit = svg.xrd_svg(data, f"XRD of experiment {eid}"), data["fitted"] is not None
        return page("experiment.html", "results", d=detail, plot=plot, has_fit=has_fit)

    @app.get("/targets", response_class=HTMLResponse, tags=["pages"], include_in_schema=False)
    def page_targets(offset: int = Query(0, ge=0)) -> HTMLResponse:
        return page("targets.html", "targets", t=read(queries.targets, limit=100, offset=offset))

    @app.get("/targets/{target_id}", response_class=HTMLResponse, tags=["pages"], include_in_schema=False)
    def page_target(target_id: str) -> HTMLResponse:
        return page("target.html", "targets", h=read(queries.recipe_history, parse_id(target_id, "target")))

    @app.get("/events", response_class=HTMLResponse, tags=["pages"], include_in_schema=False)
    def page_events(kind: str | None = Query(None, max_length=100), entity: str | None = Query(None, max_length=50),
                    entity_id: str | None = Query(None), actor: str | None = Query(None, max_length=100),
                    before: int | None = Query(None, ge=1), limit: int = Query(100, ge=1, le=1000)) -> HTMLResponse:
        eid = parse_id(entity_id, "entity") if entity_id not in (None, "") else None
        data = read(queries.event_log, kind=kind or None, entity=entity or None, entity_id=eid,
                    actor=actor or None, before=before, limit=limit)
        return page("events.html", "events", ev=data, limit=limit)

    @app.get("/models", response_class=HTMLResponse, tags=["pages"], include_in_schema=False)
    def page_models() -> HTMLResponse:
        return page("models.html", "models", m=read(queries.models))

    @app.get("/models/{model_id}", response_class=HTMLResponse, tags=["pages"], include_in_schema=False)
    def page_model(model_id: str) -> HTMLResponse:
        q = read(queries.model_quality, parse_id(model_id, "model version"))
        return page("model.html", "models", q=q,
                    parity=svg.parity_svg(q["parity"], f"parity {q['kind']} v{q['version']}"),
                    calibration=svg.calibration_svg(q["calibration"]))

    return app
