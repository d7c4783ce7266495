"""Write actions a researcher can take from the web app: approve, reject, edit conditions.

Why approve and reject call ``controller.loop``'s control functions: approval from the browser
must be the very same state change as ``synthloop approve ID`` (``proposed → approved`` with its
event row in one transaction, via ``Store.transition``), so the closed loop cannot tell where an
approval came from except by the ``actor`` recorded in the event log.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlmodel import select

from ..config import CampaignConfig
from ..store import Experiment, ExperimentState, Recipe, Store, Target, utcnow
from .queries import NotFound, experiment_dict, recipe_dict


class Conflict(RuntimeError):
    """The action is legal in general but not in the row's current state (HTTP 409)."""


class ApproveRequest(BaseModel):
    """Body of an approval (optional): who approves and why, for the event log."""

    user: str | None = Field(None, max_length=60, description="name recorded as actor web:NAME")
    comment: str | None = Field(None, max_length=500)


class RejectRequest(BaseModel):
    user: str | None = Field(None, max_length=60, description="name recorded as actor web:NAME")
    reason: str = Field("rejected in the web app", min_length=1, max_length=500)


class ConditionsEdit(BaseModel):
    """New heating conditions for one segment of a proposed recipe's profile."""

    segment: int = Field(-1, description="index into the heating profile; -1 = the last (main) segment")
    setpoint_c: float | None = Field(None, description="new setpoint temperature, °C")
    dwell_min: float | None = Field(None, gt=0, le=14 * 24 * 60, description="new dwell time, minutes")
    user: str | None = Field(None, max_length=60)


def actor_name(user: str | None) -> str:
    clean = "".join(ch for ch in (user or "").strip() if ch.isalnum() or ch in "._-@")[:60]
    return f"web:{clean or 'user'}"


def approve(store: Store, campaign_name: str, experiment_id: int, body: ApproveRequest) -> dict[str, Any]:
    """``proposed → approved`` by the very function ``synthloop approve ID`` calls, actor ``web:NAME``."""
    from ..loop import approve as loop_approve

    exp = loop_approve(store, campaign_name, experiment_id, actor=actor_name(body.user))
    return experiment_dict(exp)


def reject(store: Store, campaign_name: str, experiment_id: int, body: RejectRequest) -> dict[str, Any]:
    """``proposed|approved → cancelled`` with the reason, by the function ``synthloop reject`` calls:
    not yet started, so no instrument time is lost, and the loop never runs a cancelled experiment."""
    from ..loop import reject as loop_reject

    exp = loop_reject(store, campaign_name, experiment_id, actor=actor_name(body.user), reason=body.reason)
    return experiment_dict(exp)


class CampaignAction(BaseModel):
    user: str | None = Field(None, max_length=60, description="name recorded as actor web:NAME")


def campaign_control(store: Store, campaign_name: str, action: str, body: CampaignAction) -> dict[str, Any]:
    """Pause, resume or stop the running campaign — ``synthloop pause|resume|stop`` — as ``web:NAME``."""
    from .. import loop

    functions = {"pause": loop.pause, "resume": loop.resume, "stop": loop.stop}
    if action not in functions:
        raise ValueError(f"unknown campaign action {action!r}; one of {', '.join(functions)}")
    camp = functions[action](store, campaign_name, actor=actor_name(body.user))
    return {"campaign": camp.name, "status": camp.status, "stop_reason": camp.stop_reason}


def edit_conditions(store: Store, campaign_id: int, cfg: CampaignConfig, recipe_id: int,
                    body: ConditionsEdit) -> dict[str, Any]:
    """Change setpoint and/or dwell of one heating segment of a recipe that has not run yet.

    Refused unless every experiment of the recipe is still ``proposed`` (a recipe already sent
    to a furnace is history and must not be rewritten). The old and new values go into the
    event log and ``details["edits"]``, so nothing the planner proposed is lost.
    """
    if body.setpoint_c is None and body.dwell_min is None:
        raise ValueError("give setpoint_c and/or dwell_min to change")
    rc = cfg.recipes
    if body.setpoint_c is not None and not rc.min_temperature_c <= body.setpoint_c <= rc.max_temperature_c:
        raise ValueError(f"setpoint_c {body.setpoint_c} is outside the campaign's window "
                         f"[{rc.min_temperature_c}, {rc.max_temperature_c}] °C (recipes.min/max_temperature_c)")
    actor = actor_name(body.user)
    with store.session() as s:
        recipe = s.get(Recipe, recipe_id)
        target = s.get(Target, recipe.target_id) if recipe else None
        if recipe is None or target is None or target.campaign_id != campaign_id:
            raise NotFound(f"no recipe with id {recipe_id} in this campaign")
        states = s.exec(select(Experiment.state).where(Experiment.recipe_id == recipe_id)).all()
        if not states:
            raise Conflict(f"recipe {recipe_id} has no experiment; only a proposed experiment's recipe can be edited")
        if any(st != ExperimentState.PROPOSED.value for st in states):
            raise Conflict(f"recipe {recipe_id} has experiments in states {sorted(set(states))}; "
                           "only recipes whose experiments are all 'proposed' can be edited")
        profile = [dict(seg) for seg in (recipe.profile or [])]
        if not profile:
            raise Conflict(f"recipe {recipe_id} has no heating profile to edit")
        index = body.segment if body.segment >= 0 else len(profile) + body.segment
        if not 0 <= index < len(profile):
            raise ValueError(f"segment {body.segment} does not exist: the profile has {len(profile)} segment(s)")
        old = dict(profile[index])
        if body.setpoint_c is not None:
            profile[index]["setpoint_c"] = float(body.setpoint_c)
        if body.dwell_min is not None:
            profile[index]["dwell_min"] = float(body.dwell_min)
        details = dict(recipe.details or {})
        details["edits"] = [*details.get("edits", []),
                            {"segment": index, "old": old, "new": profile[index], "actor": actor,
                             "at": utcnow().isoformat(timespec="seconds")}]
        recipe.profile = profile
        details.setdefault("rationale_planner", recipe.rationale or "")
        recipe.rationale = rationale_after_edit(details["rationale_planner"], details["edits"])
        recipe.details = details
        s.add(recipe)
        Store.log(s, "recipe.edited", campaign_id=campaign_id, entity="recipe", entity_id=recipe_id,
                  actor=actor, message=f"segment {index}: {old} -> {profile[index]}",
                  data={"segment": index, "old": old, "new": profile[index]})
        s.flush()
        return recipe_dict(recipe, target.formula)


def _fmt_value(v: Any) -> str:
    return f"{float(v):g}"


def rationale_after_edit(planner_text: str, edits: list[dict[str, Any]]) -> str:
    """The planner's rationale with every edited setpoint or dwell rewritten to its current value,
    and one sentence saying who changed what (the planner's own text stays in ``details``).

    Why rewrite rather than append only: a reader of "fired at 950 °C" beside a 975 °C profile
    cannot tell which one the furnace will get.
    """
    import re

    text = planner_text
    changes: list[str] = []
    first: dict[tuple[int, str], Any] = {}
    last: dict[tuple[int, str], Any] = {}
    for e in edits:
        for key in ("setpoint_c", "dwell_min"):
            k = (int(e.get("segment", 0)), key)
            first.setdefault(k, (e.get("old") or {}).get(key))
            last[k] = ((e.get("new") or {}).get(key), e.get("actor"))
    for (segment, key), old in first.items():
        new, actor = last[(segment, key)]
        if old is None or new is None or float(old) == float(new):
            continue
        if key == "setpoint_c":
            pattern = rf"(?<![\d.]){re.escape(_fmt_value(old))}(?:\.0+)?(\s*°\s*C|\s*C\b|\s*degC)"
            text = re.sub(pattern, lambda m, n=new: _fmt_value(n) + m.group(1), text)
            changes.append(f"setpoint {_fmt_value(old)} → {_fmt_value(new)} °C")
        else:
            pattern = rf"(?<![\d.]){re.escape(_fmt_value(old))}(?:\.0+)?(\s*min\b)"
            text = re.sub(pattern, lambda m, n=new: _fmt_value(n) + m.group(1), text)
            hours_old, hours_new = float(old) / 60, float(new) / 60
            text = re.sub(rf"(?<![\d.]){re.escape(f'{hours_old:g}')}(\s*h\b)",
                          lambda m, n=hours_new: f"{n:g}" + m.group(1), text)
            changes.append(f"dwell {_fmt_value(old)} → {_fmt_value(new)} min")
        who = actor or "a person"
        changes[-1] += f" by {who}"
    if not changes:
        return planner_text
    note = "Conditions edited: " + "; ".join(changes) + "."
    return f"{text.rstrip(' .')}. {note}" if text.strip() else note
