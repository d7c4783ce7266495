"""Reconciling the store with the drivers after a controller (re)start.

Why: the controller may have been killed with ``kill -9`` at any instant. SQL then names every
step command that may be on an instrument (states ``pending``, ``sent``, ``acked``,
``unknown``). We ask the drivers about each one. A command some driver knows (running,
finished) is re-attached by re-sending the same ``command_id`` — the driver replays its ledger
instead of executing again. A command no driver knows was never executed; it is marked
``unknown`` (and its experiment too), and the policy re-sends it with the same id, which is
then its first and only execution. Nothing is dropped, nothing runs twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import select

from ..store import Experiment, ExperimentState, FailureKind, StepCommand, StepState, Store

log = logging.getLogger(__name__)

IN_FLIGHT_STEP_STATES = (StepState.PENDING, StepState.SENT, StepState.ACKED, StepState.UNKNOWN)


@dataclass
class Reconciliation:
    """What the drivers said about the commands SQL had in flight."""

    in_flight: int = 0
    statuses: dict[str, str] = field(default_factory=dict)
    marked_unknown: list[str] = field(default_factory=list)
    query_error: str | None = None

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for status in self.statuses.values():
            counts[status] = counts.get(status, 0) + 1
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
        return (f"{self.in_flight} step(s) in flight at restart; drivers report: {parts}; "
                f"{len(self.marked_unknown)} marked unknown (will be re-sent with the same id)")


async def reconcile(store: Store, transport: Any, campaign_id: int, *, timeout_s: float = 10.0,
                    missing_drivers: list[str] | None = None,
                    lab_id: str | None = None) -> Reconciliation:
    """Ask the drivers about every in-flight step and record the answer before anything runs.

    ``missing_drivers``: drivers the campaign used before that did not come back. A step no
    live driver knows may then sit in one of *their* ledgers, so it is not re-sent (that could
    fire it twice): its experiment fails as an instrument failure (``FailureKind.INSTRUMENT``)
    and the loop re-queues the recipe as a new experiment on a new sample.

    ``lab_id``: several labs share the campaign (``claims.py``); only the steps this lab's
    instruments got are asked about — another lab's drivers are not on this dispatcher, and
    their silence here says nothing about those commands.
    """
    query = (select(StepCommand).join(Experiment, Experiment.id == StepCommand.experiment_id)
             .where(Experiment.campaign_id == campaign_id,
                    StepCommand.state.in_([st.value for st in IN_FLIGHT_STEP_STATES])))
    if lab_id is not None:
        query = query.where(StepCommand.lab_id == lab_id)
    with store.session() as s:
        rows = s.exec(query).all()
    rec = Reconciliation(in_flight=len(rows))
    if not rows:
        return rec
    ids = [r.command_id for r in rows]
    try:
        import asyncio

        rec.statuses = dict(await asyncio.wait_for(transport.query_status(ids), timeout_s))
    except Exception as exc:  # noqa: BLE001 - no answer is itself an answer: unaccounted
        rec.query_error = f"{type(exc).__name__}: {exc}"
        log.warning("status query failed: %s", rec.query_error)
    with store.session() as s:
        for row in rows:
            status = rec.statuses.get(row.command_id, "unknown")
            if status == "unknown" and missing_drivers and row.state in (
                    StepState.SENT, StepState.ACKED, StepState.UNKNOWN):
                if row.state != StepState.UNKNOWN:
                    store.step_transition(s, row.command_id, StepState.UNKNOWN,
                                          error=f"unaccounted for; drivers {missing_drivers} did not return")
                exp = s.get(Experiment, row.experiment_id)
                if exp.state in (ExperimentState.RUNNING, ExperimentState.UNKNOWN):
                    store.transition(exp.id, ExperimentState.FAILED, session=s,
                                     failure_kind=FailureKind.INSTRUMENT,
                                     reason=f"{row.step} command unaccounted for after a "
                                            f"restart while drivers {missing_drivers} were away; "
                                            "not re-sent (it may have run there)")
                rec.marked_unknown.append(row.command_id)
            elif status == "unknown" and row.state in (StepState.SENT, StepState.ACKED):
                store.step_transition(s, row.command_id, StepState.UNKNOWN,
                                      error="no driver accounts for it after a controller restart")
                rec.marked_unknown.append(row.command_id)
                exp = s.get(Experiment, row.experiment_id)
                if exp.state == ExperimentState.RUNNING:
                    store.transition(exp.id, ExperimentState.UNKNOWN, session=s,
                                     reason=f"{row.step} command unaccounted for after restart; "
                                            "policy: re-send the same command id")
        store.log(s, "controller.reconciled", campaign_id=campaign_id, actor="controller",
                  message=rec.summary(),
                  data={"statuses": rec.statuses, "marked_unknown": rec.marked_unknown,
                        "query_error": rec.query_error})
    return rec
