"""Lab days: the instrument makespan, where a decision waits for the results it was made on.
Real SQLite store, rows written the way the loop writes them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from controller.loop import CampaignRecords, lab_days
from controller.store import ExperimentState, FailureKind, StepCommand, StepState, Store, Target
from recipes import HeatingSegment, PrecursorAmount, Recipe

S = ExperimentState


def _run(records: CampaignRecords, exp_id: int, minutes: float, *, verdict: bool = True) -> None:
    """One experiment through a single 'heat' step of ``minutes``, then (optionally) its verdict."""
    store = records.store
    for st in (S.QUEUED, S.RUNNING):
        store.transition(exp_id, st, reason="test")
    with store.session() as s:
        s.add(StepCommand(command_id=str(uuid.uuid4()), experiment_id=exp_id, step="heat",
                          state=StepState.SUCCEEDED.value, result={"sim_time_min": minutes}))
    if verdict:
        store.transition(exp_id, S.FAILED, reason="test", failure_kind=FailureKind.CHEMISTRY)


@pytest.fixture
def records(tmp_path: Path):
    store = Store.for_campaign_dir(tmp_path)
    camp = store.ensure_campaign("t", seed=0)
    rec = CampaignRecords(store, camp.id)
    rec.log("controller.started", "test", data={"capacities": {"heat": 4}})
    with store.session() as s:
        t = Target(campaign_id=camp.id, formula="LiMn2O4")
        s.add(t)
        s.flush()
        tid = t.id
    rid, = rec.add_recipes(tid, [Recipe(target="LiMn2O4",
                                        precursors=(PrecursorAmount("Li2CO3", 0.5, 0.4),),
                                        profile=(HeatingSegment(5, 800, 240),))])
    yield rec, tid, rid
    store.close()


def _propose(rec: CampaignRecords, tid: int, rid: int, attempt: int) -> int:
    rec.propose(tid, rid, attempt=attempt, why="test")
    return rec.target(tid).trials[-1].id


def test_an_experiment_decided_on_a_result_starts_after_it(records) -> None:
    rec, tid, rid = records
    first = _propose(rec, tid, rid, 1)
    _run(rec, first, 1440.0)               # one day on a furnace, then its verdict
    second = _propose(rec, tid, rid, 2)    # proposed after that verdict: it waited for it
    _run(rec, second, 1440.0)
    assert lab_days(rec.store, rec.campaign_id) == pytest.approx(2.0)


def test_experiments_proposed_together_share_the_furnaces(records) -> None:
    rec, tid, rid = records
    a, b = _propose(rec, tid, rid, 1), _propose(rec, tid, rid, 2)  # both before any verdict
    _run(rec, a, 1440.0)
    _run(rec, b, 1440.0)
    assert lab_days(rec.store, rec.campaign_id) == pytest.approx(1.0)  # 4 furnaces, in parallel
