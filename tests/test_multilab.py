"""Several labs on one campaign: claims in PostgreSQL, one controller per lab, nothing run twice.

The claim rules are checked on rows (fast), then two simulated labs — real controller processes,
real instruments over ZeroMQ on loopback — share one PostgreSQL campaign while one controller is
SIGKILLed and restarted. Every PostgreSQL test skips with a message when no server answers.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import select

from controller.loop.claims import (
    ClaimLost,
    ControllerConflict,
    SharedClaims,
    SoloClaims,
    open_claims,
)
from controller.store import (
    Campaign,
    Event,
    Experiment,
    ExperimentState,
    Recipe,
    StepCommand,
    Store,
    Target,
)


class _Records:  # what SoloClaims.claim asks of CampaignRecords
    def experiments_to_advance(self) -> list:
        return [(1, ExperimentState.QUEUED)]


class _Lab:
    def __init__(self, lab_id: str | None, lease_s: float = 30.0, abandon_after_s: float = 600.0):
        self.id, self.lease_s, self.abandon_after_s = lab_id, lease_s, abandon_after_s


def _campaign(store: Store, n: int, state: str = "queued", sample: str = "S") -> tuple[int, list[int]]:
    camp = store.ensure_campaign("shared")
    with store.session() as s:
        t = Target(campaign_id=camp.id, formula="LiMn2O4")
        s.add(t)
        s.flush()
        r = Recipe(target_id=t.id, ordinal=1)
        s.add(r)
        s.flush()
        rows = [Experiment(campaign_id=camp.id, target_id=t.id, recipe_id=r.id, sample_id=f"{sample}{i}",
                           state=state) for i in range(n)]
        s.add_all(rows)
        s.flush()
        return camp.id, [e.id for e in rows]


def _expire(store: Store, lab_id: str, seconds: float = 3600.0) -> None:
    """Move a lab's lease and claims into the past (as if it had been silent that long)."""
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE experiment SET lease_until = now() - make_interval(secs => :s) "
                          "WHERE claimed_by = :l"), {"s": seconds, "l": lab_id})
        conn.execute(text("UPDATE lablease SET lease_until = now() - make_interval(secs => :s) "
                          "WHERE lab_id = :l"), {"s": seconds, "l": lab_id})


@pytest.mark.postgres
def test_each_experiment_is_claimed_by_one_lab_up_to_its_slots(pg_url: str) -> None:
    with Store(pg_url) as store:
        cid, ids = _campaign(store, 5)
        a, b = SharedClaims(store, cid, "shared", "A"), SharedClaims(store, cid, "shared", "B")
        try:
            a.acquire()
            b.acquire()
            a.register({"heat": 2})
            b.register({"heat": 3})
            got_a = [i for i, _ in a.claim(None, limit_new=2)]
            got_b = [i for i, _ in b.claim(None, limit_new=2)]
            assert got_a == ids[:2] and got_b == ids[2:4]  # no experiment on two labs
            assert [i for i, _ in a.claim(None, limit_new=2)] == ids[:2]  # a lab keeps what it holds
            # the campaign sizes its work by every live lab's furnaces (free-running: + a spare each)
            assert a.targets_in_work(1, 2) == (2 + 1) + (3 + 1)
            with store.session() as s:
                a.guard(s, ids[0])  # ours: a step may be written
                with pytest.raises(ClaimLost):
                    a.guard(s, ids[2])  # lab B's: never
        finally:
            a.close()
            b.close()


@pytest.mark.postgres
def test_expired_claims_are_taken_back_but_a_started_experiment_stays_with_its_lab(pg_url: str) -> None:
    with Store(pg_url) as store:
        cid, ids = _campaign(store, 3)
        a = SharedClaims(store, cid, "shared", "A", abandon_after_s=600)
        a.acquire()
        a.register({"heat": 4})
        assert [i for i, _ in a.claim(None, limit_new=4)] == ids
        with store.session() as s:  # ids[0] reached lab A's instruments; ids[1] was measured there
            s.add(StepCommand(command_id="c-0", experiment_id=ids[0], step="dose_mix", state="sent",
                              lab_id="A"))
            s.add(StepCommand(command_id="c-1", experiment_id=ids[1], step="xrd", state="succeeded",
                              lab_id="A"))
            s.get(Experiment, ids[0]).state = "running"
            s.get(Experiment, ids[1]).state = "measured"
        a._conn.invalidate()  # lab A's controller dies: the server drops its session and locks
        a._conn = None
        _expire(store, "A", seconds=60)
        b = SharedClaims(store, cid, "shared", "B", abandon_after_s=600)
        try:
            b.acquire()
            b.register({"heat": 4})
            got = dict(b.claim(None, limit_new=4))
            # unstarted and measured ones move to B; the one on A's instruments waits for A
            assert set(got) == {ids[1], ids[2]}
            with store.session() as s:
                assert s.get(Experiment, ids[0]).claimed_by == "A"
                takeovers = s.exec(select(Event).where(Event.kind == "experiment.claimed")).all()
            assert {(ev.entity_id, (ev.data or {}).get("from")) for ev in takeovers} >= {
                (ids[1], "A"), (ids[2], "A")}
            # lab A's controller restarts: it keeps what is on its instruments, not what B took
            a2 = SharedClaims(store, cid, "shared", "A")
            a2.acquire()
            assert [i for i, _ in a2.claim(None, limit_new=4)] == [ids[0]]
            a2.close()
            # silent past abandon_after_s: given up as an instrument failure, never re-sent
            _expire(store, "A", seconds=3600)
            b.claim(None, limit_new=4)
            with store.session() as s:
                exp = s.get(Experiment, ids[0])
                step = s.exec(select(StepCommand).where(StepCommand.command_id == "c-0")).one()
            assert (exp.state, exp.failure_kind) == ("failed", "instrument")
            assert step.state == "unknown"
        finally:
            b.close()


@pytest.mark.postgres
def test_each_lab_gets_a_round_of_its_own_furnace_slots(pg_url: str) -> None:
    """Targets in work = every lab's slots (+ one spare each when free-running): two labs split a
    lockstep round evenly instead of one of them getting a second heat wave."""
    with Store(pg_url) as store:
        cid, ids = _campaign(store, 8)
        a = SharedClaims(store, cid, "shared", "A", rounds=True)
        b = SharedClaims(store, cid, "shared", "B", rounds=True)
        try:
            for c in (a, b):
                c.acquire()
                c.register({"heat": 4})
            assert a.targets_in_work(3, 4) == 8  # lockstep: 4 + 4, no spare
            assert SharedClaims(store, cid, "shared", "C").targets_in_work(3, 4) == (4 + 1) + 5 + 5
            assert [i for i, _ in a.claim(None, limit_new=5)] == ids[:4]  # its 4 slots, not 5
            with store.engine.begin() as conn:  # lab A's round is done before B took its share
                conn.execute(text("UPDATE experiment SET state = 'failed' WHERE claimed_by = 'A'"))
            assert a.claim(None, limit_new=5) == []  # no second share of the same round
            assert [i for i, _ in b.claim(None, limit_new=5)] == ids[4:8]
            with store.engine.begin() as conn:
                conn.execute(text("UPDATE experiment SET state = 'failed'"))
            b.start_round()  # the next round's barrier
            _, more = _campaign(store, 10, sample="T")  # the next round: larger than the slots
            assert [i for i, _ in a.claim(None, limit_new=5)] == more[:5]  # half of it
            assert [i for i, _ in b.claim(None, limit_new=5)] == more[5:]
        finally:
            a.close()
            b.close()


@pytest.mark.postgres
def test_a_silent_lab_keeps_its_share_until_abandoned_a_departed_one_does_not(pg_url: str) -> None:
    with Store(pg_url) as store:
        cid, ids = _campaign(store, 8)
        a = SharedClaims(store, cid, "shared", "A", abandon_after_s=600)
        b = SharedClaims(store, cid, "shared", "B", abandon_after_s=600)
        try:
            for c in (a, b):
                c.acquire()
                c.register({"heat": 8})
            a._conn.invalidate()  # lab A's controller dies (SIGKILL): nothing claimed yet
            a._conn = None
            _expire(store, "A", seconds=60)
            # silent for a minute: a restart is likely, B keeps to its half of the round
            assert b.targets_in_work(3, 8) == 18
            assert [i for i, _ in b.claim(None, limit_new=9)] == ids[:4]
            _expire(store, "A", seconds=3600)  # silent past abandon_after_s: gone, B takes it all
            assert b.targets_in_work(3, 8) == 9
            assert [i for i, _ in b.claim(None, limit_new=9)] == ids
        finally:
            b.close()
        with Store(pg_url) as again:
            c = SharedClaims(again, cid, "shared", "C")
            c.acquire()
            c.register({"heat": 4})
            b.close()  # (already closed: a no-op)
            # B left cleanly (close) a moment ago: not waited for, unlike a silent lab
            assert c.targets_in_work(3, 4) == 5
            c.close()


@pytest.mark.postgres
def test_one_controller_per_lab_and_no_lone_controller_among_labs(pg_url: str) -> None:
    with Store(pg_url) as store:
        cid, _ = _campaign(store, 1)
        a = SharedClaims(store, cid, "shared", "A")
        a.acquire()
        try:
            with pytest.raises(ControllerConflict, match="lab 'A' already has a controller"):
                SharedClaims(store, cid, "shared", "A").acquire()
            with pytest.raises(ControllerConflict, match="already has a controller"):
                SoloClaims(store, cid, "shared").acquire()
            assert a.try_lock("decide")
            b = SharedClaims(store, cid, "shared", "B")
            b.acquire()
            assert not b.try_lock("decide")  # one controller decides at a time
            a.unlock("decide")
            assert b.try_lock("decide")
            b.close()
        finally:
            a.close()
        solo = SoloClaims(store, cid, "shared")
        solo.acquire()
        try:
            with pytest.raises(ControllerConflict, match="single controller"):
                SharedClaims(store, cid, "shared", "A").acquire()
        finally:
            solo.close()


def test_sqlite_takes_one_controller_and_refuses_a_lab_id(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'campaign.db'}") as store:
        cid, _ = _campaign(store, 1)
        with pytest.raises(ControllerConflict, match="need a PostgreSQL store"):
            open_claims(store, cid, "shared", _Lab("A"))
        first = open_claims(store, cid, "shared", _Lab(None))
        first.acquire()
        assert first.claim(_Records(), limit_new=1) == [(1, ExperimentState.QUEUED)]  # all its own
        try:
            with pytest.raises(ControllerConflict, match="already run by another controller"):
                SoloClaims(store, cid, "shared").acquire()
        finally:
            first.close()
        again = SoloClaims(store, cid, "shared")  # released: a restart goes through
        again.acquire()
        again.close()


def test_upgrade_to_0004_keeps_a_campaign_and_adds_the_claim_columns(db_url: str) -> None:
    old = Store(db_url, migrate=False)
    old.upgrade("0003")
    with old.engine.begin() as conn:
        conn.execute(text("INSERT INTO campaign (name, seed, config_yaml, status, created_at, updated_at) "
                          "VALUES ('legacy', 5, '', 'running', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    old.close()
    with Store(db_url) as new:
        assert new.current_revision() == "0004"
        assert "lablease" in new.table_names()
        with new.session() as s:
            assert s.exec(select(Campaign.seed).where(Campaign.name == "legacy")).one() == 5


def test_lab_days_replay_each_lab_on_its_own_stations(tmp_path: Path) -> None:
    from controller.loop.labtime import lab_days

    with Store(f"sqlite:///{tmp_path / 'campaign.db'}") as store:
        cid, ids = _campaign(store, 2, state="running")
        with store.session() as s:
            for lab in ("A", "B"):  # each lab: one furnace slot
                store.log(s, "controller.started", campaign_id=cid,
                          data={"capacities": {"heat": 1}, "lab_id": lab})
            for i, exp_id in enumerate(ids):
                store.log(s, "experiment.proposed", campaign_id=cid, entity="experiment", entity_id=exp_id)
                s.add(StepCommand(command_id=f"h{i}", experiment_id=exp_id, step="heat",
                                  state="succeeded", result={"sim_time_min": 1440.0}, lab_id="AB"[i]))
        assert lab_days(store, cid) == pytest.approx(1.0)  # two labs, two furnaces: one day
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE stepcommand SET lab_id = 'A'"))
        assert lab_days(store, cid) == pytest.approx(2.0)  # both on lab A's one furnace


@pytest.mark.postgres
def test_two_labs_share_a_campaign_through_a_controller_sigkill(pg_url: str, tmp_path: Path) -> None:
    from controller.loop.multilab import run_multilab

    t0 = time.monotonic()
    # one round of the demo world's five targets, split between the labs; lab A's controller is
    # killed after its second step and restarted one lease later
    # the stations run as threads of this process (their ledgers are what is checked); the
    # controllers are processes of their own, as an operator starts them
    report = run_multilab(tmp_path, pg_url, world="demo", labs=2, seed=3, budget=5, lease_s=3.0,
                          kill_lab=0, kill_after_steps=2, max_offset_s=0.5, timeout_s=900,
                          sim_processes=False)
    d = report.to_dict()
    assert report.kills == 1 and report.finished, d
    assert report.duplicate_executions == 0 and report.cross_lab_duplicates == 0, d
    assert report.experiments_on_two_labs == 0, d
    assert report.lost_experiments == 0 and report.open_experiments == 0, d
    assert report.commands_not_in_store == 0, d
    assert all(n > 0 for n in report.experiments_per_lab.values()), d  # both labs worked
    print(f"two labs, one SIGKILL: {d} ({time.monotonic() - t0:.0f} s)")
