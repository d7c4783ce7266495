"""Lab time of a campaign: the simulated (or real) makespan of its instrument steps.

Why a replay rather than wall time: a simulated lab runs a million times faster than a real
one, and a real lab's wall time includes nights the controller waited for a person. What a
budget in "lab days" means is instrument time: we replay the stored steps in dispatch order
over the stations' capacities (recorded when the controller started) using each step's
reported ``sim_time_min`` (or its planned duration), and report the finish time of the last.
"""

from __future__ import annotations

import heapq
from typing import Any

from sqlmodel import select

from ..store import Event, Experiment, StepCommand, StepState, Store
from .steps import expected_minutes


def station_capacities(store: Store, campaign_id: int, session: Any) -> dict[str, int]:
    ev = session.exec(select(Event).where(Event.campaign_id == campaign_id,
                                          Event.kind == "controller.started")
                      .order_by(Event.id.desc())).first()
    caps = dict(((ev.data or {}).get("capacities") or {}) if ev else {})
    return {k: max(1, int(v)) for k, v in caps.items()}


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
    caps = station_capacities(store, campaign_id, session)
    rows = session.exec(
        select(StepCommand).join(Experiment, Experiment.id == StepCommand.experiment_id)
        .where(Experiment.campaign_id == campaign_id,
               StepCommand.state.in_([StepState.SUCCEEDED.value, StepState.FAILED.value]))
        .order_by(StepCommand.id)
    ).all()
    slots: dict[str, list[float]] = {}
    ready: dict[int, float] = {}
    end_max = 0.0
    for row in rows:
        heap = slots.setdefault(row.step, [0.0] * caps.get(row.step, 1))
        free = heapq.heappop(heap)
        start = max(free, ready.get(row.experiment_id, 0.0))
        end = start + step_minutes(row)
        heapq.heappush(heap, end)
        ready[row.experiment_id] = end
        end_max = max(end_max, end)
    return end_max / 1440.0
