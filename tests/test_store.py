"""SQL store: state machine, atomic transitions, append-only log, migrations (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from controller.store import (
    IN_FLIGHT,
    NOT_STARTED,
    OPEN_STATES,
    RUNNABLE,
    TERMINAL_STATES,
    TRANSITIONS,
    VERDICT_STATES,
    AppendOnlyViolation,
    Campaign,
    Event,
    Experiment,
    ExperimentState,
    FailureKind,
    IllegalTransition,
    Measurement,
    Recipe,
    StepCommand,
    StepState,
    Store,
    StoreError,
    StoreErrorKind,
    Target,
    pack_array,
    resolve_url,
    unpack_array,
)

LEGAL = [(a, b) for a, nxt in TRANSITIONS.items() for b in sorted(nxt)]
ILLEGAL = [(a, b) for a, b in itertools.product(ExperimentState, ExperimentState) if b not in TRANSITIONS[a]]


def make_experiment(store: Store, state: ExperimentState = ExperimentState.PROPOSED, sample: str = "S1") -> int:
    campaign = store.ensure_campaign("c1", seed=1)
    with store.session() as s:
        target = Target(campaign_id=campaign.id, formula="LiMn2O4")
        s.add(target)
        s.flush()
        recipe = Recipe(target_id=target.id, ordinal=1, precursors=[{"formula": "Li2CO3", "moles": 0.5}],
                        profile=[{"ramp_c_per_min": 5, "setpoint_c": 800, "dwell_min": 600}])
        s.add(recipe)
        s.flush()
        exp = Experiment(campaign_id=campaign.id, target_id=target.id, recipe_id=recipe.id,
                         sample_id=sample, state=state.value)
        s.add(exp)
        s.flush()
        return exp.id


def events_for(store: Store, exp_id: int) -> list[Event]:
    with store.session() as s:
        return list(s.exec(select(Event).where(Event.entity == "experiment", Event.entity_id == exp_id)).all())


def state_of(store: Store, exp_id: int) -> str:
    with store.session() as s:
        return s.get(Experiment, exp_id).state


def test_state_machine_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(ExperimentState)
    # every non-terminal state can reach a terminal one
    terminal = {s for s, n in TRANSITIONS.items() if not n}
    assert terminal == {ExperimentState.SUCCEEDED, ExperimentState.FAILED, ExperimentState.CANCELLED}


def test_every_legal_transition_commits_with_its_event(store: Store) -> None:
    for i, (src, dst) in enumerate(LEGAL):
        exp_id = make_experiment(store, src, sample=f"L{i}")
        kind = FailureKind.CHEMISTRY if dst == ExperimentState.FAILED else None
        store.transition(exp_id, dst, reason=f"{src}->{dst}", actor="test", failure_kind=kind)
        assert state_of(store, exp_id) == dst.value
        evs = events_for(store, exp_id)
        assert [(e.from_state, e.to_state, e.actor) for e in evs] == [(src.value, dst.value, "test")]


def test_committed_events_reach_the_log_and_rolled_back_ones_do_not(store: Store, caplog) -> None:
    # the campaign log file (synthloop run) is the event log in words: a transition that commits
    # is one INFO record of "synthloop.events"; one that is refused leaves no record behind
    exp_id = make_experiment(store)
    with caplog.at_level("INFO", logger="synthloop.events"):
        store.transition(exp_id, "approved", reason="looks right", actor="user:ada")
        with pytest.raises(IllegalTransition):
            store.transition(exp_id, "succeeded", reason="skipping the lab")
    lines = [r.getMessage() for r in caplog.records if r.name == "synthloop.events"]
    assert lines == [f"experiment.transition experiment {exp_id} proposed→approved [user:ada]: looks right"]


def test_every_illegal_transition_raises_and_changes_nothing(store: Store) -> None:
    ids = {src: make_experiment(store, src, sample=f"I-{src.value}") for src in ExperimentState}
    for src, dst in ILLEGAL:
        with pytest.raises(IllegalTransition) as info:
            store.transition(ids[src], dst)
        assert src.value in str(info.value) and dst.value in str(info.value)
    for src, exp_id in ids.items():
        assert state_of(store, exp_id) == src.value
        assert events_for(store, exp_id) == []


def test_full_happy_path_and_fields(store: Store) -> None:
    exp_id = make_experiment(store)
    for state in ["approved", "queued", "running", "measured", "analysed"]:
        store.transition(exp_id, state)
    store.transition(exp_id, "succeeded", target_yield=0.71, reason="yield 71 % >= 50 %")
    with store.session() as s:
        exp = s.get(Experiment, exp_id)
    assert exp.state == "succeeded" and exp.target_yield == pytest.approx(0.71)
    assert len(events_for(store, exp_id)) == 6


def test_state_groups_are_the_named_sets() -> None:
    S = ExperimentState
    assert OPEN_STATES == frozenset(S) - TERMINAL_STATES
    assert TERMINAL_STATES == {S.SUCCEEDED, S.FAILED, S.CANCELLED}
    assert NOT_STARTED == {S.PROPOSED, S.APPROVED, S.QUEUED}
    assert RUNNABLE == {S.QUEUED, S.RUNNING, S.UNKNOWN}
    assert IN_FLIGHT == OPEN_STATES - {S.PROPOSED}
    assert VERDICT_STATES == {S.SUCCEEDED, S.FAILED}
    assert "queued" in RUNNABLE  # a stored state string tests membership directly


def _to_running(store: Store, exp_id: int) -> None:
    for state in ("approved", "queued", "running"):
        store.transition(exp_id, state)


def test_failed_needs_a_failure_kind_and_changes_nothing_without_one(store: Store) -> None:
    exp_id = make_experiment(store)
    _to_running(store, exp_id)
    n_events = len(events_for(store, exp_id))
    for bad in (None, "cancelled", "no-such-kind"):
        with pytest.raises(ValueError, match=f"experiment {exp_id}"):
            store.transition(exp_id, ExperimentState.FAILED, reason="heat failed", failure_kind=bad)
    assert state_of(store, exp_id) == "running" and len(events_for(store, exp_id)) == n_events
    with store.session() as s:
        assert s.get(Experiment, exp_id).failure_kind is None
        # inside a caller's unit of work too: the whole unit is rolled back
    with pytest.raises(ValueError, match="failure_kind"):
        with store.session() as s:
            s.add(Event(kind="note", message="part of the same unit of work"))
            store.transition(exp_id, "failed", session=s)
    with store.session() as s:
        assert not s.exec(select(Event).where(Event.kind == "note")).all()

    store.transition(exp_id, "failed", reason="heat failed after 3 attempt(s)", failure_kind="instrument",
                     data={"step": "heat"})
    with store.session() as s:
        exp = s.get(Experiment, exp_id)
    assert exp.state == "failed" and exp.failure_kind == FailureKind.INSTRUMENT
    last = events_for(store, exp_id)[-1]
    assert last.to_state == "failed" and last.data == {"step": "heat", "failure_kind": "instrument"}


def test_cancelled_gets_its_kind_and_other_moves_take_none(store: Store) -> None:
    exp_id = make_experiment(store)
    store.transition(exp_id, "cancelled", reason="rejected")
    with store.session() as s:
        assert s.get(Experiment, exp_id).failure_kind == FailureKind.CANCELLED.value
    assert events_for(store, exp_id)[-1].data == {"failure_kind": "cancelled"}
    other = make_experiment(store, sample="S2")
    with pytest.raises(ValueError, match=f"experiment {other}.*cancelled"):
        store.transition(other, "cancelled", failure_kind=FailureKind.INSTRUMENT)
    with pytest.raises(ValueError, match=f"experiment {other}.*'approved'"):
        store.transition(other, "approved", failure_kind=FailureKind.CHEMISTRY)
    store.transition(other, "approved")
    with store.session() as s:
        assert s.get(Experiment, other).failure_kind is None
    assert events_for(store, other)[-1].data is None


def test_transition_of_missing_experiment(store: Store) -> None:
    with pytest.raises(StoreError, match="no experiment with id 999") as info:
        store.transition(999, "approved")
    # callers (the web app's 404 vs 409) branch on the kind, not on the message's wording
    assert info.value.kind is StoreErrorKind.NOT_FOUND
    again = pickle.loads(pickle.dumps(info.value))  # crosses a process boundary intact
    assert again.kind is StoreErrorKind.NOT_FOUND and str(again) == str(info.value)


def test_exception_inside_unit_of_work_rolls_back_everything(store: Store) -> None:
    exp_id = make_experiment(store)
    with pytest.raises(RuntimeError, match="power cut"):
        with store.session() as s:
            store.transition(exp_id, "approved", session=s)
            store.transition(exp_id, "queued", session=s)
            raise RuntimeError("power cut")
    assert state_of(store, exp_id) == "proposed"
    assert events_for(store, exp_id) == []


def test_bad_field_rolls_back_the_state_change(store: Store) -> None:
    exp_id = make_experiment(store)
    with pytest.raises(StoreError, match="no field") as info:
        store.transition(exp_id, "approved", no_such_field=1)
    assert info.value.kind is StoreErrorKind.INVALID
    assert state_of(store, exp_id) == "proposed"
    assert events_for(store, exp_id) == []


def test_process_killed_mid_transaction_leaves_no_partial_state(store: Store, tmp_path: Path) -> None:
    """A real SIGKILL between the state update and the commit: neither row survives."""
    exp_id = make_experiment(store)
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import time, pathlib
        from controller.store import Store
        store = Store({store.url!r})
        with store.session() as s:
            store.transition({exp_id}, "approved", session=s)  # flushed, not committed
            store.transition({exp_id}, "queued", session=s)
            pathlib.Path({str(ready)!r}).write_text("1")
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(600):
            if ready.exists() or proc.poll() is not None:
                break
            import time

            time.sleep(0.05)
        assert ready.exists(), "child never reached the middle of its transaction"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    fresh = Store(store.url)
    try:
        assert state_of(fresh, exp_id) == "proposed"
        assert events_for(fresh, exp_id) == []
        fresh.transition(exp_id, "approved")  # the store is usable afterwards
    finally:
        fresh.close()


def test_event_log_is_append_only_in_orm_and_database(store: Store) -> None:
    exp_id = make_experiment(store)
    store.transition(exp_id, "approved")
    with pytest.raises(AppendOnlyViolation):
        with store.session() as s:
            ev = s.exec(select(Event).where(Event.entity_id == exp_id)).first()
            ev.message = "rewritten"
    with pytest.raises(AppendOnlyViolation):
        with store.session() as s:
            s.delete(s.exec(select(Event)).first())
    for sql in ("UPDATE event SET message = 'x'", "DELETE FROM event"):
        with pytest.raises(Exception, match="append-only"):
            with store.engine.begin() as conn:
                conn.execute(text(sql))
    assert len(events_for(store, exp_id)) == 1


def test_step_commands_have_unique_ids_and_a_state_machine(store: Store) -> None:
    exp_id = make_experiment(store)
    with store.session() as s:
        s.add(StepCommand(command_id="cmd-1", experiment_id=exp_id, step="heat", payload={"setpoint_c": 900}))
    with pytest.raises(IntegrityError):
        with store.session() as s:
            s.add(StepCommand(command_id="cmd-1", experiment_id=exp_id, step="heat"))
    with store.session() as s:
        store.step_transition(s, "cmd-1", StepState.SENT, driver="furnace-1")
        store.step_transition(s, "cmd-1", StepState.ACKED)
        store.step_transition(s, "cmd-1", StepState.SUCCEEDED, result={"ok": True})
    with pytest.raises(StoreError, match="cannot go from 'succeeded'"):
        with store.session() as s:
            store.step_transition(s, "cmd-1", StepState.SENT)


def test_measurement_arrays_round_trip_compactly(store: Store) -> None:
    exp_id = make_experiment(store)
    tt = np.linspace(10, 80, 7001)
    counts = np.random.default_rng(0).poisson(200, tt.size).astype(float)
    with store.session() as s:
        m = Measurement(experiment_id=exp_id, n_points=tt.size, two_theta=pack_array(tt),
                        intensities=pack_array(counts), source="test")
        s.add(m)
        s.flush()
        mid = m.id
    with store.session() as s:
        m = s.get(Measurement, mid)
        assert np.allclose(unpack_array(m.two_theta), tt, atol=1e-4)
        assert np.array_equal(unpack_array(m.intensities), counts)
        assert len(m.intensities) < counts.size * 4  # compressed below raw float32 size


def test_unpack_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="bad header"):
        unpack_array(b"not an array")


def test_alembic_upgrade_from_first_revision_keeps_data(db_url: str) -> None:
    old = Store(db_url, migrate=False)
    old.upgrade("0001")
    assert old.current_revision() == "0001"
    with old.engine.begin() as conn:
        conn.execute(text("INSERT INTO campaign (name, seed, config_yaml, status, created_at, updated_at) "
                          "VALUES ('legacy', 7, '', 'created', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        conn.execute(text("UPDATE campaign SET status = 'running'"))  # no triggers yet in 0001
        conn.execute(text("INSERT INTO event (kind, ts) VALUES ('legacy.event', CURRENT_TIMESTAMP)"))
    old.close()
    new = Store(db_url)  # opening migrates to head
    try:
        assert new.current_revision() == "0004"
        campaign = new.get_campaign("legacy")
        assert campaign.seed == 7 and campaign.status == "running"
        with pytest.raises(Exception, match="append-only"):
            with new.engine.begin() as conn:
                conn.execute(text("DELETE FROM event"))
    finally:
        new.close()


def test_upgrade_to_0003_fills_failure_kind_from_the_old_reason_prefixes(db_url: str) -> None:
    old = Store(db_url, migrate=False)
    old.upgrade("0002")
    assert old.current_revision() == "0002"
    rows = [  # (state, reason as the loop wrote it before 0003, expected kind)
        ("failed", "instrument: heat failed after 3 attempt(s): furnace fault", "instrument"),
        ("failed", "instrument: xrd command unaccounted for after a restart", "instrument"),
        ("failed", "unverified: yield 0.55 but its lower bound 0.41 is below the threshold 0.50",
         "unverified"),
        ("failed", "yield 0.12 below threshold 0.50", "chemistry"),
        ("failed", None, "chemistry"),
        ("failed", "Instrument-free reason (capital I)", "chemistry"),
        ("cancelled", "rejected by cli:alice", "cancelled"),
        ("cancelled", "instrument: heat failed after 1 attempt(s)", "cancelled"),
        ("succeeded", "yield 0.71 (lower bound 0.62) >= threshold 0.50", None),
        ("running", "heat sent (attempt 1)", None),
        ("unknown", "instrument: looks like a prefix but not failed", None),
        ("proposed", None, None),
    ]
    with old.engine.begin() as conn:
        conn.execute(text("INSERT INTO campaign (name, seed, config_yaml, status, created_at, updated_at) "
                          "VALUES ('legacy', 7, '', 'running', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        cid = conn.execute(text("SELECT id FROM campaign WHERE name = 'legacy'")).scalar_one()
        conn.execute(text("INSERT INTO target (campaign_id, formula, state, created_at, updated_at) "
                          "VALUES (:c, 'LiMn2O4', 'active', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"c": cid})
        tid = conn.execute(text("SELECT id FROM target")).scalar_one()
        conn.execute(text("INSERT INTO recipe (target_id, ordinal, atmosphere, planner, rationale, created_at) "
                          "VALUES (:t, 1, 'air', 'test', '', CURRENT_TIMESTAMP)"), {"t": tid})
        rid = conn.execute(text("SELECT id FROM recipe")).scalar_one()
        for i, (state, reason, _) in enumerate(rows):
            conn.execute(text("INSERT INTO experiment (campaign_id, target_id, recipe_id, sample_id, state, "
                              "reason, attempt, created_at, updated_at) VALUES (:c, :t, :r, :s, :st, :re, 1, "
                              "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                         {"c": cid, "t": tid, "r": rid, "s": f"legacy-{i}", "st": state, "re": reason})
    old.close()
    new = Store(db_url)  # opening migrates to head
    try:
        assert new.current_revision() == "0004"
        with new.session() as s:
            got = {e.sample_id: (e.state, e.reason, e.failure_kind)
                   for e in s.exec(select(Experiment)).all()}
        assert got == {f"legacy-{i}": (state, reason, kind) for i, (state, reason, kind) in enumerate(rows)}
        # and the upgraded store takes new transitions with kinds
        running = f"legacy-{[state for state, _, _ in rows].index('running')}"
        with new.session() as s:
            exp_id = s.exec(select(Experiment.id).where(Experiment.sample_id == running)).one()
        new.transition(exp_id, "failed", failure_kind=FailureKind.INSTRUMENT, reason="furnace fault")
    finally:
        new.close()


def test_models_match_migrated_schema(store: Store) -> None:
    """A model change without a migration fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == [], f"models and migrations differ: {diff}"


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path / 'x.db'}")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    s.close()


def test_relative_sqlite_url_is_relative_to_campaign_dir(tmp_path: Path) -> None:
    url = resolve_url("sqlite:///campaign.db", tmp_path)
    assert url == f"sqlite:///{(tmp_path / 'campaign.db').resolve()}"
    assert resolve_url("postgresql+psycopg://u@h/db", tmp_path) == "postgresql+psycopg://u@h/db"


def test_ensure_campaign_is_idempotent(store: Store) -> None:
    a = store.ensure_campaign("same", seed=3)
    b = store.ensure_campaign("same", seed=99)
    assert a.id == b.id and b.seed == 3
    with store.session() as s:
        assert len(s.exec(select(Campaign)).all()) == 1
