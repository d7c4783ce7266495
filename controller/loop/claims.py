"""Who works on which experiment: one controller alone, or several labs on one PostgreSQL campaign.

Why claims in the database: each lab has its own instruments on its own ZeroMQ dispatcher, and
its own controller; the campaign (targets, recipes, experiments, models) is one set of rows in
PostgreSQL. An experiment must run on exactly one lab, so a controller *claims* it in the
database (``SELECT … FOR UPDATE SKIP LOCKED``: two controllers never wait on or take the same row)
and holds the claim with a lease (``experiment.lease_until``, on the database's clock, renewed by
a heartbeat). Every step command is written under a check of the claim (the same row lock), so a
controller that lost its claim cannot send a step of it.

Recovery rules across labs (the one-lab rules of ``recovery.py``, extended):

* an experiment no instrument has touched yet (no step row) whose lease expired is taken by any
  live lab: nothing of it exists anywhere, so running it elsewhere cannot run it twice;
* an experiment with a step on a lab's instruments stays that lab's: only that lab's drivers can
  say from their ledgers whether the step ran (the crucible is in that lab). The lab's restarted
  controller takes its claims back and ``reconcile`` asks its drivers, as after any crash;
* a measured experiment (only analysis left) is taken by any live lab: the pattern is in the
  store;
* when a lab stays silent for ``lab.abandon_after_s``, its started experiments are failed as
  instrument failures and not re-sent (they may have run there), exactly as ``reconcile`` does
  for drivers that did not return; the policy re-queues each recipe on a new sample.

Decisions (advancing targets, choosing targets, retraining) are made by one controller at a
time under a PostgreSQL advisory lock, so a round's retrain happens once and the planner never
proposes two experiments for one target. A controller holds two more advisory locks for its
whole life: a shared one on the campaign (an exclusive holder = a single controller) and an
exclusive one on its lab id, so a second controller of the same lab is refused, and so is a lone
controller on a campaign labs are sharing. Advisory locks belong to a database session, so a
SIGKILLed controller releases them as the server sees its connection close.

Without ``lab.id`` nothing of this runs: :class:`SoloClaims` keeps the single-controller loop
exactly as it was (every experiment is this controller's) and only refuses a second controller
(a file lock beside a SQLite store, an exclusive advisory lock on PostgreSQL).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, text, update
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from ..store import (
    IN_FLIGHT,
    NOT_STARTED,
    OPEN_STATES,
    RUNNABLE,
    Event,
    Experiment,
    ExperimentState,
    FailureKind,
    LabLease,
    StepCommand,
    StepState,
    Store,
    StoreError,
)
from .policy import keep_active

log = logging.getLogger(__name__)

__all__ = ["ClaimLost", "ControllerConflict", "SharedClaims", "SoloClaims", "open_claims"]

ANALYSIS_STATES = (ExperimentState.MEASURED, ExperimentState.ANALYSED)
_STEP_IN_FLIGHT = (StepState.PENDING, StepState.SENT, StepState.ACKED, StepState.UNKNOWN)


class ControllerConflict(StoreError):
    """Another controller already runs this campaign in a way this one may not join."""


class ClaimLost(RuntimeError):
    """This controller no longer holds the experiment (another lab took it, or it was withdrawn)."""


def lock_key(*parts: object) -> int:
    """A signed 64-bit advisory-lock key for a name (stable across processes and machines)."""
    digest = hashlib.blake2b(":".join(str(p) for p in ("synthloop", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class SoloClaims:
    """The campaign's only controller: every experiment is its own, every decision its turn.

    Why still a lock: two controllers on one campaign without claims would both send the same
    steps. A SQLite store gets an exclusive ``flock`` on ``<db>.controller.lock`` (released by the
    kernel when the process dies, so a SIGKILLed controller never blocks its restart); a
    PostgreSQL store gets an exclusive advisory lock on the campaign.
    """

    shared = False
    lab_id: str | None = None

    def __init__(self, store: Store, campaign_id: int, campaign: str):
        self.store = store
        self.campaign_id = campaign_id
        self.campaign = campaign
        self._fd: int | None = None
        self._conn: Any = None

    def acquire(self) -> None:
        url = make_url(self.store.url)
        if url.get_backend_name() == "postgresql":
            self._conn = self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if not self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                      {"k": lock_key(self.campaign_id, "campaign")}).scalar():
                self.close()
                raise ControllerConflict(
                    f"campaign {self.campaign!r} already has a controller (a single one, or labs "
                    "sharing it: give this controller a lab.id / --lab-id to join them)")
            return
        if not url.database or url.database == ":memory:":
            return
        import fcntl

        path = Path(url.database).with_name(Path(url.database).name + ".controller.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise ControllerConflict(
                f"campaign {self.campaign!r} is already run by another controller ({holder or 'unknown'}); "
                "a SQLite store takes one controller — several labs need a PostgreSQL store.url "
                "and a lab.id each") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd

    def register(self, capacities: dict[str, int]) -> None:  # noqa: ARG002 - one lab: nothing to share
        return None

    def claim(self, records: Any, *, limit_new: int) -> list[tuple[int, ExperimentState]]:  # noqa: ARG002
        return records.experiments_to_advance()

    def guard(self, session: Session, experiment_id: int) -> None:  # noqa: ARG002 - all are ours
        return None

    def holds(self, experiment_id: int) -> bool:  # noqa: ARG002
        return True

    def targets_in_work(self, batch_size: int, own: int) -> int:
        """One lab: its own furnace slots plus a spare, at least a batch."""
        return keep_active(batch_size, own)

    def start_round(self) -> None:
        return None

    def heartbeat(self) -> None:
        return None

    def try_lock(self, name: str) -> bool:  # noqa: ARG002 - nobody else decides
        return True

    def unlock(self, name: str) -> None:  # noqa: ARG002
        return None

    def other_labs_open(self) -> int:
        return 0

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            _end_session(self._conn)
            self._conn = None


class SharedClaims:
    """One lab's controller among several on a PostgreSQL campaign (see the module docstring)."""

    shared = True

    def __init__(self, store: Store, campaign_id: int, campaign: str, lab_id: str, *,
                 lease_s: float = 30.0, abandon_after_s: float = 600.0, rounds: bool = False):
        if store.engine.dialect.name != "postgresql":
            raise ControllerConflict(
                f"lab.id {lab_id!r}: several labs on one campaign need a PostgreSQL store "
                f"(store.url postgresql+psycopg://...); this store is {store.engine.dialect.name}, "
                "which takes one controller (remove lab.id to run it alone)")
        self.store = store
        self.campaign_id = campaign_id
        self.campaign = campaign
        self.lab_id = lab_id
        self.lease = timedelta(seconds=float(lease_s))
        self.abandon = timedelta(seconds=float(abandon_after_s))
        # lockstep rounds: a lab takes one share of each round's experiments (not a second share
        # once its first is measured: its furnaces would fire a second wave while the other
        # lab's sat idle). One target more than the lab's furnace slots keeps a furnace busy
        # while an analysis runs (free-running); in a lockstep round it would be a second heat
        # wave instead.
        self.rounds = rounds
        self.spare = 0 if rounds else 1
        self._own_heat = 0
        self._conn: Any = None
        self._held: set[str] = set()
        self._registered = False

    # ------------------------------------------------------------------ presence
    def acquire(self) -> None:
        """The campaign's shared lock and this lab's exclusive one, on a session of our own."""
        self._conn = self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        ok = self._conn.execute(text("SELECT pg_try_advisory_lock_shared(:k)"),
                                {"k": lock_key(self.campaign_id, "campaign")}).scalar()
        if not ok:
            self._drop_session()
            raise ControllerConflict(
                f"campaign {self.campaign!r} is run by a single controller (no lab.id); stop it, "
                "or give it a lab.id, before labs share the campaign")
        if not self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                  {"k": lock_key(self.campaign_id, "lab", self.lab_id)}).scalar():
            with self.store.session() as s:
                row = s.exec(select(LabLease).where(LabLease.campaign_id == self.campaign_id,
                                                    LabLease.lab_id == self.lab_id)).first()
            where = f" (pid {row.pid} on {row.host})" if row is not None else ""
            self._drop_session()
            raise ControllerConflict(f"lab {self.lab_id!r} already has a controller on campaign "
                                     f"{self.campaign!r}{where}; one controller per lab")

    def register(self, capacities: dict[str, int]) -> None:
        """This lab's row: its stations (the others size the campaign's work by them) and lease."""
        with self.store.session() as s:
            now = _db_now(s)
            row = s.exec(select(LabLease).where(LabLease.campaign_id == self.campaign_id,
                                                LabLease.lab_id == self.lab_id)).first()
            if row is None:
                row = LabLease(campaign_id=self.campaign_id, lab_id=self.lab_id)
            row.host, row.pid, row.capacities = socket.gethostname(), os.getpid(), dict(capacities)
            row.started_at = row.heartbeat_at = now
            row.lease_until = now + self.lease
            s.add(row)
        self._own_heat = int(capacities.get("heat", 0))
        self._registered = True

    def _present(self, rows: Any, now: Any) -> list[LabLease]:
        """Labs that share the work: alive, or silent for less than ``abandon_after_s`` without
        having left (a clean exit sets ``pid`` 0).

        Why a silent lab keeps its share: a controller restarted after a crash is back within
        a minute; meanwhile the others keep their own share instead of taking the whole campaign
        (which would leave the restarted lab's furnaces idle behind a queue of decisions). A lab
        silent past ``abandon_after_s`` is gone: its started experiments are given up and the
        others share everything."""
        return [r for r in rows if r.lease_until >= now
                or (r.pid != 0 and r.lease_until + self.abandon > now)]

    def heartbeat(self) -> None:
        """Renew this lab's lease and every claim it holds (one transaction)."""
        with self.store.session() as s:
            now = _db_now(s)
            s.execute(update(LabLease).where(LabLease.campaign_id == self.campaign_id,
                                          LabLease.lab_id == self.lab_id)
                   .values(heartbeat_at=now, lease_until=now + self.lease))
            s.execute(update(Experiment).where(Experiment.campaign_id == self.campaign_id,
                                            Experiment.claimed_by == self.lab_id,
                                            Experiment.state.in_([st.value for st in OPEN_STATES]))
                   .values(lease_until=now + self.lease))

    # ------------------------------------------------------------------ claims
    def claim(self, records: Any, *, limit_new: int) -> list[tuple[int, ExperimentState]]:  # noqa: ARG002
        """Claim what this lab may work on and return every open experiment it holds.

        ``limit_new``: at most this many of this lab's experiments not yet measured (its furnace
        slots + 1), and never more than its fair share of the campaign's such experiments
        (divided among the labs that share the work), so a lab never hoards a round other labs could run.
        """
        me = self.lab_id
        mine: list[tuple[int, ExperimentState]] = []
        with self.store.session() as s:
            now = _db_now(s)
            rows = s.exec(
                select(Experiment).where(
                    Experiment.campaign_id == self.campaign_id,
                    Experiment.state.in_([st.value for st in IN_FLIGHT]),
                    or_(Experiment.claimed_by.is_(None), Experiment.claimed_by == me,
                        Experiment.lease_until < now))
                .order_by(Experiment.id).with_for_update(skip_locked=True)).all()
            started = _started(s, [e.id for e in rows if e.claimed_by != me])
            labs = {r.lab_id: r for r in s.exec(select(LabLease).where(
                LabLease.campaign_id == self.campaign_id)).all()}
            busy = sum(1 for e in rows if e.claimed_by == me and e.state not in ANALYSIS_STATES)
            # a fair share of the campaign's work not yet measured, so the labs split a round
            # (each doses and measures its part) instead of the fastest poller taking it all
            live = len(self._present(labs.values(), now)) or 1
            work = int(s.exec(select(func.count()).select_from(Experiment).where(
                Experiment.campaign_id == self.campaign_id,
                Experiment.state.in_([st.value for st in IN_FLIGHT if st not in ANALYSIS_STATES]))).one())
            limit_new = min(limit_new, -(-work // live))
            if self._own_heat:  # never more than this lab's furnace slots (+ the spare)
                limit_new = min(limit_new, self._own_heat + self.spare)
            if self.rounds:
                limit_new = busy + self._round_allowance(s, live)
            for exp in rows:
                state = ExperimentState(exp.state)
                if exp.claimed_by != me:
                    previous = exp.claimed_by
                    if exp.id in started and state not in ANALYSIS_STATES:
                        # on another lab's instruments: theirs to recover, or to give up
                        self._maybe_abandon(s, exp, labs.get(previous), now)
                        continue
                    if state not in ANALYSIS_STATES:
                        if busy >= limit_new:
                            continue
                        busy += 1
                    exp.claimed_by = me
                    self.store.log(s, "experiment.claimed", campaign_id=self.campaign_id,
                                   entity="experiment", entity_id=exp.id, actor=f"lab:{me}",
                                   message=f"claimed by lab {me}" + (
                                       f" (lab {previous}'s lease expired)" if previous else ""),
                                   data={"lab_id": me, "from": previous})
                exp.lease_until = now + self.lease
                s.add(exp)
                mine.append((exp.id, state))
        return mine

    def start_round(self) -> None:
        """Lockstep, at a round's barrier (under the ``decide`` lock): every experiment after the
        newest one now belongs to the round about to be decided (a ``round.started`` event)."""
        with self.store.session() as s:
            newest = int(s.exec(select(func.coalesce(func.max(Experiment.id), 0)).where(
                Experiment.campaign_id == self.campaign_id)).one())
            self.store.log(s, "round.started", campaign_id=self.campaign_id, entity="campaign",
                           entity_id=self.campaign_id, actor=f"lab:{self.lab_id}",
                           message=f"round decided by lab {self.lab_id}",
                           data={"after_experiment": newest, "lab_id": self.lab_id})

    def _round_allowance(self, s: Session, live: int) -> int:
        """Lockstep: how many more of the current round's experiments this lab may take.

        Each lab's quota is its furnace slots, or its share of the round when the round is
        larger (so the sharing labs' quotas always cover the round: nothing is left unclaimed)."""
        ev = s.exec(select(Event).where(Event.campaign_id == self.campaign_id,
                                        Event.kind == "round.started")
                    .order_by(Event.id.desc())).first()
        after = int((ev.data or {}).get("after_experiment", 0)) if ev is not None else 0
        owners = s.exec(select(Experiment.claimed_by).where(
            Experiment.campaign_id == self.campaign_id, Experiment.id > after)).all()
        quota = max(self._own_heat, -(-len(owners) // live))
        return max(0, quota - sum(1 for lab in owners if lab == self.lab_id))

    def _maybe_abandon(self, s: Session, exp: Experiment, owner: LabLease | None, now: Any) -> None:
        """Give up an experiment a silent lab had on its instruments (never re-sent: it may have run)."""
        silent_since = owner.lease_until if owner is not None else exp.lease_until
        if silent_since is None or silent_since + self.abandon > now or exp.state not in RUNNABLE:
            return
        why = (f"lab {exp.claimed_by} silent since {silent_since.isoformat(timespec='seconds')}; "
               "its steps were not re-sent (they may have run there)")
        for step in s.exec(select(StepCommand).where(
                StepCommand.experiment_id == exp.id,
                StepCommand.state.in_([st.value for st in _STEP_IN_FLIGHT]))).all():
            if step.state != StepState.UNKNOWN:
                self.store.step_transition(s, step.command_id, StepState.UNKNOWN, error=why)
        self.store.transition(exp.id, ExperimentState.FAILED, session=s, actor=f"lab:{self.lab_id}",
                              failure_kind=FailureKind.INSTRUMENT, reason=why)
        log.warning("experiment %s given up: %s", exp.id, why)

    def guard(self, session: Session, experiment_id: int) -> None:
        """Inside the transaction that writes a step: the row locked, still ours, still runnable."""
        exp = session.exec(select(Experiment).where(Experiment.id == experiment_id)
                           .with_for_update()).first()
        if exp is None or exp.claimed_by != self.lab_id:
            raise ClaimLost(f"experiment {experiment_id} is held by lab "
                            f"{None if exp is None else exp.claimed_by}, not {self.lab_id}")
        if exp.state not in RUNNABLE and exp.state not in ANALYSIS_STATES:
            raise ClaimLost(f"experiment {experiment_id} is {exp.state}")
        exp.lease_until = _db_now(session) + self.lease
        session.add(exp)

    def holds(self, experiment_id: int) -> bool:
        with self.store.session() as s:
            return s.exec(select(Experiment.claimed_by).where(Experiment.id == experiment_id)).first() \
                == self.lab_id

    def targets_in_work(self, batch_size: int, own: int) -> int:
        """How many targets the campaign keeps active: each sharing lab's furnace slots plus its
        spare (free-running), at least a batch.

        Why per lab: with one spare for the whole campaign, one lab got a round of slots + 1
        (two heat waves) and the other a round of slots, and a lockstep round lasted the longer."""
        with self.store.session() as s:
            now = _db_now(s)
            rows = self._present(s.exec(select(LabLease).where(
                LabLease.campaign_id == self.campaign_id)).all(), now)
        others = sum(int((r.capacities or {}).get("heat", 0)) + self.spare
                     for r in rows if r.lab_id != self.lab_id)
        return max(batch_size, own + self.spare + others)

    def other_labs_open(self) -> int:
        """Open experiments held by other labs that are still alive (a stop waits for them)."""
        with self.store.session() as s:
            now = _db_now(s)
            live = set(s.exec(select(LabLease.lab_id).where(LabLease.campaign_id == self.campaign_id,
                                                            LabLease.lease_until >= now)).all())
            rows = s.exec(select(Experiment.claimed_by).where(
                Experiment.campaign_id == self.campaign_id,
                Experiment.state.in_([st.value for st in OPEN_STATES]),
                Experiment.claimed_by.is_not(None), Experiment.claimed_by != self.lab_id)).all()
        return sum(1 for lab in rows if lab in live)

    def cancel_unstarted(self, reason: str) -> int:
        """A stop: withdraw not-started experiments no other live lab holds."""
        n = 0
        with self.store.session() as s:
            now = _db_now(s)
            rows = s.exec(select(Experiment).where(
                Experiment.campaign_id == self.campaign_id,
                Experiment.state.in_([st.value for st in NOT_STARTED]),
                or_(Experiment.claimed_by.is_(None), Experiment.claimed_by == self.lab_id,
                    Experiment.lease_until < now)).with_for_update(skip_locked=True)).all()
            started = _started(s, [e.id for e in rows])
            for exp in rows:
                if exp.id not in started:
                    self.store.transition(exp.id, ExperimentState.CANCELLED, session=s, reason=reason,
                                          actor=f"lab:{self.lab_id}")
                    n += 1
        return n

    # ------------------------------------------------------------------ decisions
    def try_lock(self, name: str) -> bool:
        """One controller at a time decides (``decide``) or trains (``train``)."""
        if name in self._held:
            return True
        ok = bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                     {"k": lock_key(self.campaign_id, name)}).scalar())
        if ok:
            self._held.add(name)
        return ok

    def unlock(self, name: str) -> None:
        if name in self._held:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self.campaign_id, name)})
            self._held.discard(name)

    def close(self) -> None:
        """A clean exit: the lab's lease and claims end now (others need not wait them out)."""
        if self._conn is None:
            return
        if not self._registered:
            self._drop_session()
            return
        with contextlib.suppress(Exception), self.store.session() as s:
            now = _db_now(s)
            s.execute(update(LabLease).where(LabLease.campaign_id == self.campaign_id,
                                          LabLease.lab_id == self.lab_id).values(lease_until=now, pid=0))
            s.execute(update(Experiment).where(Experiment.campaign_id == self.campaign_id,
                                            Experiment.claimed_by == self.lab_id)
                   .values(lease_until=now))
        self._drop_session()

    def _drop_session(self) -> None:
        if self._conn is not None:
            _end_session(self._conn)
        self._conn = None
        self._held.clear()


def _end_session(conn: Any) -> None:
    """Close the database session itself (not back into the pool): its advisory locks end."""
    with contextlib.suppress(Exception):
        conn.invalidate()
    with contextlib.suppress(Exception):
        conn.close()


def _db_now(s: Session) -> Any:
    """The database's clock: leases written by controllers on different machines compare on it."""
    return s.exec(select(func.now())).one()


def _started(s: Session, exp_ids: list[int]) -> set[int]:
    """Experiments with a step command written (it may have reached an instrument)."""
    if not exp_ids:
        return set()
    return set(s.exec(select(StepCommand.experiment_id).where(
        StepCommand.experiment_id.in_(exp_ids)).distinct()).all())


def open_claims(store: Store, campaign_id: int, campaign: str, lab: Any, *,
                lockstep: bool = False) -> SoloClaims | SharedClaims:
    """The claims of this controller: shared when the config names its lab (``lab.id``).
    ``lockstep``: rounds wait for every result, so a lab's round is its furnace slots, no spare."""
    lab_id = getattr(lab, "id", None)
    if not lab_id:
        return SoloClaims(store, campaign_id, campaign)
    return SharedClaims(store, campaign_id, campaign, lab_id, lease_s=lab.lease_s,
                        abandon_after_s=lab.abandon_after_s, rounds=lockstep)


GuardFn = Callable[[Session, int], None]
