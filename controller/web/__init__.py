"""Monitoring web app of a campaign: pages, JSON API, live events, approvals.

``synthloop serve CAMPAIGN_DIR`` runs it; :func:`create_app` builds the FastAPI app for
tests or embedding; :func:`serve` runs it with uvicorn.
"""

from .actions import ApproveRequest, ConditionsEdit, Conflict, RejectRequest
from .app import WebSettings, create_app
from .queries import NotFound
from .server import load_campaign, serve, settings_for

__all__ = [
    "ApproveRequest", "ConditionsEdit", "Conflict", "NotFound", "RejectRequest", "WebSettings",
    "create_app", "load_campaign", "serve", "settings_for",
]
