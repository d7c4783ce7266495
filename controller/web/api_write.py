"""The write half of the JSON API: approve, reject, edit conditions, pause / resume / stop — each
behind the bearer token and refused in read-only mode, and each the same store action the CLI runs.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from . import actions
from .actions import ApproveRequest, CampaignAction, ConditionsEdit, RejectRequest
from .context import AppContext, parse_id
from .queries import NotFound


def register_write_api(app: FastAPI, ctx: AppContext) -> None:
    """Add the write endpoints (tag ``write``), each depending on the writer check."""
    settings, cfg, name, campaign_id = ctx.settings, ctx.cfg, ctx.name, ctx.campaign_id
    require_writer = ctx.require_writer

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

