"""The event log: paging and filtering for the log page, and the id cursor the live stream polls.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_
from sqlmodel import Session, select

from ...store import (
    Campaign,
    Event,
)
from .rows import event_dict


def events_after(session: Session, campaign: Campaign | None, after: int = 0, limit: int = 200) -> list[dict[str, Any]]:
    """Events with id > ``after`` in id order (the SSE stream polls this)."""
    if campaign is None:
        return []
    query = select(Event).where(or_(Event.campaign_id == campaign.id, Event.campaign_id.is_(None)),
                                Event.id > after).order_by(Event.id).limit(limit)
    return [event_dict(e) for e in session.exec(query).all()]


def event_log(session: Session, campaign: Campaign | None, *, kind: str | None = None, entity: str | None = None,
              entity_id: int | None = None, actor: str | None = None, before: int | None = None,
              limit: int = 100) -> dict[str, Any]:
    """Events newest first, filtered: ``kind`` as a prefix (``experiment`` matches
    ``experiment.transition``), ``entity`` and ``entity_id`` exactly, ``actor`` as a prefix
    (``web:`` = every person in the web app); ``before`` pages back by id."""
    if campaign is None:
        return {"events": [], "kinds": [], "filters": {}, "next_before": None}
    where = [or_(Event.campaign_id == campaign.id, Event.campaign_id.is_(None))]
    if kind:
        where.append(Event.kind.startswith(kind, autoescape=True))
    if entity:
        where.append(Event.entity == entity)
    if entity_id is not None:
        where.append(Event.entity_id == entity_id)
    if actor:
        where.append(Event.actor.startswith(actor, autoescape=True))
    if before is not None:
        where.append(Event.id < before)
    limit = max(1, min(limit, 1000))
    rows = session.exec(select(Event).where(*where).order_by(Event.id.desc()).limit(limit)).all()
    kinds = sorted(k for k in session.exec(select(Event.kind).where(Event.campaign_id == campaign.id)
                                           .distinct()).all() if k)
    return {"events": [event_dict(e) for e in rows], "kinds": kinds,
            "filters": {"kind": kind, "entity": entity, "entity_id": entity_id, "actor": actor},
            "next_before": rows[-1].id if len(rows) == limit else None}


def recent_events(session: Session, campaign: Campaign | None, limit: int = 15) -> list[dict[str, Any]]:
    """The newest events, newest first (the live sidebar starts from these on every page)."""
    if campaign is None:
        return []
    return [event_dict(e) for e in session.exec(
        select(Event).where(Event.campaign_id == campaign.id).order_by(Event.id.desc()).limit(limit)).all()]


def last_event_id(session: Session, campaign: Campaign | None) -> int:
    if campaign is None:
        return 0
    return int(session.exec(select(func.coalesce(func.max(Event.id), 0))
                            .where(Event.campaign_id == campaign.id)).one())
