"""The overview page: budget, targets made, success rates, yield and model-error series, and what
each instrument is doing — aggregates computed in SQL so the page stays fast on a large store.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import exists, func
from sqlmodel import Session, select

from ...config import CampaignConfig
from ...store import (
    Campaign,
    Event,
    Experiment,
    ExperimentState,
    ModelVersion,
    StepCommand,
    StepState,
    Target,
    TargetState,
    iso,
)
from ..aggregates import DriverTotals, StepTotals
from .rows import ACTIVE_STEP_STATES, UNFINISHED_STEP_STATES, aware, event_dict, finite


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
            "wall_hours": ((aware(last_ts) - aware(first_ts)).total_seconds() / 3600.0
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
    return [{"experiment_id": i, "state": st, "yield": finite(y), "target": f} for i, st, y, f in reversed(rows)
            if finite(y) is not None]


def model_error_series(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    """Per model version, the yield error on results it had not seen (``yield_mae_previous_model``)."""
    rows = session.exec(select(ModelVersion.version, ModelVersion.kind, ModelVersion.metrics)
                        .where(ModelVersion.campaign_id == campaign_id).order_by(ModelVersion.version)).all()
    out = []
    for version, kind, metrics in rows:
        mae = finite((metrics or {}).get("yield_mae_previous_model")) if isinstance(metrics, dict) else None
        if mae is not None:
            out.append({"version": version, "kind": kind, "mae": mae})
    return out


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
