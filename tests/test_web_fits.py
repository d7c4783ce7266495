"""Fitted curves travel from the loop's analysis record to the experiment page.

``CampaignRecords.record_analysis`` stores a ``PhaseAnalysis``'s curves packed (zlib float32,
base64) in the analysis row; the web read model unpacks them into fit, background, phases and
difference, and a poor fit is flagged next to its yield. No XRD fit runs here: the analysis is
built by hand so the test stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sqlmodel import Session, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_web_support import open_store, synthetic_pattern, write_campaign_dir  # noqa: E402


def _analysis(x: np.ndarray, obs: np.ndarray, fit: np.ndarray, parts: dict, *, rwp: float, unexplained: float):
    from controller.xrd import AnalysisSettings, PhaseAnalysis, PhaseResult

    phases = [PhaseResult(name=n, formula=n, weight_fraction=w, weight_fraction_std=0.02, scale=1.0,
                          lattice_strain=[0.0, 0.0, 0.0], fwhm_deg_at_30=0.1, delta_chi2=50.0,
                          peaks=[18.6, 36.1] if n == "LiMn2O4" else [44.6])
              for n, w in (("LiMn2O4", 0.6), ("Li2MnO3", 0.4))]
    curves = {"two_theta": x, "observed": obs, "calculated": fit, "background": np.full_like(x, 5.0),
              **{f"phase:{k}": v for k, v in parts.items()}}
    return PhaseAnalysis(phases=phases, rwp=rwp, rexp=0.05, chi2_reduced=1.2, unexplained_peaks=[27.3],
                         target="LiMn2O4", target_yield=0.6, rejected={}, zero_shift_deg=0.0, eta=0.5,
                         wavelength_angstrom=1.5406, source="t", settings=AnalysisSettings(), curves=curves,
                         target_yield_std=0.03, unexplained_intensity_fraction=unexplained)


def _analysed_experiment(tmp_path: Path, *, rwp: float, unexplained: float) -> tuple[Path, int, float]:
    from controller.loop import Assessed, CampaignRecords
    from controller.loop.policy import verdict
    from controller.store import Experiment, Measurement, Recipe, Target, pack_array

    campaign_dir = write_campaign_dir(tmp_path / "camp", approval_mode=False)
    x, obs, fit, parts = synthetic_pattern({"LiMn2O4": [(18.6, 1.0), (36.1, 0.5)], "Li2MnO3": [(44.6, 0.9)]},
                                           {"LiMn2O4": 0.6, "Li2MnO3": 0.4}, seed=3)
    with open_store(campaign_dir) as store:
        cid = store.ensure_campaign("web-test", seed=1).id
        with store.session() as s:
            t = Target(campaign_id=cid, formula="LiMn2O4")
            s.add(t)
            s.flush()
            r = Recipe(target_id=t.id, ordinal=1, precursors=[{"formula": "Li2CO3", "moles": 0.5}],
                       profile=[{"ramp_c_per_min": 5, "setpoint_c": 800, "dwell_min": 600}], planner="initial")
            s.add(r)
            s.flush()
            e = Experiment(campaign_id=cid, target_id=t.id, recipe_id=r.id, sample_id="S-1")
            s.add(e)
            s.flush()
            exp_id = int(e.id)
        for state in ("approved", "queued", "running"):
            store.transition(exp_id, state)
        with store.session() as s:
            s.add(Measurement(experiment_id=exp_id, n_points=len(x), two_theta=pack_array(x),
                              intensities=pack_array(obs), source="xrd-1"))
            store.transition(exp_id, "measured", session=s)
        a = _analysis(x, obs, fit, parts, rwp=rwp, unexplained=unexplained)
        assessed = Assessed(analysis=a, target_yield=0.6, yield_lower=0.5, candidate_phases=("LiMn2O4",))
        CampaignRecords(store, cid).record_analysis(exp_id, assessed, verdict(0.6, 0.5, 0.5))
        blob = sum(len(v) for v in store_details(store, exp_id)["curves"].values())
    return campaign_dir, exp_id, blob / (len(x) * 4 * 6)


def store_details(store, exp_id: int) -> dict:
    from controller.store import PhaseAnalysisRow

    with store.session() as s:
        return s.exec(select(PhaseAnalysisRow.details).where(PhaseAnalysisRow.experiment_id == exp_id)).one()


def test_recorded_analysis_curves_reach_the_xrd_api_and_plot(tmp_path: Path) -> None:
    from controller.config import load_config
    from controller.store import Campaign
    from controller.web import queries, svg
    from controller.web.app import read_engine_for

    campaign_dir, exp_id, ratio = _analysed_experiment(tmp_path, rwp=0.09, unexplained=0.01)
    assert ratio < 1.0, f"packed curves take {ratio:.2f} of float32 JSON-free size: not compact"
    cfg = load_config(campaign_dir / "campaign.yaml")
    with open_store(campaign_dir) as store, Session(read_engine_for(store.url)) as s:
        campaign = s.exec(select(Campaign)).first()
        data = queries.xrd_data(s, campaign, exp_id)
        detail = queries.experiment_detail(s, campaign, exp_id)
    assert cfg.campaign.name == "web-test"
    n = len(data["two_theta"])
    assert data["fitted"] is not None and len(data["fitted"]) == n
    assert data["difference"] is not None and len(data["difference"]) == n
    assert data["background"] is not None and set(data["phase_patterns"]) == {"LiMn2O4", "Li2MnO3"}
    assert data["phase_ticks"]["LiMn2O4"] == [18.6, 36.1] and data["phase_ticks"]["unexplained"] == [27.3]
    assert data["fit_warning"] is None and detail["analyses"][0]["fit_warning"] is None
    plot = svg.xrd_svg(data)
    for cls in ("observed", "fitted", "difference", "background", "phase", "ticks"):
        assert f'class="{cls}"' in plot, cls


def test_a_poor_fit_is_flagged_where_its_yield_is_shown(tmp_path: Path) -> None:
    from controller.store import Campaign
    from controller.web import queries
    from controller.web.app import read_engine_for

    campaign_dir, exp_id, _ = _analysed_experiment(tmp_path, rwp=0.475, unexplained=0.2)
    with open_store(campaign_dir) as store, Session(read_engine_for(store.url)) as s:
        campaign = s.exec(select(Campaign)).first()
        detail = queries.experiment_detail(s, campaign, exp_id)
        res = queries.results(s, campaign)
    warning = detail["analyses"][0]["fit_warning"]
    assert "Rwp 0.47" in warning and "unexplained" in warning
    assert "poor fit" in res["experiments"][0]["fit_warning"]
