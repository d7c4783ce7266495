"""Lab time of a campaign: the simulated (or real) makespan of its instrument steps.

Why a replay rather than wall time: a simulated lab runs a million times faster than a real
one, and a real lab's wall time includes nights the controller waited for a person. What a
budget in "lab days" means is instrument time: we replay the stored steps in dispatch order
over the stations' capacities (recorded when the controller started) using each step's
reported ``sim_time_min`` (or its planned duration), and report the finish time of the last.
Several labs on one campaign each replay on their own stations (``StepCommand.lab_id``).

Decisions wait for results: an experiment cannot start before the results it was decided on
exist. So an experiment's first step starts no earlier than the end of every experiment whose
verdict was written before it was proposed (event-log order) — otherwise a controller that
waits for results (the lockstep mode of a simulated lab) would be credited with lab time it
could not have had.
"""

from __future__ import annotations

import bisect
import heapq
from typing import Any

from sqlmodel import select

from ..store import TERMINAL_STATES, Event, Experiment, StepCommand, StepState, Store
from .steps import expected_minutes


def station_capacities(store: Store, campaign_id: int, session: Any) -> dict[str, int]:
    ev = session.exec(select(Event).where(Event.campaign_id == campaign_id,
                                          Event.kind == "controller.started")
                      .order_by(Event.id.desc())).first()
    return _caps(ev)


def _caps(ev: Event | None) -> dict[str, int]:
    caps = dict(((ev.data or {}).get("capacities") or {}) if ev else {})
    return {k: max(1, int(v)) for k, v in caps.items()}


def lab_capacities(campaign_id: int, session: Any) -> dict[str | None, dict[str, int]]:
    """Stations per lab: the newest ``controller.started`` of each lab id (key None: the newest
    of all, which is what a single-lab campaign's steps, with no lab id, are replayed on)."""
    out: dict[str | None, dict[str, int]] = {}
    for ev in session.exec(select(Event).where(Event.campaign_id == campaign_id,
                                               Event.kind == "controller.started")
                           .order_by(Event.id.desc())).all():
        out.setdefault(None, _caps(ev))
        out.setdefault((ev.data or {}).get("lab_id"), _caps(ev))
    return out


def step_minutes(row: StepCommand) -> float:
    result = row.result or {}
    if "sim_time_min" in result:
        return float(result["sim_time_min"])
    return expected_minutes(row.step, (row.payload or {}).get("params", {}))


def lab_days(store: Store, campaign_id: int, *, session: Any | None = None) -> float:
    """Makespan in days of every executed step (succeeded or failed) of the campaign."""
    if session is None:
        with store.session() as s:
            return lab_days(store, campaign_id, session=s)
    caps = lab_capacities(campaign_id, session)  # several labs: each lab's own stations
    rows = session.exec(
        select(StepCommand).join(Experiment, Experiment.id == StepCommand.experiment_id)
        .where(Experiment.campaign_id == campaign_id,
               StepCommand.state.in_([StepState.SUCCEEDED.value, StepState.FAILED.value]))
        .order_by(StepCommand.id)
    ).all()
    proposed, decided = _decision_order(campaign_id, session)
    order = sorted(decided, key=decided.get)  # experiments by when their verdict was written
    verdict_ids = [decided[e] for e in order]
    prefix: list[float] = []  # running max of the ends of ``order`` (extended when final)
    slots: dict[tuple[str | None, str], list[float]] = {}
    ready: dict[int, float] = {}
    end_max = 0.0
    for row in rows:
        lab_caps = caps.get(row.lab_id, caps.get(None, {}))
        heap = slots.setdefault((row.lab_id, row.step), [0.0] * lab_caps.get(row.step, 1))
        if row.experiment_id not in ready:  # its first step: after the results it was decided on
            k = bisect.bisect_left(verdict_ids, proposed.get(row.experiment_id, 0))
            while len(prefix) < k:  # every experiment decided before this one has all its steps
                prefix.append(max(prefix[-1] if prefix else 0.0, ready.get(order[len(prefix)], 0.0)))
            ready[row.experiment_id] = prefix[k - 1] if k else 0.0
        free = heapq.heappop(heap)
        start = max(free, ready[row.experiment_id])
        end = start + step_minutes(row)
        heapq.heappush(heap, end)
        ready[row.experiment_id] = end
        end_max = max(end_max, end)
    return end_max / 1440.0


def _decision_order(campaign_id: int, session: Any) -> tuple[dict[int, int], dict[int, int]]:
    """Event ids of each experiment's proposal and of its verdict (terminal transition)."""
    terminal = [s.value for s in TERMINAL_STATES]
    rows = session.exec(select(Event.entity_id, Event.kind, Event.to_state, Event.id).where(
        Event.campaign_id == campaign_id, Event.entity == "experiment",
        Event.kind.in_(["experiment.proposed", "experiment.transition"]))).all()
    proposed: dict[int, int] = {}
    decided: dict[int, int] = {}
    for exp_id, kind, to_state, ev_id in rows:
        if kind == "experiment.proposed":
            proposed[exp_id] = min(ev_id, proposed.get(exp_id, ev_id))
        elif to_state in terminal:
            decided[exp_id] = min(ev_id, decided.get(exp_id, ev_id))
    return proposed, decided
