"""Read model of the web app: what each page and API endpoint shows, as plain JSON-able dicts.

Why a separate read model: the pages and the JSON API must show the same numbers, and the
queries must stay fast on a store with 10,000+ experiments while the loop writes to it. Every
function here runs a handful of indexed SQL queries (aggregates in SQL, lists paged and
capped) and never loads XRD blobs or model checkpoints unless one experiment or model is asked for.
"""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from collections import defaultdict
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import and_, exists, func, or_
from sqlmodel import Session, select

from ..config import CampaignConfig
from ..store import (
    IN_FLIGHT,
    VERDICT_STATES,
    Campaign,
    Event,
    Experiment,
    ExperimentState,
    Measurement,
    ModelVersion,
    PhaseAnalysisRow,
    Prediction,
    Recipe,
    StepCommand,
    StepState,
    Target,
    TargetState,
    iso,
    unpack_array,
)
from .aggregates import TERMINAL_STEP_STATES, DriverTotals, StepTotals

ACTIVE_STEP_STATES: tuple[str, ...] = (StepState.SENT.value, StepState.ACKED.value)
UNFINISHED_STEP_STATES = tuple(s.value for s in StepState if s.value not in TERMINAL_STEP_STATES)
MAX_LIST = 500  # rows a list page shows at most; the API pages with limit/offset


def _values(states: frozenset[ExperimentState]) -> list[str]:
    """A state group of ``controller.store`` as the stored strings, for ``IN (...)``."""
    return sorted(s.value for s in states)


class NotFound(LookupError):
    """An id that names no row of this campaign; the app turns it into a 404 with this message."""


# --------------------------------------------------------------------------- helpers


def _f(value: Any) -> float | None:
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
        moles = _f(p.get("moles")) if isinstance(p, dict) else None
        formula = p.get("formula", "?") if isinstance(p, dict) else str(p)
        parts.append(f"{_fmt_num(moles)} {formula}" if moles not in (None, 1.0) else formula)
    return " + ".join(parts) + f" → {target_formula}" if parts else f"? → {target_formula}"


def _peak_temperature(profile: list | None) -> float | None:
    return max((_f(seg.get("setpoint_c")) or 0.0 for seg in profile or [] if isinstance(seg, dict)), default=None)


def recipe_dict(recipe: Recipe, target_formula: str) -> dict[str, Any]:
    profile = recipe.profile or []
    peak = _peak_temperature(profile)
    dwell = sum(_f(seg.get("dwell_min")) or 0.0 for seg in profile if isinstance(seg, dict))
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
        "driving_force_mev_per_atom": _f(recipe.driving_force_mev_per_atom),
        "predicted_yield": _f(recipe.predicted_yield),
        "replaces_recipe_id": recipe.replaces_recipe_id,
        "remaining_driving_force_mev_per_atom": _f((recipe.details or {}).get("remaining_driving_force_mev_per_atom")),
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
        "target_yield": _f(exp.target_yield),
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
        "sim_time_min": _f(result.get("sim_time_min")) if isinstance(result, dict) else None,
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


def _campaign_experiment(session: Session, campaign_id: int, experiment_id: int) -> Experiment:
    exp = session.get(Experiment, experiment_id)
    if exp is None or exp.campaign_id != campaign_id:
        raise NotFound(f"no experiment with id {experiment_id} in this campaign")
    return exp


# --------------------------------------------------------------------------- overview


def overview(session: Session, campaign: Campaign | None, cfg: CampaignConfig,
             totals: StepTotals | None = None) -> dict[str, Any]:
    """Budget, targets made / attempted, success rates, lab time and what each instrument does."""
    budget = cfg.campaign.budget
    base: dict[str, Any] = {
        "campaign": cfg.campaign.name,
        "description": cfg.campaign.description,
        "approval_mode": cfg.campaign.approval_mode,
        "budget": {"max_experiments": budget.max_experiments, "max_lab_days": budget.max_lab_days,
                   "max_targets": budget.max_targets},
    }
    if campaign is None:
        return base | {"status": "not started", "experiments": {}, "experiments_total": 0,
                       "budget_used": 0, "budget_fraction": 0.0, "targets": {}, "targets_attempted": 0,
                       "targets_made": 0, "target_success_rate": None, "recipe_success_rate": None,
                       "lab_time": {"instrument_hours": 0.0, "wall_hours": None},
                       "instruments": [], "waiting_steps": 0, "recent_events": []}
    cid = campaign.id
    counts = {
        state: int(n)
        for state, n in session.exec(
            select(Experiment.state, func.count()).where(Experiment.campaign_id == cid).group_by(Experiment.state)
        ).all()
    }
    total = sum(counts.values())
    # a cancelled experiment consumed budget only if some instrument command was written for it
    cancelled_used = session.exec(
        select(func.count()).select_from(Experiment).where(
            Experiment.campaign_id == cid,
            Experiment.state == ExperimentState.CANCELLED.value,
            exists().where(StepCommand.experiment_id == Experiment.id),
        )
    ).one()
    used = total - counts.get("proposed", 0) - counts.get("cancelled", 0) + int(cancelled_used)

    target_counts = {
        state: int(n)
        for state, n in session.exec(
            select(Target.state, func.count()).where(Target.campaign_id == cid).group_by(Target.state)
        ).all()
    }
    attempted = session.exec(
        select(func.count(func.distinct(Experiment.target_id))).where(
            Experiment.campaign_id == cid,
            Experiment.state.notin_((ExperimentState.PROPOSED.value, ExperimentState.CANCELLED.value)),
        )
    ).one()
    made = target_counts.get(TargetState.MADE.value, 0)
    succeeded, failed = counts.get("succeeded", 0), counts.get("failed", 0)

    drivers, sim_minutes = instruments(session, cid, totals)
    # first and last event by id (indexed) rather than min/max over the unindexed timestamp
    first_ts = session.exec(select(Event.ts).where(Event.campaign_id == cid).order_by(Event.id).limit(1)).first()
    last_ts = session.exec(select(Event.ts).where(Event.campaign_id == cid).order_by(Event.id.desc()).limit(1)).first()

    return base | {
        "status": campaign.status,
        "stop_reason": campaign.stop_reason,
        "seed": campaign.seed,
        "created_at": iso(campaign.created_at),
        "experiments": counts,
        "experiments_total": total,
        "budget_used": used,
        "budget_fraction": used / budget.max_experiments,
        "targets": target_counts,
        "targets_total": sum(target_counts.values()),
        "targets_attempted": int(attempted),
        "targets_made": made,
        "target_success_rate": made / attempted if attempted else None,
        "recipe_success_rate": succeeded / (succeeded + failed) if succeeded + failed else None,
        "lab_time": {
            "instrument_hours": sim_minutes / 60.0,
            "wall_hours": ((_aware(last_ts) - _aware(first_ts)).total_seconds() / 3600.0
                           if first_ts and last_ts else None),
        },
        "targets_open": target_counts.get(TargetState.ACTIVE.value, 0),
        "yield_threshold": cfg.recipes.yield_threshold,
        "yields": yield_series(session, cid),
        "model_error": model_error_series(session, cid),
        "instruments": drivers,
        "waiting_steps": int(session.exec(
            select(func.count()).select_from(StepCommand)
            .join(Experiment, Experiment.id == StepCommand.experiment_id)
            .where(Experiment.campaign_id == cid, StepCommand.state == StepState.PENDING.value)
        ).one()),
        "recent_events": [event_dict(e) for e in session.exec(
            select(Event).where(Event.campaign_id == cid).order_by(Event.id.desc()).limit(15)
        ).all()],
    }


def yield_series(session: Session, campaign_id: int, limit: int = 500) -> list[dict[str, Any]]:
    """Measured target yields in the order experiments were proposed (the newest ``limit``)."""
    rows = session.exec(
        select(Experiment.id, Experiment.state, Experiment.target_yield, Target.formula)
        .join(Target, Target.id == Experiment.target_id)
        .where(Experiment.campaign_id == campaign_id, Experiment.target_yield.is_not(None))
        .order_by(Experiment.id.desc()).limit(limit)
    ).all()
    return [{"experiment_id": i, "state": st, "yield": _f(y), "target": f} for i, st, y, f in reversed(rows)
            if _f(y) is not None]


def model_error_series(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    """Per model version, the yield error on results it had not seen (``yield_mae_previous_model``)."""
    rows = session.exec(select(ModelVersion.version, ModelVersion.kind, ModelVersion.metrics)
                        .where(ModelVersion.campaign_id == campaign_id).order_by(ModelVersion.version)).all()
    out = []
    for version, kind, metrics in rows:
        mae = _f((metrics or {}).get("yield_mae_previous_model")) if isinstance(metrics, dict) else None
        if mae is not None:
            out.append({"version": version, "kind": kind, "mae": mae})
    return out


def _aware(ts: datetime) -> datetime:
    from datetime import UTC

    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def instruments(session: Session, campaign_id: int,
                totals: StepTotals | None = None) -> tuple[list[dict[str, Any]], float]:
    """Every driver the campaign has used, what it executes right now, and the instrument minutes.

    Derived from the step-command rows (sent/acked = in the instrument's hands), because the
    store is the one record both a live run and a finished campaign share. Finished steps come
    from the incrementally maintained :class:`StepTotals`; unfinished ones (few, and found
    through the step-state index) are read live.
    """
    finished = (totals or StepTotals()).get(session, campaign_id)
    # Two small queries instead of a join: with a join SQLite's planner walks every experiment of
    # the campaign (10,000+) instead of the few unfinished steps the step-state index finds.
    steps = session.exec(  # plain columns: no ORM objects, no JSON parsing of payloads
        select(StepCommand.step, StepCommand.state, StepCommand.driver, StepCommand.experiment_id,
               StepCommand.command_id, StepCommand.updated_at)
        .where(StepCommand.state.in_(UNFINISHED_STEP_STATES)).order_by(StepCommand.updated_at)
    ).all()
    samples: dict[int, str] = {}
    exp_ids = sorted({row[3] for row in steps})
    for i in range(0, len(exp_ids), 900):  # stay below SQLite's bound-parameter limit
        samples.update(session.exec(select(Experiment.id, Experiment.sample_id).where(
            Experiment.id.in_(exp_ids[i:i + 900]), Experiment.campaign_id == campaign_id)).all())
    unfinished = [(*row, samples[row[3]]) for row in steps if row[3] in samples]
    by_driver: dict[str, DriverTotals] = {}
    sim_minutes = 0.0
    for driver, t in finished.drivers.items():
        sim_minutes += t.minutes
        if driver is not None:
            by_driver[driver] = DriverTotals(t.commands, t.failed, t.minutes, t.last_activity)
    busy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for step, state, driver, experiment_id, command_id, updated_at, sample_id in unfinished:
        if driver is None and state not in ACTIVE_STEP_STATES:
            continue  # written, not yet sent: no instrument holds it
        name = driver or "(unassigned)"
        by_driver.setdefault(name, DriverTotals()).add(commands=1, failed=0, minutes=0.0, last=updated_at)
        if state in ACTIVE_STEP_STATES:
            busy[name].append({"step": step, "state": state, "experiment_id": experiment_id,
                               "sample_id": sample_id, "command_id": command_id, "since": iso(updated_at)})
    out = [{"driver": name, "commands": t.commands, "failed": t.failed, "instrument_hours": t.minutes / 60.0,
            "last_activity": iso(t.last_activity), "busy": busy.get(name, []),
            "status": "busy" if busy.get(name) else "idle"} for name, t in by_driver.items()]
    return sorted(out, key=lambda d: d["driver"]), sim_minutes


# --------------------------------------------------------------------------- proposals


def _latest_predictions(session: Session, candidate_ids: list[int]) -> dict[int, dict[str, dict]]:
    """Per candidate, the newest model version's prediction for each objective."""
    if not candidate_ids:
        return {}
    rows = session.exec(
        select(Prediction.candidate_id, Prediction.objective, Prediction.mean, Prediction.std,
               ModelVersion.version, ModelVersion.kind)
        .join(ModelVersion, ModelVersion.id == Prediction.model_version_id)
        .where(Prediction.candidate_id.in_(candidate_ids))
        .order_by(ModelVersion.version)
    ).all()
    out: dict[int, dict[str, dict]] = defaultdict(dict)
    for cand, objective, mean, std, version, kind in rows:  # ascending: newest version wins
        out[cand][objective] = {"mean": _f(mean), "std": _f(std), "model_version": version, "model_kind": kind}
    return out


def target_dict(target: Target, predictions: dict[str, dict] | None = None) -> dict[str, Any]:
    predicted = target.predicted or {}
    return {
        "id": target.id,
        "formula": target.formula,
        "candidate_id": target.candidate_id,
        "state": target.state,
        "reason": target.reason,
        "acquisition_value": _f(target.acquisition_value),
        "predicted": predicted,
        "predictions": predictions or {},
        "best_yield": _f(target.best_yield),
        "created_at": iso(target.created_at),
    }


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


ACQUISITION_MEANING = {
    "qlogei": "log of the expected improvement (qLogEI) of the objective over the best result so far: "
              "higher is better, each unit is a factor e; very negative = little expected gain",
    "qucb": "upper confidence bound (qUCB) of the objective: mean + √β·σ; higher is better",
    "thompson": "a posterior sample of the objective (Thompson sampling): higher is better",
    "greedy": "the objective's predicted mean: higher is better",
    "random": "no value: chosen at random",
}

OBJECTIVE_MEANING = {
    "stable_and_makeable": "P(stable) × P(yield ≥ threshold)",
    "stability": "minus the decomposition energy above the known hull",
    "expected_yield": "the predicted yield",
}


def judge(predicted: dict[str, Any], cfg: CampaignConfig | None) -> dict[str, Any]:
    """A target's prediction in units a researcher can judge: energies in meV/atom with σ, the
    yield in % with σ kept on the 0-100 % scale, probabilities apart from the yield, and which
    factor of the objective decides the ranking."""
    acq = cfg.acquisition if cfg is not None else None
    threshold_ev = acq.stability_threshold_ev if acq is not None else 0.05
    yield_thr = cfg.recipes.yield_threshold if cfg is not None else 0.5
    out: dict[str, Any] = {"rows": [], "p_stable": None, "p_yield": None, "deciding": None,
                           "acquisition_meaning": ACQUISITION_MEANING.get(acq.strategy if acq else "", ""),
                           "objective": OBJECTIVE_MEANING.get(acq.objective if acq else "", ""),
                           "strategy": acq.strategy if acq else None, "yield_threshold": yield_thr}
    e, e_std = _f(predicted.get("e_decomp")), _f(predicted.get("e_decomp_std"))
    if e is not None:
        p_st = _phi((threshold_ev - e) / e_std) if e_std else float(e <= threshold_ev)
        out["p_stable"] = p_st
        out["rows"].append({"key": "e_decomp", "label": "energy above the known hull",
                            "value": f"{1000 * e:+.0f} meV/atom" + (f" ± {1000 * e_std:.0f}" if e_std else ""),
                            "note": f"P(stable) {100 * p_st:.0f} % (stable = below {1000 * threshold_ev:.0f} meV/atom)"})
    ef, ef_std = _f(predicted.get("e_form")), _f(predicted.get("e_form_std"))
    if ef is not None:
        out["rows"].append({"key": "e_form", "label": "formation energy",
                            "value": f"{ef:.3f} eV/atom" + (f" ± {ef_std:.3f}" if ef_std else ""), "note": ""})
    y, y_std = _f(predicted.get("yield")), _f(predicted.get("yield_std"))
    if y is not None:
        y = min(max(y, 0.0), 1.0)
        if y_std is not None and y_std >= 0.5:
            spread, note_extra = "σ > 50 % (the yield model has not learnt this yet)", True
        else:
            spread, note_extra = (f"± {100 * y_std:.0f} %" if y_std else ""), False
        p_y = _phi((y - yield_thr) / y_std) if y_std else float(y >= yield_thr)
        out["p_yield"] = None if note_extra else p_y
        out["rows"].append({"key": "yield", "label": "target yield (model)",
                            "value": f"{100 * y:.0f} % {spread}".strip(),
                            "note": (f"P(yield ≥ {100 * yield_thr:.0f} %) {100 * p_y:.0f} %" if not note_extra
                                     else "uninformative: the ranking rests on stability")})
    p_st, p_y = out["p_stable"], out["p_yield"]
    if acq is not None and acq.objective == "stable_and_makeable" and p_st is not None:
        if p_y is None:
            out["deciding"] = f"P(stable) {100 * p_st:.0f} % (the yield does not count yet)"
        else:
            lower = "P(stable)" if p_st <= p_y else f"P(yield ≥ {100 * yield_thr:.0f} %)"
            out["deciding"] = (f"P(stable) {100 * p_st:.0f} % × P(yield ≥ {100 * yield_thr:.0f} %) "
                               f"{100 * p_y:.0f} % = {100 * p_st * p_y:.0f} %; the smaller factor, {lower}, decides")
    elif acq is not None and acq.objective == "stability" and e is not None:
        out["deciding"] = f"decomposition energy {1000 * e:+.0f} meV/atom"
    elif acq is not None and acq.objective == "expected_yield" and y is not None:
        out["deciding"] = f"predicted yield {100 * y:.0f} %"
    return out


def proposals(session: Session, campaign: Campaign | None, *, limit: int = 200, offset: int = 0,
              cfg: CampaignConfig | None = None) -> dict[str, Any]:
    """Proposed experiments grouped by target (highest acquisition value first) with their recipes."""
    if campaign is None:
        return {"total": 0, "targets": [], "limit": limit, "offset": offset}
    cid = campaign.id
    where = and_(Experiment.campaign_id == cid, Experiment.state == ExperimentState.PROPOSED.value)
    total = session.exec(select(func.count()).select_from(Experiment).where(where)).one()
    rows = session.exec(
        select(Experiment, Recipe, Target)
        .join(Recipe, Recipe.id == Experiment.recipe_id)
        .join(Target, Target.id == Experiment.target_id)
        .where(where)
        .order_by(Target.acquisition_value.desc().nulls_last(), Target.id, Recipe.ordinal, Experiment.id)
        .limit(min(limit, MAX_LIST)).offset(offset)
    ).all()
    preds = _latest_predictions(session, sorted({t.candidate_id for _, _, t in rows if t.candidate_id}))
    groups: dict[int, dict[str, Any]] = {}
    for exp, recipe, target in rows:
        group = groups.get(target.id)
        if group is None:
            group = groups[target.id] = target_dict(target, preds.get(target.candidate_id or -1)) | {"proposals": []}
            group["judged"] = judge(target.predicted or {}, cfg)
            group["why"] = group["judged"]["deciding"] or ""
        group["proposals"].append({"experiment": experiment_dict(exp, target.formula),
                                   "recipe": recipe_dict(recipe, target.formula)})
    return {"total": int(total), "limit": limit, "offset": offset, "targets": list(groups.values())}


# --------------------------------------------------------------------------- experiments


def in_flight(session: Session, campaign: Campaign | None, *, limit: int = 200) -> dict[str, Any]:
    """Approved-but-unfinished experiments with the step each one is at."""
    if campaign is None:
        return {"total": 0, "experiments": []}
    where = and_(Experiment.campaign_id == campaign.id, Experiment.state.in_(_values(IN_FLIGHT)))
    total = session.exec(select(func.count()).select_from(Experiment).where(where)).one()
    rows = session.exec(
        select(Experiment, Target.formula, Recipe.profile)
        .join(Target, Target.id == Experiment.target_id)
        .join(Recipe, Recipe.id == Experiment.recipe_id)
        .where(where).order_by(Experiment.updated_at.desc(), Experiment.id.desc())
        .limit(min(limit, MAX_LIST))
    ).all()
    ids = [exp.id for exp, _, _ in rows]
    current: dict[int, StepCommand] = {}
    if ids:
        for step in session.exec(
            select(StepCommand).where(StepCommand.experiment_id.in_(ids))
            .order_by(StepCommand.sequence, StepCommand.attempt, StepCommand.id)
        ).all():
            current[step.experiment_id] = step  # the last one in order is where it is now
    out = []
    for exp, formula, profile in rows:
        step = current.get(exp.id)
        out.append(experiment_dict(exp, formula) | {
            "current_step": step_dict(step) if step else None,
            "max_temperature_c": _peak_temperature(profile),
        })
    return {"total": int(total), "experiments": out}


def results(session: Session, campaign: Campaign | None, *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """Finished experiments, newest first, with yield and reason (paged)."""
    if campaign is None:
        return {"total": 0, "limit": limit, "offset": offset, "experiments": []}
    where = and_(Experiment.campaign_id == campaign.id,
                 Experiment.state.in_(_values(VERDICT_STATES)))
    total = session.exec(select(func.count()).select_from(Experiment).where(where)).one()
    rows = session.exec(
        select(Experiment, Target.formula).join(Target, Target.id == Experiment.target_id)
        .where(where).order_by(Experiment.updated_at.desc(), Experiment.id.desc())
        .limit(min(limit, MAX_LIST)).offset(offset)
    ).all()
    rwp: dict[int, float | None] = {}
    ids = [exp.id for exp, _ in rows]
    if ids:  # the newest analysis' Rwp per experiment (a column: no JSON details loaded)
        for eid, value in session.exec(select(PhaseAnalysisRow.experiment_id, PhaseAnalysisRow.rwp)
                                       .where(PhaseAnalysisRow.experiment_id.in_(ids))
                                       .order_by(PhaseAnalysisRow.id)).all():
            rwp[eid] = _f(value)
    return {"total": int(total), "limit": limit, "offset": offset,
            "experiments": [experiment_dict(exp, formula) | {"rwp": rwp.get(exp.id),
                                                             "fit_warning": fit_warning(rwp.get(exp.id), None)}
                            for exp, formula in rows]}


def _array_field(obj: Any) -> list[float] | None:
    """Fitted curves may be stored as a list of numbers or as a packed array (hex/bytes)."""
    if isinstance(obj, list) and obj and all(isinstance(v, int | float) for v in obj[:5]):
        return [float(v) for v in obj]
    if isinstance(obj, str):  # packed: hex ("534c4131..." = b"SLA1") or base64 (records.py writes base64)
        try:
            raw = bytes.fromhex(obj) if obj.startswith("534c41") else base64.b64decode(obj, validate=True)
            return unpack_array(raw).tolist()
        except (ValueError, binascii.Error, zlib.error):
            return None
    return None


# a fit this poor (or this much intensity no phase explains) makes its weight fractions unreliable
POOR_RWP = 0.25
POOR_UNEXPLAINED = 0.10


def fit_warning(rwp: float | None, unexplained_fraction: float | None) -> str | None:
    """Why a yield should not be trusted at face value, or None for an acceptable fit."""
    problems = []
    if rwp is not None and rwp > POOR_RWP:
        problems.append(f"poor fit: Rwp {rwp:.2f} > {POOR_RWP:.2f}")
    if unexplained_fraction is not None and unexplained_fraction > POOR_UNEXPLAINED:
        problems.append(f"{100 * unexplained_fraction:.0f} % of the intensity unexplained by any phase")
    return "; ".join(problems) or None


def fitted_curves(analysis: PhaseAnalysisRow | None, n_points: int) -> dict[str, Any]:
    """Pull the fitted pattern (and per-phase contributions) out of an analysis' details, if stored.

    Recognised: ``details["curves"]`` as written by ``controller.xrd`` ``PhaseAnalysis.to_dict(
    include_curves=True)`` (``two_theta``, ``observed``, ``calculated``, ``phase:NAME``);
    ``details["fitted"|"calculated"|"fit"]`` as a number list the length of the observed
    pattern (or ``{"intensities": [...]}``) with ``details["phase_patterns"]`` as ``{name: [...]}``.
    Anything else is ignored: the plot then shows the observed pattern only.
    """
    if analysis is None or not isinstance(analysis.details, dict):
        return {}
    details = analysis.details
    curves = details.get("curves")
    if isinstance(curves, dict):  # controller.xrd PhaseAnalysis.to_dict(include_curves=True)
        x, obs, calc = (_array_field(curves.get(k)) for k in ("two_theta", "observed", "calculated"))
        if x and obs and calc and len(x) == len(obs) == len(calc):
            phases = {k.removeprefix("phase:"): arr for k, v in curves.items()
                      if k.startswith("phase:") and (arr := _array_field(v)) is not None and len(arr) == len(x)}
            out = {"two_theta": x, "observed": obs, "fitted": calc, "phases": phases}
            background = _array_field(curves.get("background"))
            if background is not None and len(background) == len(x):
                out["background"] = background
            return out
    out: dict[str, Any] = {}
    for key in ("fitted", "calculated", "fit", "y_calc"):
        value = details.get(key)
        if isinstance(value, dict):
            value = value.get("intensities") or value.get("y")
        arr = _array_field(value)
        if arr is not None and len(arr) == n_points:
            out["fitted"] = arr
            break
    phase_patterns = details.get("phase_patterns")
    if isinstance(phase_patterns, dict):
        out["phases"] = {name: arr for name, v in phase_patterns.items()
                         if (arr := _array_field(v)) is not None and len(arr) == n_points}
    return out


def phase_ticks(analysis: PhaseAnalysisRow | None) -> dict[str, list[float]]:
    """Reflection positions per phase (``phases[i]["peaks"]`` or ``details["peaks"][name]``)."""
    if analysis is None:
        return {}
    ticks: dict[str, list[float]] = {}
    for phase in analysis.phases or []:
        if isinstance(phase, dict) and isinstance(phase.get("peaks"), list):
            ticks[str(phase.get("name") or phase.get("formula"))] = [
                float(p) for p in phase["peaks"] if isinstance(p, int | float)]
    details = analysis.details if isinstance(analysis.details, dict) else {}
    peaks = details.get("peaks")
    if isinstance(peaks, dict):
        for name, values in peaks.items():
            if isinstance(values, list):
                ticks.setdefault(str(name), [float(p) for p in values if isinstance(p, int | float)])
    unexplained = details.get("unexplained_peaks")
    if isinstance(unexplained, list) and unexplained:  # peaks no candidate phase accounts for
        ticks["unexplained"] = [float(p) for p in unexplained if isinstance(p, int | float)]
    return ticks


def experiment_detail(session: Session, campaign: Campaign | None, experiment_id: int) -> dict[str, Any]:
    """One experiment: recipe, steps, measurements and phase analyses (the XRD arrays separately)."""
    if campaign is None:
        raise NotFound(f"no experiment with id {experiment_id}: the campaign has not started")
    exp = _campaign_experiment(session, campaign.id, experiment_id)
    target = session.get(Target, exp.target_id)
    recipe = session.get(Recipe, exp.recipe_id)
    formula = target.formula if target else None
    steps = session.exec(select(StepCommand).where(StepCommand.experiment_id == exp.id)
                         .order_by(StepCommand.sequence, StepCommand.attempt, StepCommand.id)).all()
    measurements = session.exec(
        select(Measurement.id, Measurement.kind, Measurement.n_points, Measurement.wavelength_angstrom,
               Measurement.source, Measurement.created_at)
        .where(Measurement.experiment_id == exp.id).order_by(Measurement.id)
    ).all()
    analyses = session.exec(select(PhaseAnalysisRow).where(PhaseAnalysisRow.experiment_id == exp.id)
                            .order_by(PhaseAnalysisRow.id)).all()
    return {
        "experiment": experiment_dict(exp, formula),
        "target": target_dict(target) if target else None,
        "recipe": recipe_dict(recipe, formula or "?") if recipe else None,
        "steps": [step_dict(s) for s in steps],
        "measurements": [{"id": m[0], "kind": m[1], "n_points": m[2], "wavelength_angstrom": m[3],
                          "source": m[4], "created_at": iso(m[5])} for m in measurements],
        "analyses": [{"id": a.id, "measurement_id": a.measurement_id, "phases": a.phases or [],
                      "rwp": _f(a.rwp), "target_yield": _f(a.target_yield), "method": a.method,
                      "method_version": a.method_version, "created_at": iso(a.created_at),
                      "fit_warning": _analysis_warning(a),
                      "target_yield_std": _f((a.details or {}).get("target_yield_std"))
                      if isinstance(a.details, dict) else None,
                      "target_yield_lower": _f((a.details or {}).get("target_yield_lower"))
                      if isinstance(a.details, dict) else None,
                      "unexplained_peaks": [round(float(p), 2) for p in (a.details or {}).get("unexplained_peaks", [])
                                            if isinstance(p, int | float)][:20]
                      if isinstance(a.details, dict) else []}
                     for a in analyses],
    }


def xrd_data(session: Session, campaign: Campaign | None, experiment_id: int) -> dict[str, Any]:
    """The newest XRD pattern of an experiment with its fit (if stored), difference and phase ticks."""
    if campaign is None:
        raise NotFound(f"no experiment with id {experiment_id}: the campaign has not started")
    exp = _campaign_experiment(session, campaign.id, experiment_id)
    m = session.exec(select(Measurement).where(Measurement.experiment_id == exp.id, Measurement.kind == "xrd")
                     .order_by(Measurement.id.desc()).limit(1)).first()
    if m is None:
        raise NotFound(f"experiment {experiment_id} has no XRD measurement yet (state {exp.state!r})")
    analysis = session.exec(select(PhaseAnalysisRow).where(PhaseAnalysisRow.measurement_id == m.id)
                            .order_by(PhaseAnalysisRow.id.desc()).limit(1)).first()
    two_theta, observed = unpack_array(m.two_theta), unpack_array(m.intensities)
    curves = fitted_curves(analysis, len(observed))
    fitted = curves.get("fitted")
    if "two_theta" in curves:  # the analysis fitted its own (e.g. trimmed) grid: plot that grid
        two_theta, observed = np.asarray(curves["two_theta"]), np.asarray(curves["observed"])
    return {
        "experiment_id": exp.id,
        "measurement_id": m.id,
        "wavelength_angstrom": m.wavelength_angstrom,
        "two_theta": two_theta.tolist(),
        "observed": observed.tolist(),
        "fitted": fitted,
        "difference": (observed - np.asarray(fitted)).tolist() if fitted is not None else None,
        "phase_patterns": curves.get("phases", {}),
        "phase_ticks": phase_ticks(analysis),
        "phases": (analysis.phases or []) if analysis else [],
        "background": curves.get("background"),
        "rwp": _f(analysis.rwp) if analysis else None,
        "target_yield": _f(analysis.target_yield) if analysis else None,
        "fit_warning": _analysis_warning(analysis),
    }


def _analysis_warning(analysis: PhaseAnalysisRow | None) -> str | None:
    if analysis is None:
        return None
    details = analysis.details if isinstance(analysis.details, dict) else {}
    return fit_warning(_f(analysis.rwp), _f(details.get("unexplained_intensity_fraction")))


# --------------------------------------------------------------------------- targets


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
    preds = _latest_predictions(session, [target.candidate_id] if target.candidate_id else [])
    return {
        "target": target_dict(target, preds.get(target.candidate_id or -1)),
        "recipes": [recipe_dict(r, target.formula) | {"experiments": by_recipe.get(r.id, []),
                                                      "replaced_by": replaced_by.get(r.id, [])}
                    for r in recipes],
    }


# --------------------------------------------------------------------------- models


_MODEL_COLUMNS = (ModelVersion.id, ModelVersion.kind, ModelVersion.version, ModelVersion.n_train,
                  ModelVersion.metrics, ModelVersion.created_at)  # never the checkpoint blob


def _model_row(row: Any) -> dict[str, Any]:
    return {"id": row[0], "kind": row[1], "version": row[2], "n_train": row[3], "metrics": row[4] or {},
            "created_at": iso(row[5])}


def models(session: Session, campaign: Campaign | None) -> dict[str, Any]:
    if campaign is None:
        return {"models": []}
    rows = session.exec(select(*_MODEL_COLUMNS).where(ModelVersion.campaign_id == campaign.id)
                        .order_by(ModelVersion.kind, ModelVersion.version)).all()
    counts = dict(session.exec(
        select(Prediction.model_version_id, func.count())
        .where(Prediction.model_version_id.in_([r[0] for r in rows] or [-1]))
        .group_by(Prediction.model_version_id)).all())
    return {"models": [_model_row(r) | {"predictions": int(counts.get(r[0], 0))} for r in rows]}


# normal quantiles for central intervals 10 %, 20 %, ... 90 %, 95 % (no scipy import at page time)
_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
_Z = (0.12566, 0.25335, 0.38532, 0.52440, 0.67449, 0.84162, 1.03643, 1.28155, 1.64485, 1.95996)


def _pairs_from_metrics(metrics: dict[str, Any]) -> list[dict[str, float | None]]:
    """Parity points a trainer stored with its metrics: ``parity: {y_true, y_pred, y_std}`` or a list."""
    parity = metrics.get("parity")
    points: list[dict[str, float | None]] = []
    if isinstance(parity, dict):
        true = parity.get("y_true") or parity.get("true") or []
        pred = parity.get("y_pred") or parity.get("pred") or []
        std = parity.get("y_std") or parity.get("std") or [None] * len(pred)
        for t, p, s in zip(true, pred, std, strict=False):
            points.append({"observed": _f(t), "predicted": _f(p), "std": _f(s)})
    elif isinstance(parity, list):
        for item in parity:
            if isinstance(item, dict):
                points.append({"observed": _f(item.get("y_true", item.get("observed"))),
                               "predicted": _f(item.get("y_pred", item.get("predicted"))),
                               "std": _f(item.get("y_std", item.get("std")))})
    return [p for p in points if p["observed"] is not None and p["predicted"] is not None]


def model_quality(session: Session, campaign: Campaign | None, model_id: int, *, max_points: int = 2000) -> dict[str, Any]:
    """Parity (predicted vs observed) and calibration (nominal vs observed interval coverage) of one version.

    Observed values come from what the trainer stored in ``metrics["parity"]`` (held-out
    points); for yield models without it, the campaign's own measured yields are joined to the
    version's ``yield`` predictions through the target's candidate — the honest test of a
    yield model is the lab.
    """
    row = session.exec(select(*_MODEL_COLUMNS).where(ModelVersion.id == model_id)).first()
    if campaign is None or row is None or session.get(ModelVersion, model_id).campaign_id != campaign.id:
        raise NotFound(f"no model version with id {model_id} in this campaign")
    info = _model_row(row)
    points = _pairs_from_metrics(info["metrics"])
    source = "metrics.parity" if points else None
    if not points:
        observed = session.exec(
            select(Prediction.mean, Prediction.std, func.max(Experiment.target_yield), Target.formula,
                   func.min(Experiment.updated_at))
            .join(Target, Target.candidate_id == Prediction.candidate_id)
            .join(Experiment, Experiment.target_id == Target.id)
            .where(Prediction.model_version_id == model_id, Prediction.objective == "yield",
                   Target.campaign_id == campaign.id, Experiment.target_yield.is_not(None))
            .group_by(Prediction.id, Target.formula).limit(max_points)
        ).all()
        trained_at = session.get(ModelVersion, model_id).created_at
        # held out = the target's first yield was measured after this version was trained, so the
        # prediction could not have seen it; the rest is in-sample fit and is plotted hollow
        points = [{"observed": _f(y), "predicted": _f(m), "std": _f(s), "label": f,
                   "held_out": bool(first and trained_at and _aware(first) > _aware(trained_at))}
                  for m, s, y, f, first in observed if _f(y) is not None and _f(m) is not None]
        source = "measured yields" if points else None
    points = points[:max_points]
    calibration = []
    with_std = [p for p in points if p.get("std")]
    if with_std:
        z = np.array([abs(p["observed"] - p["predicted"]) / p["std"] for p in with_std])
        calibration = [{"nominal": lvl, "observed": float(np.mean(z <= q))} for lvl, q in zip(_LEVELS, _Z, strict=True)]
    obs = np.array([p["observed"] for p in points]) if points else np.zeros(0)
    pred = np.array([p["predicted"] for p in points]) if points else np.zeros(0)
    summary = {}
    if len(points):
        summary = {"n": len(points), "mae": float(np.mean(np.abs(obs - pred))),
                   "rmse": float(np.sqrt(np.mean((obs - pred) ** 2)))}
        held = np.array([bool(p.get("held_out")) for p in points])
        if source == "measured yields":
            summary["n_held_out"] = int(held.sum())
            if held.any():
                summary["mae_held_out"] = float(np.mean(np.abs(obs[held] - pred[held])))
        if len(points) > 2 and np.std(obs) > 0 and np.std(pred) > 0:
            summary["pearson_r"] = float(np.corrcoef(obs, pred)[0, 1])
    objectives = dict(session.exec(select(Prediction.objective, func.count())
                                   .where(Prediction.model_version_id == model_id)
                                   .group_by(Prediction.objective)).all())
    return info | {"parity": points, "parity_source": source, "calibration": calibration,
                   "summary": summary, "prediction_counts": {k: int(v) for k, v in objectives.items()}}


# --------------------------------------------------------------------------- events


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
