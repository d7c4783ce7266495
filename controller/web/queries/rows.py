"""How one stored row reads on every page and in the API: finite floats, reaction text, recipe /
experiment / step / event dicts. Why one home: a page and its JSON twin must print the same thing.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from ...store import (
    Event,
    Experiment,
    ExperimentState,
    Recipe,
    StepCommand,
    StepState,
    iso,
)
from ..aggregates import TERMINAL_STEP_STATES

ACTIVE_STEP_STATES: tuple[str, ...] = (StepState.SENT.value, StepState.ACKED.value)
UNFINISHED_STEP_STATES = tuple(s.value for s in StepState if s.value not in TERMINAL_STEP_STATES)
MAX_LIST = 500  # rows a list page shows at most; the API pages with limit/offset


def state_values(states: frozenset[ExperimentState]) -> list[str]:
    """A state group of ``controller.store`` as the stored strings, for ``IN (...)``."""
    return sorted(s.value for s in states)


class NotFound(LookupError):
    """An id that names no row of this campaign; the app turns it into a 404 with this message."""


def finite(value: Any) -> float | None:
    """A finite float or None (JSON has no NaN; a NaN in the store must not break a page)."""
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _fmt_num(x: float) -> str:
    return f"{x:g}" if abs(x - round(x)) > 1e-9 else str(int(round(x)))


def reaction_text(recipe: Recipe, target_formula: str) -> str:
    """The balanced reaction a recipe stands for, as the planner recorded it or from its precursors.

    Why a fallback: the planner stores its full reaction in ``details``; recipes entered by
    hand (planner ``manual``) may only list precursors, and a researcher still wants to read
    "2 Li2CO3 + 4 Mn2O3 + O2 → 4 LiMn2O4"-like text rather than a JSON blob.
    """
    details = recipe.details or {}
    nested = details.get("recipe", {}).get("details", {}) if isinstance(details.get("recipe"), dict) else {}
    for source in (details, nested if isinstance(nested, dict) else {}):
        for key in ("reaction", "equation", "balanced_reaction"):
            value = source.get(key)
            if isinstance(value, dict):  # the recipe planner's Reaction.to_dict()
                value = value.get("equation")
            if isinstance(value, str) and value:
                return value
    parts = []
    for p in recipe.precursors or []:
        moles = finite(p.get("moles")) if isinstance(p, dict) else None
        formula = p.get("formula", "?") if isinstance(p, dict) else str(p)
        parts.append(f"{_fmt_num(moles)} {formula}" if moles not in (None, 1.0) else formula)
    return " + ".join(parts) + f" → {target_formula}" if parts else f"? → {target_formula}"


def peak_temperature(profile: list | None) -> float | None:
    return max((finite(seg.get("setpoint_c")) or 0.0 for seg in profile or [] if isinstance(seg, dict)), default=None)


def recipe_dict(recipe: Recipe, target_formula: str) -> dict[str, Any]:
    profile = recipe.profile or []
    peak = peak_temperature(profile)
    dwell = sum(finite(seg.get("dwell_min")) or 0.0 for seg in profile if isinstance(seg, dict))
    return {
        "id": recipe.id,
        "target_id": recipe.target_id,
        "ordinal": recipe.ordinal,
        "reaction": reaction_text(recipe, target_formula),
        "precursors": recipe.precursors or [],
        "profile": profile,
        "max_temperature_c": peak,
        "total_dwell_min": dwell if profile else None,
        "atmosphere": recipe.atmosphere,
        "planner": recipe.planner,
        "rationale": recipe.rationale,
        "driving_force_mev_per_atom": finite(recipe.driving_force_mev_per_atom),
        "predicted_yield": finite(recipe.predicted_yield),
        "replaces_recipe_id": recipe.replaces_recipe_id,
        "remaining_driving_force_mev_per_atom": finite((recipe.details or {}).get("remaining_driving_force_mev_per_atom")),
        "predicted_intermediates": (recipe.details or {}).get("predicted_intermediates") or [],
        "details": recipe.details or {},
        "created_at": iso(recipe.created_at),
    }


def experiment_dict(exp: Experiment, formula: str | None = None) -> dict[str, Any]:
    return {
        "id": exp.id,
        "target_id": exp.target_id,
        "target": formula,
        "recipe_id": exp.recipe_id,
        "sample_id": exp.sample_id,
        "state": exp.state,
        "target_yield": finite(exp.target_yield),
        "reason": exp.reason,
        "failure_kind": exp.failure_kind,
        "attempt": exp.attempt,
        "created_at": iso(exp.created_at),
        "updated_at": iso(exp.updated_at),
    }


def step_dict(step: StepCommand) -> dict[str, Any]:
    result = step.result or {}
    return {
        "id": step.id,
        "command_id": step.command_id,
        "experiment_id": step.experiment_id,
        "step": step.step,
        "sequence": step.sequence,
        "attempt": step.attempt,
        "state": step.state,
        "driver": step.driver,
        "error": step.error,
        "sim_time_min": finite(result.get("sim_time_min")) if isinstance(result, dict) else None,
        "deadline_at": iso(step.deadline_at),
        "created_at": iso(step.created_at),
        "updated_at": iso(step.updated_at),
    }


def event_dict(ev: Event) -> dict[str, Any]:
    return {
        "id": ev.id,
        "ts": iso(ev.ts),
        "kind": ev.kind,
        "entity": ev.entity,
        "entity_id": ev.entity_id,
        "from_state": ev.from_state,
        "to_state": ev.to_state,
        "actor": ev.actor,
        "message": ev.message,
        "data": ev.data,
    }


def campaign_experiment(session: Session, campaign_id: int, experiment_id: int) -> Experiment:
    exp = session.get(Experiment, experiment_id)
    if exp is None or exp.campaign_id != campaign_id:
        raise NotFound(f"no experiment with id {experiment_id} in this campaign")
    return exp


def aware(ts: datetime) -> datetime:
    """A stored timestamp as UTC-aware (SQLite returns naive datetimes, PostgreSQL aware ones)."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
