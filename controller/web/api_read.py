"""The read half of the JSON API and the live event stream: every endpoint returns what the
matching page renders (:mod:`controller.web.queries`), open to anyone who can reach the server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from . import queries, svg
from .context import AppContext, parse_id


def register_read_api(app: FastAPI, ctx: AppContext) -> None:
    """Add the read endpoints (tag ``read``) and events (tag ``events``)."""
    settings, cfg, name, reading = ctx.settings, ctx.cfg, ctx.name, ctx.reading
    read, step_totals, lab_time = ctx.read, ctx.step_totals, ctx.lab_time

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

