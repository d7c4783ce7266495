"""The HTML pages: each renders the same read model the JSON API returns, plus the sidebar of
recent events and the id the page's live stream resumes after.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse

from . import queries, svg
from .context import AppContext, parse_id


def register_pages(app: FastAPI, ctx: AppContext) -> None:
    """Add the pages (tag ``pages``, not in the schema)."""
    settings, cfg, name, env = ctx.settings, ctx.cfg, ctx.name, ctx.env
    reading, read, step_totals = ctx.reading, ctx.read, ctx.step_totals

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

