"""When a target counts as made: the claim rule on the yield's lower bound, and the repeat of a
recipe whose yield clears the threshold but cannot be vouched for. Real store, real runner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from controller.config import example_config_text, parse_config
from controller.loop.brain import claimable_yield
from controller.loop.campaign import UNVERIFIED, CampaignRunner
from controller.store import (
    Experiment,
    ExperimentState,
    Measurement,
    PhaseAnalysisRow,
    Recipe,
    Store,
    Target,
    TargetState,
    pack_array,
)

PATH_TO_ANALYSED = [ExperimentState.APPROVED, ExperimentState.QUEUED, ExperimentState.RUNNING,
                    ExperimentState.MEASURED, ExperimentState.ANALYSED]


def test_lower_bound_accounts_for_fit_systematics_and_amorphous_share() -> None:
    crystalline = {"target_yield": 0.9, "target_yield_std": 0.01, "target_yield_whole_sample": 0.9,
                   "amorphous": {"detected": False, "share": 0.0, "share_std": 0.0}}
    y, low = claimable_yield(crystalline, claim_sigma=2.0, systematic_std=0.03)
    assert y == pytest.approx(0.9)
    assert low == pytest.approx(0.9 - 2 * (0.01**2 + 0.03**2) ** 0.5)
    # a glassy sample that refines to 100 % target: whole-sample estimate and a wide bound
    glassy = {"target_yield": 1.0, "target_yield_std": 0.0, "target_yield_whole_sample": 0.4,
              "amorphous": {"detected": True, "share": 0.6, "share_std": 0.3}}
    y, low = claimable_yield(glassy, claim_sigma=2.0, systematic_std=0.03)
    assert y == pytest.approx(0.4) and low == 0.0
    # a poor fit dropped real minor phases as "insignificant": keeping them halves the target's
    # share, and the claim must hold under that alternative too
    dropped = {**crystalline, "target_yield_alternative": 0.5}
    y, low = claimable_yield(dropped, claim_sigma=2.0, systematic_std=0.03)
    assert y == pytest.approx(0.9) and low < 0.5
    nothing = {"target_yield": 0.0, "target_yield_whole_sample": 0.0, "amorphous": None}
    assert claimable_yield(nothing, claim_sigma=2.0, systematic_std=0.03) == (0.0, 0.0)


@pytest.fixture
def runner(tmp_path: Path):
    data = yaml.safe_load(example_config_text())
    data["analysis"]["verify_repeats"] = 1
    cfg = parse_config(data, "test")
    store = Store.for_campaign_dir(tmp_path)
    camp = store.ensure_campaign(cfg.campaign.name, seed=0)
    r = CampaignRunner(cfg, store, transport=None, brain=None)
    r.campaign_id = camp.id
    with store.session() as s:
        t = Target(campaign_id=camp.id, formula="LiMn2O4")
        s.add(t)
        s.flush()
        rec = Recipe(target_id=t.id, ordinal=1,
                     precursors=[{"formula": "Li2CO3", "moles": 0.5, "mass_g": 0.37}],
                     profile=[{"ramp_c_per_min": 5, "setpoint_c": 800, "dwell_min": 240}])
        s.add(rec)
        s.flush()
        r.ids = (t.id, rec.id)
    yield r
    store.close()


def _analysed_experiment(runner: CampaignRunner, y: float, lower: float, sample: str) -> int:
    store, (tid, rid) = runner.store, runner.ids
    with store.session() as s:
        e = Experiment(campaign_id=runner.campaign_id, target_id=tid, recipe_id=rid, sample_id=sample)
        s.add(e)
        s.flush()
        eid = e.id
    for st in PATH_TO_ANALYSED:
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


def test_yield_above_threshold_with_a_bound_below_is_repeated_not_claimed(runner) -> None:
    eid = _analysed_experiment(runner, 0.62, 0.45, "S1")
    asyncio.run(runner._analyse(eid))  # resumes from ANALYSED: verdict from the stored row
    with runner.store.session() as s:
        exp = s.get(Experiment, eid)
        target = s.get(Target, runner.ids[0])
        assert exp.state == ExperimentState.FAILED and exp.reason.startswith(UNVERIFIED), exp.reason
        assert target.state == TargetState.ACTIVE  # not claimed
        assert target.best_yield == pytest.approx(0.62)
    # the planner would be told what can be vouched for, not the point estimate
    assert runner._observation(eid)["target_yield"] == pytest.approx(0.45)
    made = asyncio.run(runner._next_for_target(runner.ids[0]))
    assert made == 1
    with runner.store.session() as s:
        exps = s.exec(select(Experiment).where(Experiment.target_id == runner.ids[0])
                      .order_by(Experiment.id)).all()
    assert len(exps) == 2
    assert exps[1].recipe_id == exps[0].recipe_id and exps[1].attempt == 2
    assert exps[1].sample_id != exps[0].sample_id  # a new sample, not a re-measurement


def test_yield_whose_bound_clears_the_threshold_makes_the_target(runner) -> None:
    eid = _analysed_experiment(runner, 0.9, 0.84, "S1")
    asyncio.run(runner._analyse(eid))
    with runner.store.session() as s:
        assert s.get(Experiment, eid).state == ExperimentState.SUCCEEDED
        assert s.get(Target, runner.ids[0]).state == TargetState.MADE
