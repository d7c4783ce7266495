"""When a target counts as made: the claim rule on the yield's lower bound, and the repeat of a
recipe whose yield clears the threshold but cannot be vouched for. Real store, the loop's own
records and decision step (what the runner calls)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from controller.config import example_config_text, parse_config
from controller.loop import CampaignRecords, Rules, advance_target, claimable_yield, verdict
from controller.store import (
    Experiment,
    ExperimentState,
    FailureKind,
    Measurement,
    PhaseAnalysisRow,
    Store,
    Target,
    TargetState,
    pack_array,
)
from controller.xrd import AnalysisSettings, PhaseAnalysis
from controller.xrd.amorphous import AmorphousEstimate
from recipes import HeatingSegment, PrecursorAmount, Recipe

PATH_TO_ANALYSED = [ExperimentState.APPROVED, ExperimentState.QUEUED, ExperimentState.RUNNING,
                    ExperimentState.MEASURED, ExperimentState.ANALYSED]


def _analysis(target_yield: float, *, std: float = 0.0, whole: float | None = None,
              alternative: float | None = None, amorphous: tuple[float, float] | None = None,
              ) -> PhaseAnalysis:
    return PhaseAnalysis(
        phases=[], rwp=0.1, rexp=0.05, chi2_reduced=1.0, unexplained_peaks=[], target="LiMn2O4",
        target_yield=target_yield, rejected={}, zero_shift_deg=0.0, eta=0.5,
        wavelength_angstrom=1.5406, source=None, settings=AnalysisSettings(),
        target_yield_std=std,
        amorphous=None if amorphous is None else AmorphousEstimate(
            detected=True, share=amorphous[0], share_std=amorphous[1], delta_chi2_per_point=1.0,
            hump_area=1.0, bragg_area=1.0, centre_deg=25.0, significance=10.0),
        target_yield_whole_sample=target_yield if whole is None else whole,
        target_yield_alternative=alternative)


def test_lower_bound_accounts_for_fit_systematics_and_amorphous_share() -> None:
    y, low = claimable_yield(_analysis(0.9, std=0.01), claim_sigma=2.0, systematic_std=0.03)
    assert y == pytest.approx(0.9)
    assert low == pytest.approx(0.9 - 2 * (0.01**2 + 0.03**2) ** 0.5)
    # a glassy sample that refines to 100 % target: whole-sample estimate and a wide bound
    glassy = _analysis(1.0, whole=0.4, amorphous=(0.6, 0.3))
    y, low = claimable_yield(glassy, claim_sigma=2.0, systematic_std=0.03)
    assert y == pytest.approx(0.4) and low == 0.0
    # a poor fit dropped real minor phases as "insignificant": keeping them halves the target's
    # share, and the claim must hold under that alternative too
    y, low = claimable_yield(_analysis(0.9, std=0.01, alternative=0.5), claim_sigma=2.0,
                             systematic_std=0.03)
    assert y == pytest.approx(0.9) and low < 0.5
    assert claimable_yield(_analysis(0.0), claim_sigma=2.0, systematic_std=0.03) == (0.0, 0.0)


@pytest.fixture
def book(tmp_path: Path):
    """A real store with one target (LiMn2O4) and one planned recipe, seen through the loop's
    records: (records, target id, recipe id)."""
    data = yaml.safe_load(example_config_text())
    cfg = parse_config(data, "test")
    store = Store.for_campaign_dir(tmp_path)
    camp = store.ensure_campaign(cfg.campaign.name, seed=0)
    records = CampaignRecords(store, camp.id)
    with store.session() as s:
        t = Target(campaign_id=camp.id, formula="LiMn2O4")
        s.add(t)
        s.flush()
        tid = t.id
    (rid,) = records.add_recipes(tid, [Recipe(
        target="LiMn2O4", precursors=(PrecursorAmount("Li2CO3", 0.5, 0.37),),
        profile=(HeatingSegment(5, 800, 240),))])
    yield records, tid, rid
    store.close()


def _analysed_experiment(records: CampaignRecords, tid: int, rid: int, y: float, lower: float,
                         ) -> int:
    assert records.propose(tid, rid, attempt=1, why="test") == 1
    store = records.store
    with store.session() as s:
        eid = s.exec(select(Experiment.id).where(Experiment.target_id == tid)
                     .order_by(Experiment.id.desc())).first()
    for st in PATH_TO_ANALYSED[1:]:
        store.transition(eid, st, reason="test", **({"target_yield": y} if st == ExperimentState.ANALYSED else {}))
    with store.session() as s:
        m = Measurement(experiment_id=eid, n_points=2, two_theta=pack_array([10.0, 10.02]),
                        intensities=pack_array([1.0, 2.0]), wavelength_angstrom=1.5406)
        s.add(m)
        s.flush()
        s.add(PhaseAnalysisRow(measurement_id=m.id, experiment_id=eid, target_yield=y,
                               phases=[{"name": "LiMn2O4", "formula": "LiMn2O4", "weight_fraction": y}],
                               details={"target_yield_lower": lower}))
    return eid


def _judge_stored(records: CampaignRecords, eid: int) -> None:
    """What the runner does when it resumes an analysed experiment: the verdict from the row."""
    got = records.analysis_input(eid)
    assert got.state == ExperimentState.ANALYSED and got.pattern is None  # nothing to refit
    records.apply_verdict(eid, got.stored_yield, verdict(got.stored_yield, got.stored_lower, 0.5))


def test_yield_above_threshold_with_a_bound_below_is_repeated_not_claimed(book) -> None:
    records, tid, rid = book
    eid = _analysed_experiment(records, tid, rid, 0.62, 0.45)
    _judge_stored(records, eid)
    with records.store.session() as s:
        exp = s.get(Experiment, eid)
        target = s.get(Target, tid)
        assert exp.state == ExperimentState.FAILED and exp.failure_kind == FailureKind.UNVERIFIED
        assert target.state == TargetState.ACTIVE  # not claimed
        assert target.best_yield == pytest.approx(0.62)
    # the planner would be told what can be vouched for, not the point estimate
    (obs,) = records.observations()
    assert obs.target_yield == pytest.approx(0.45)
    # the next decision is a repeat of the same recipe on a new sample (no planner needed)
    assert advance_target(records, tid, planner=None, rules=Rules(verify_repeats=1)) == 1
    with records.store.session() as s:
        exps = s.exec(select(Experiment).where(Experiment.target_id == tid)
                      .order_by(Experiment.id)).all()
    assert len(exps) == 2
    assert exps[1].recipe_id == exps[0].recipe_id and exps[1].attempt == 2
    assert exps[1].sample_id != exps[0].sample_id  # a new sample, not a re-measurement


def test_yield_whose_bound_clears_the_threshold_makes_the_target(book) -> None:
    records, tid, rid = book
    eid = _analysed_experiment(records, tid, rid, 0.9, 0.84)
    _judge_stored(records, eid)
    with records.store.session() as s:
        assert s.get(Experiment, eid).state == ExperimentState.SUCCEEDED
        assert s.get(Target, tid).state == TargetState.MADE
    assert records.target(tid).state == TargetState.MADE
