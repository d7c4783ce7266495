"""Running experiments through the instruments: one asyncio task per experiment.

Why this shape: an experiment is a short pipeline (dose & mix -> heat -> recover -> XRD) whose
stations have capacities (one dosing robot, N furnace slots, one diffractometer). Each
experiment runs as its own task and takes a slot of a station only for the step that needs
it, so every furnace is busy whenever a dosed sample waits, and a slow instrument holds up
only the experiments queued for it, never the rest of the lab.

Persistence rule: every step command is written to SQL (state ``sent``, with its UUID) in a
committed transaction *before* it goes on the wire, and every outcome is committed before the
next step starts. After a crash the store therefore names every command that may have been
executed; re-sending the same ``command_id`` is always safe because drivers answer a known id
from their ledger instead of executing it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlmodel import select

import recipes

from ..store import (
    RUNNABLE,
    Experiment,
    ExperimentState,
    FailureKind,
    Measurement,
    Recipe,
    StepCommand,
    StepState,
    Store,
    Target,
    pack_array,
    utcnow,
)
from ..xrd import XrdFormatError, XrdPattern
from .records import recipe_of
from .steps import STEP_ORDER, deadline_seconds, step_params

log = logging.getLogger(__name__)


class Transport(Protocol):
    """What the scheduler needs of the drivers' ``Dispatcher`` (see contracts: drivers)."""

    async def submit(self, cmd: Any, *, driver: str | None = None) -> Any: ...

    async def query_status(self, command_ids: list[str]) -> dict[str, str]: ...

    async def wait_for(self, capabilities: set[str], timeout: float) -> Any: ...


class Pool:
    """A station's free slots; the limit can change when drivers join or leave."""

    def __init__(self, name: str, limit: int):
        self.name = name
        self.limit = max(1, limit)
        self.busy = 0
        self._cond = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.busy < self.limit)
            self.busy += 1

    async def release(self) -> None:
        async with self._cond:
            self.busy -= 1
            self._cond.notify_all()

    async def set_limit(self, limit: int) -> None:
        async with self._cond:
            self.limit = max(1, limit)
            self._cond.notify_all()

    async def __aenter__(self) -> Pool:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


@dataclass
class StepPolicy:
    """How hard the scheduler tries before it gives up on a step.

    ``retries``: a step the instrument reports as failed is re-issued (new command id,
    ``attempt`` + 1) this many times. ``reattach``: a step whose driver went silent or whose
    deadline passed is re-sent with the *same* command id (the driver answers from its
    ledger, so nothing runs twice) this many times, waiting up to ``wait_driver_s`` for a
    driver of that capability each time.
    """

    retries: int = 2
    reattach: int = 4
    wait_driver_s: float = 30.0
    speedup: float = 1.0
    deadline_floor_s: float = 30.0


def make_command(step: StepCommand) -> Any:
    """The wire command of a stored step (same id, params and deadline every time it is sent)."""
    from drivers import Command

    payload = step.payload or {}
    return Command(
        command_id=step.command_id,
        capability=step.step,
        params=payload.get("params", {}),
        deadline_s=float(payload.get("deadline_s", 60.0)),
        sample_ids=list(payload.get("sample_ids", [])),
    )


class ExperimentRunner:
    """Moves stored experiments through their steps over a :class:`Transport`."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        pools: dict[str, Pool],
        policy: StepPolicy,
        *,
        on_change: Callable[[], None] | None = None,
        before_send: Callable[[StepCommand], Awaitable[None]] | None = None,
        lab_id: str | None = None,
        guard: Callable[[Any, int], None] | None = None,
    ):
        self.store = store
        self.transport = transport
        self.pools = pools
        self.policy = policy
        self.on_change = on_change or (lambda: None)
        self.before_send = before_send
        # several labs on one campaign: each step row names the lab whose instruments get it, and
        # ``guard(session, experiment_id)`` (claims.SharedClaims.guard) checks, in the very
        # transaction that writes the step, that this lab still holds the experiment
        self.lab_id = lab_id
        self.guard = guard

    # ------------------------------------------------------------------ public
    async def run(self, experiment_id: int) -> None:
        """Run every step the experiment still needs; returns when it is measured or failed."""
        with self.store.session() as s:
            exp = s.get(Experiment, experiment_id)
            if exp is None:
                raise ValueError(f"no experiment {experiment_id}")
            recipe = recipe_of(s.get(Recipe, exp.recipe_id), s.get(Target, exp.target_id).formula)
            sample_id = exp.sample_id
            state = exp.state
        if state not in RUNNABLE:
            return
        for sequence, step in enumerate(STEP_ORDER):
            latest = self._latest_step(experiment_id, step)
            if latest is not None and latest.state == StepState.SUCCEEDED:
                continue
            ok = await self._run_step(experiment_id, sample_id, recipe, step, sequence, latest)
            self.on_change()
            if not ok:
                return

    # ------------------------------------------------------------------ steps
    def _latest_step(self, experiment_id: int, step: str) -> StepCommand | None:
        with self.store.session() as s:
            return s.exec(
                select(StepCommand)
                .where(StepCommand.experiment_id == experiment_id, StepCommand.step == step)
                .order_by(StepCommand.attempt.desc())
            ).first()

    def _new_step(self, experiment_id: int, sample_id: str, recipe: recipes.Recipe, step: str,
                  sequence: int, attempt: int) -> StepCommand:
        """Write a fresh command (new UUID) as ``sent`` and start the experiment, in one transaction."""
        params = step_params(step, sample_id, recipe)
        deadline_s = deadline_seconds(step, params, speedup=self.policy.speedup,
                                      floor_s=self.policy.deadline_floor_s)
        # imported here, as in controller.loop.lab: importing controller.loop must not load
        # the drivers package (ZeroMQ, the protocol models) for commands that never talk to a lab
        from drivers import new_id

        with self.store.session() as s:
            if self.guard is not None:
                self.guard(s, experiment_id)
            row = StepCommand(
                command_id=new_id(),  # time-ordered: appends to the unique index on command_id
                experiment_id=experiment_id,
                step=step,
                sequence=sequence,
                attempt=attempt,
                state=StepState.PENDING.value,
                payload={"params": params, "deadline_s": deadline_s, "sample_ids": [sample_id]},
                deadline_at=utcnow() + timedelta(seconds=deadline_s),
                lab_id=self.lab_id,
            )
            s.add(row)
            s.flush()
            self.store.step_transition(s, row.command_id, StepState.SENT)
            self._mark_running(s, experiment_id, f"{step} sent (attempt {attempt})")
            return row

    def _resend(self, step: StepCommand) -> StepCommand:
        """Prepare to re-send a stored command with its own id (after a crash or a lost driver)."""
        with self.store.session() as s:
            if self.guard is not None:
                self.guard(s, step.experiment_id)
            row = s.exec(select(StepCommand).where(StepCommand.command_id == step.command_id)).one()
            if row.state in {StepState.PENDING, StepState.UNKNOWN}:
                self.store.step_transition(s, row.command_id, StepState.SENT)
            deadline_s = float((row.payload or {}).get("deadline_s", 60.0))
            row.deadline_at = utcnow() + timedelta(seconds=deadline_s)
            s.add(row)
            self._mark_running(s, row.experiment_id, f"{row.step} re-sent with the same command id")
            return row

    def _mark_running(self, s: Any, experiment_id: int, why: str) -> None:
        exp = s.get(Experiment, experiment_id)
        if exp.state in {ExperimentState.QUEUED, ExperimentState.UNKNOWN}:
            self.store.transition(experiment_id, ExperimentState.RUNNING, reason=why, session=s)

    async def _run_step(self, experiment_id: int, sample_id: str, recipe: recipes.Recipe, step: str,
                        sequence: int, latest: StepCommand | None) -> bool:
        """Drive one step to success (True) or give up and fail the experiment (False)."""
        reattached = 0
        row = latest
        while True:
            if row is None or row.state == StepState.FAILED:
                attempt = 1 if row is None else row.attempt + 1
                if row is not None and attempt > 1 + self.policy.retries:
                    self._fail(experiment_id, f"{step} failed after {row.attempt} attempt(s): {row.error}")
                    return False
                row = None
                pool = self.pools[step]
                async with pool:
                    row = self._new_step(experiment_id, sample_id, recipe, step, sequence, attempt)
                    outcome = await self._send(row)
            else:
                async with self.pools[step]:
                    row = self._resend(row)
                    outcome = await self._send(row)
            status = getattr(outcome, "status", "lost")
            if status == "succeeded":
                self._succeed(row, outcome)
                return True
            if status == "failed":
                row = self._record(row, StepState.FAILED, outcome.error or "instrument reported failure",
                                   getattr(outcome, "driver", None))
                continue
            # lost or expired: nobody can say now whether it ran; re-attach with the same id
            reattached += 1
            error = f"{status}: {getattr(outcome, 'error', None) or 'no answer before the deadline'}"
            row = self._record(row, StepState.UNKNOWN, error, getattr(outcome, "driver", None))
            if reattached > self.policy.reattach:
                self._fail(experiment_id, f"{step} unaccounted for after {reattached} tries ({error})")
                return False
            try:
                await self.transport.wait_for({step}, timeout=self.policy.wait_driver_s)
            except Exception as exc:  # noqa: BLE001 - no driver yet: try again, bounded by reattach
                log.warning("no %s driver available: %s", step, exc)
            await asyncio.sleep(min(0.2 * reattached, 2.0))

    async def _send(self, row: StepCommand) -> Any:
        if self.before_send is not None:
            await self.before_send(row)
        try:
            if row.attempt and row.driver and row.state != StepState.PENDING:
                # the id may be in this driver's ledger: only that driver may answer for it
                return await self.transport.submit(make_command(row), driver=row.driver)
            return await self.transport.submit(make_command(row))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a transport failure is a lost command, by policy
            log.warning("submit of %s failed: %s", row.command_id, exc)
            return _LostOutcome(row.command_id, f"transport error: {exc}")

    def _record(self, row: StepCommand, state: StepState, error: str, driver: str | None) -> StepCommand:
        with self.store.session() as s:
            return self.store.step_transition(s, row.command_id, state, error=error, driver=driver)

    def _succeed(self, row: StepCommand, outcome: Any) -> None:
        result = dict(outcome.result or {})
        with self.store.session() as s:
            self.store.step_transition(s, row.command_id, StepState.SUCCEEDED, result=result,
                                       driver=getattr(outcome, "driver", None))
            if row.step == "xrd":
                try:
                    pattern = XrdPattern.from_station_result(result)
                except XrdFormatError as exc:
                    self.store.transition(
                        row.experiment_id, ExperimentState.FAILED, session=s,
                        failure_kind=FailureKind.INSTRUMENT,
                        reason=f"xrd returned an unusable pattern: {exc}")
                    return
                meas = Measurement(
                    experiment_id=row.experiment_id,
                    step_command_id=row.id,
                    n_points=len(pattern.two_theta),
                    two_theta=pack_array(pattern.two_theta),
                    intensities=pack_array(pattern.intensities),
                    wavelength_angstrom=pattern.wavelength_angstrom,
                    source=getattr(outcome, "driver", None),
                    meta=pattern.meta,
                )
                s.add(meas)
                s.flush()
                self.store.transition(row.experiment_id, ExperimentState.MEASURED, session=s,
                                      reason="XRD pattern stored", data={"measurement_id": meas.id})

    def _fail(self, experiment_id: int, reason: str) -> None:
        """The lab gave up on a step: an instrument failure (it says nothing about the recipe)."""
        with self.store.session() as s:
            exp = s.get(Experiment, experiment_id)
            if exp.state == ExperimentState.QUEUED:  # nothing ran: withdrawn (kind: cancelled)
                self.store.transition(experiment_id, ExperimentState.CANCELLED, reason=reason, session=s)
            else:
                self.store.transition(experiment_id, ExperimentState.FAILED, reason=reason, session=s,
                                      failure_kind=FailureKind.INSTRUMENT)


@dataclass
class _LostOutcome:
    command_id: str
    error: str
    status: str = "lost"
    result: dict | None = None
    driver: str | None = None
