"""Targets and the recipe history of one target (every recipe tried, replaced and why).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from ...store import (
    Campaign,
    Experiment,
    Recipe,
    Target,
)
from .proposals import latest_predictions, target_dict
from .rows import MAX_LIST, NotFound, experiment_dict, recipe_dict


def targets(session: Session, campaign: Campaign | None, *, limit: int = 200, offset: int = 0) -> dict[str, Any]:
    if campaign is None:
        return {"total": 0, "targets": []}
    where = Target.campaign_id == campaign.id
    total = session.exec(select(func.count()).select_from(Target).where(where)).one()
    rows = session.exec(select(Target).where(where).order_by(Target.id.desc())
                        .limit(min(limit, MAX_LIST)).offset(offset)).all()
    ids = [t.id for t in rows]
    n_exp: dict[int, int] = {}
    if ids:
        n_exp = dict(session.exec(select(Experiment.target_id, func.count()).where(
            Experiment.target_id.in_(ids)).group_by(Experiment.target_id)).all())
    return {"total": int(total), "limit": limit, "offset": offset,
            "targets": [target_dict(t) | {"experiments": int(n_exp.get(t.id, 0))} for t in rows]}


def recipe_history(session: Session, campaign: Campaign | None, target_id: int) -> dict[str, Any]:
    """All recipes of a target in the order they were proposed: which replaced which, why, and how it went."""
    target = session.get(Target, target_id)
    if campaign is None or target is None or target.campaign_id != campaign.id:
        raise NotFound(f"no target with id {target_id} in this campaign")
    recipes = session.exec(select(Recipe).where(Recipe.target_id == target_id).order_by(Recipe.id)).all()
    exps = session.exec(select(Experiment).where(Experiment.target_id == target_id).order_by(Experiment.id)).all()
    by_recipe: dict[int, list[dict]] = defaultdict(list)
    for e in exps:
        by_recipe[e.recipe_id].append(experiment_dict(e, target.formula))
    replaced_by: dict[int, list[int]] = defaultdict(list)
    for r in recipes:
        if r.replaces_recipe_id is not None:
            replaced_by[r.replaces_recipe_id].append(r.id)
    preds = latest_predictions(session, [target.candidate_id] if target.candidate_id else [])
    return {
        "target": target_dict(target, preds.get(target.candidate_id or -1)),
        "recipes": [recipe_dict(r, target.formula) | {"experiments": by_recipe.get(r.id, []),
                                                      "replaced_by": replaced_by.get(r.id, [])}
                    for r in recipes],
    }
