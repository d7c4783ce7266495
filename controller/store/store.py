"""The campaign store: engine setup, migrations, transactional state transitions.

Why one transaction per transition: a state change of an experiment and the event row that
records it must both exist or neither, so that a ``kill -9`` between them can never leave a
state nobody logged (or a log line for a change that never happened).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as _OrmSession
from sqlmodel import Session, create_engine, select

from .models import Campaign, Event, Experiment, StepCommand, utcnow
from .states import STEP_TRANSITIONS, ExperimentState, FailureKind, StepState, check_transition


class StoreErrorKind(StrEnum):
    """Why a store operation could not be done — data a caller branches on (the web app maps it to
    404 / 409 / 422), never read off the message's wording."""

    NOT_FOUND = "not_found"  # no such campaign, experiment, step command
    CONFLICT = "conflict"  # the row exists but is in a state that forbids the operation
    INVALID = "invalid"  # the request itself is wrong (unknown field, unsupported URL, bad value)


class StoreError(RuntimeError):
    """A store operation that cannot be done; ``kind`` says why (see :class:`StoreErrorKind`)."""

    def __init__(self, message: str, kind: StoreErrorKind = StoreErrorKind.CONFLICT):
        super().__init__(message)
        self.kind = StoreErrorKind(kind)

    def __reduce__(self) -> tuple:  # keep the kind across processes (pickle passes only args)
        return type(self), (str(self), self.kind)


class AppendOnlyViolation(StoreError):
    """Raised when code tries to change or delete a row of the event log."""


@sa_event.listens_for(_OrmSession, "before_flush")
def _guard_event_log(session: _OrmSession, _ctx: Any, _instances: Any) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, Event) and (obj in session.deleted or session.is_modified(obj)):
            raise AppendOnlyViolation("the event log is append-only: events are never changed or deleted")


#: Every event row, once committed, is also a log record here (INFO): the campaign log file
#: (``synthloop run``) then reads as the event log does, without a second place that decides
#: what is worth saying.
event_log = logging.getLogger("synthloop.events")
_PENDING_EVENTS = "synthloop_pending_events"


@sa_event.listens_for(_OrmSession, "after_commit")
def _log_committed_events(session: _OrmSession) -> None:
    for line in session.info.pop(_PENDING_EVENTS, ()):
        event_log.info("%s", line)


@sa_event.listens_for(_OrmSession, "after_rollback")
def _forget_rolled_back_events(session: _OrmSession) -> None:
    session.info.pop(_PENDING_EVENTS, None)


def _event_line(kind: str, entity: str | None, entity_id: int | None, from_state: str | None,
                to_state: str | None, actor: str | None, message: str | None) -> str:
    subject = f" {entity} {entity_id}" if entity and entity_id is not None else ""
    arrow = f" {from_state or '-'}→{to_state}" if to_state else ""
    who = f" [{actor}]" if actor else ""
    return f"{kind}{subject}{arrow}{who}{': ' + message if message else ''}"


def resolve_url(url: str, base_dir: str | Path | None) -> str:
    """Make a relative SQLite path relative to the campaign directory, not the CWD."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        db_path = Path(parsed.database)
        if not db_path.is_absolute() and base_dir is not None:
            db_path = Path(base_dir) / db_path
        return str(parsed.set(database=str(db_path.resolve())))
    return url


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa_event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling defers BEGIN; we issue it ourselves so a
            # transaction really spans every statement of a unit of work.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @sa_event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    raise StoreError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql+psycopg://",
                     StoreErrorKind.INVALID)


MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 0x53594E5448_4D4947  # advisory-lock key of schema upgrades ("SYNTH" "MIG")


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # the option goes through configparser interpolation: a '%' (a campaign directory named
    # with one, a %-escaped password) must be written '%%' or set_main_option raises ValueError
    cfg.set_main_option("sqlalchemy.url",
                        engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


class Store:
    """Access to one campaign database; opening it migrates the schema to the newest revision."""

    def __init__(self, url: str, *, migrate: bool = True):
        self.url = url
        self.engine = _make_engine(url)
        if migrate:
            self.upgrade()

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def for_campaign_dir(cls, campaign_dir: str | Path, url: str = "sqlite:///campaign.db") -> Store:
        return cls(resolve_url(url, campaign_dir))

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with Alembic (a no-op when already there)."""
        from alembic import command

        cfg = alembic_config(self.engine)
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # several controllers (one per lab) may open a fresh campaign database at once:
                # one migrates, the others wait here and then find the schema at head
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def table_names(self) -> list[str]:
        return sorted(inspect(self.engine).get_table_names())

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on normal exit, rolled back entirely on any exception."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    # ------------------------------------------------------------------ events
    @staticmethod
    def log(
        session: Session,
        kind: str,
        *,
        campaign_id: int | None = None,
        entity: str | None = None,
        entity_id: int | None = None,
        from_state: str | None = None,
        to_state: str | None = None,
        actor: str | None = None,
        message: str | None = None,
        data: dict | None = None,
    ) -> Event:
        """Append an event inside the caller's transaction (it commits with the change it records)."""
        ev = Event(
            campaign_id=campaign_id,
            kind=kind,
            entity=entity,
            entity_id=entity_id,
            from_state=from_state,
            to_state=to_state,
            actor=actor,
            message=message,
            data=data,
        )
        session.add(ev)
        if event_log.isEnabledFor(logging.INFO):
            session.info.setdefault(_PENDING_EVENTS, []).append(
                _event_line(kind, entity, entity_id, from_state, to_state, actor, message))
        return ev

    # ------------------------------------------------------------------ campaigns
    def ensure_campaign(self, name: str, *, seed: int = 0, config_yaml: str = "") -> Campaign:
        """Return the campaign called ``name``, creating it (and logging that) if new."""
        try:
            with self.session() as s:
                existing = s.exec(select(Campaign).where(Campaign.name == name)).first()
                if existing is not None:
                    return existing
                campaign = Campaign(name=name, seed=seed, config_yaml=config_yaml)
                s.add(campaign)
                s.flush()
                self.log(s, "campaign.created", campaign_id=campaign.id, entity="campaign",
                         entity_id=campaign.id, actor="controller", message=f"campaign {name!r} created")
                return campaign
        except IntegrityError:  # another lab's controller created it a moment ago
            return self.get_campaign(name)

    def get_campaign(self, name: str | None = None) -> Campaign:
        with self.session() as s:
            query = select(Campaign)
            if name is not None:
                query = query.where(Campaign.name == name)
            found = s.exec(query.order_by(Campaign.id)).first()
        if found is None:
            raise StoreError(f"no campaign {name!r} in this store" if name else "this store holds no campaign",
                             StoreErrorKind.NOT_FOUND)
        return found

    # ------------------------------------------------------------------ transitions
    def transition(
        self,
        experiment_id: int,
        to_state: ExperimentState | str,
        *,
        reason: str | None = None,
        actor: str = "controller",
        data: dict | None = None,
        session: Session | None = None,
        failure_kind: FailureKind | str | None = None,
        **fields: Any,
    ) -> Experiment:
        """Move an experiment to ``to_state`` and log it, atomically.

        Extra keyword ``fields`` (e.g. ``target_yield=0.62``) are set on the row in the same
        transaction. Pass ``session`` to join a larger unit of work; otherwise one is opened
        and committed here.

        ``failure_kind`` classifies an end without success and is required for ``failed`` (a
        ``ValueError`` otherwise, before anything changes: an unclassified failure would be read
        wrongly by every later decision). ``cancelled`` is always of kind ``cancelled``. The kind
        is set on the row and carried in the event's ``data["failure_kind"]``.
        """
        if session is None:
            with self.session() as s:
                return self.transition(experiment_id, to_state, reason=reason, actor=actor,
                                       data=data, session=s, failure_kind=failure_kind, **fields)
        query = select(Experiment).where(Experiment.id == experiment_id)
        if self.engine.dialect.name == "postgresql":
            query = query.with_for_update()
        exp = session.exec(query).first()
        if exp is None:
            raise StoreError(f"no experiment with id {experiment_id}", StoreErrorKind.NOT_FOUND)
        previous = exp.state
        new = check_transition(experiment_id, previous, str(to_state))
        kind = _failure_kind_for(experiment_id, new, failure_kind)  # before anything changes
        exp.state = new.value
        exp.updated_at = utcnow()
        if reason is not None:
            exp.reason = reason
        for key, value in fields.items():
            if not hasattr(exp, key):
                raise StoreError(f"experiment has no field {key!r}", StoreErrorKind.INVALID)
            setattr(exp, key, value)
        if kind is not None:
            exp.failure_kind = kind.value
            data = {**(data or {}), "failure_kind": kind.value}
        session.add(exp)
        self.log(session, "experiment.transition", campaign_id=exp.campaign_id, entity="experiment",
                 entity_id=exp.id, from_state=previous, to_state=new.value, actor=actor,
                 message=reason, data=data)
        session.flush()
        return exp

    def step_transition(
        self,
        session: Session,
        command_id: str,
        to_state: StepState | str,
        *,
        result: dict | None = None,
        error: str | None = None,
        driver: str | None = None,
    ) -> StepCommand:
        """Move a step command to ``to_state`` inside the caller's transaction, with its event."""
        step = session.exec(select(StepCommand).where(StepCommand.command_id == command_id)).first()
        if step is None:
            raise StoreError(f"no step command {command_id}", StoreErrorKind.NOT_FOUND)
        cur, new = StepState(step.state), StepState(str(to_state))
        if new not in STEP_TRANSITIONS[cur]:
            raise StoreError(f"step {command_id}: cannot go from {cur.value!r} to {new.value!r}")
        step.state = new.value
        step.updated_at = utcnow()
        if result is not None:
            step.result = result
        if error is not None:
            step.error = error
        if driver is not None:
            step.driver = driver
        session.add(step)
        exp = session.get(Experiment, step.experiment_id)
        self.log(session, "step.transition", campaign_id=exp.campaign_id if exp else None,
                 entity="step", entity_id=step.id, from_state=cur.value, to_state=new.value,
                 actor="controller", message=error, data={"command_id": command_id, "step": step.step})
        session.flush()
        return step

    # ------------------------------------------------------------------ reading
    def experiment_counts(self, campaign_id: int) -> dict[str, int]:
        with self.session() as s:
            rows = s.exec(
                select(Experiment.state, func.count())
                .where(Experiment.campaign_id == campaign_id)
                .group_by(Experiment.state)
            ).all()
        return {state: int(n) for state, n in rows}

    def recent_events(self, campaign_id: int, limit: int = 10) -> list[Event]:
        with self.session() as s:
            return list(
                s.exec(
                    select(Event).where(Event.campaign_id == campaign_id).order_by(Event.id.desc()).limit(limit)
                ).all()
            )


def _failure_kind_for(experiment_id: int, to_state: ExperimentState, given: FailureKind | str | None) -> FailureKind | None:
    """The kind a move to ``to_state`` records, or ``ValueError`` for a missing or misplaced one."""
    kind = None
    if given is not None:
        try:
            kind = FailureKind(str(given))
        except ValueError:
            allowed = ", ".join(k.value for k in FailureKind)
            raise ValueError(f"experiment {experiment_id}: unknown failure kind {str(given)!r}; "
                             f"allowed: {allowed}") from None
    if to_state == ExperimentState.FAILED:
        if kind is None or kind == FailureKind.CANCELLED:
            raise ValueError(f"experiment {experiment_id}: a move to 'failed' needs a failure_kind "
                             f"(chemistry, instrument or unverified), got {given!r}")
        return kind
    if to_state == ExperimentState.CANCELLED:
        if kind not in (None, FailureKind.CANCELLED):
            raise ValueError(f"experiment {experiment_id}: a cancelled experiment is of kind 'cancelled', "
                             f"not {kind.value!r}")
        return FailureKind.CANCELLED
    if kind is not None:
        raise ValueError(f"experiment {experiment_id}: failure_kind {kind.value!r} given for a move to "
                         f"{to_state.value!r}; only 'failed' and 'cancelled' carry one")
    return None


def iso(ts: datetime | None) -> str | None:
    return ts.isoformat(timespec="seconds") if ts else None
