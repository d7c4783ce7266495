"""What every route of one campaign's app shares: its settings, the read engine and template
environment, the per-instrument caches, and the three ways a route touches the store (a read
session, a read-model call, the campaign's id) — one record instead of a closure per route group.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends
from fastapi.exceptions import HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jinja2 import Environment
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine, select

from ..config import CampaignConfig
from ..store import Campaign, Store
from .aggregates import LabTimeCache, StepTotals
from .queries import NotFound


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


def docs_assets_dir() -> Path | None:
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


def writer_dependency(settings: WebSettings) -> Callable[..., None]:
    """The FastAPI dependency every write endpoint carries: read-only mode, no token configured,
    no credentials and a wrong token are refused with 403 / 401 and a message saying which."""
    bearer = HTTPBearer(auto_error=False, description="web.token from campaign.yaml")

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

    return require_writer


@dataclass
class AppContext:
    """One campaign's app state shared by its route modules (built once by ``create_app``)."""

    settings: WebSettings
    env: Environment
    step_totals: StepTotals  # finished-step totals per instrument, advanced from the event log
    lab_time: LabTimeCache
    docs_assets: Path | None
    require_writer: Callable[..., None]

    @property
    def cfg(self) -> CampaignConfig:
        return self.settings.config

    @property
    def name(self) -> str:
        return self.settings.config.campaign.name

    @contextlib.contextmanager
    def reading(self) -> Iterator[tuple[Session, Campaign | None]]:
        """A read-only session and this campaign's row (None before the loop first starts)."""
        with Session(self.settings.read_engine) as session:
            campaign = session.exec(select(Campaign).where(Campaign.name == self.name)).first()
            yield session, campaign

    def read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a read-model function ``fn(session, campaign, ...)`` in its own read session."""
        with self.reading() as (session, campaign):
            return fn(session, campaign, *args, **kwargs)

    def campaign_id(self) -> int:
        """The campaign's id, or a 404 naming it when the loop has not started it yet."""
        with self.reading() as (_, campaign):
            if campaign is None:
                raise NotFound(f"campaign {self.name!r} has not started: its store holds no record yet")
            return int(campaign.id)
