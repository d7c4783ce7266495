"""Proposals a researcher can judge: units, probability apart from yield, σ on the 0-100 % scale,
the acquisition value explained, the deciding term, and a rationale that follows an edit."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlmodel import Session, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_web_support import fill_small_campaign, open_store, write_campaign_dir  # noqa: E402


def test_judge_gives_units_probabilities_and_the_deciding_term() -> None:
    import yaml

    from controller.config import example_config_text, parse_config
    from controller.web.queries import judge

    cfg = parse_config(yaml.safe_load(example_config_text()))
    j = judge({"e_form": -2.01, "e_form_std": 0.04, "e_decomp": 0.012, "e_decomp_std": 0.03,
               "yield": 0.934, "yield_std": 2.03, "objective_mean": 0.5}, cfg)
    rows = {r["key"]: r for r in j["rows"]}
    assert rows["e_decomp"]["value"] == "+12 meV/atom ± 30" and "P(stable)" in rows["e_decomp"]["note"]
    assert "eV/atom" in rows["e_form"]["value"]
    assert rows["yield"]["value"].startswith("93 %") and "σ > 50 %" in rows["yield"]["value"]  # not "± 203 %"
    assert j["p_yield"] is None and "yield does not count" in j["deciding"]
    assert "expected improvement" in j["acquisition_meaning"]
    j2 = judge({"e_decomp": -0.02, "e_decomp_std": 0.01, "yield": 0.3, "yield_std": 0.1}, cfg)
    assert "P(yield ≥ 50 %)" in j2["deciding"] and "decides" in j2["deciding"]
    assert j2["deciding"].endswith("P(yield ≥ 50 %), decides")


def test_rationale_is_rewritten_after_an_edit(tmp_path: Path) -> None:
    from controller.config import load_config
    from controller.store import Campaign, Recipe
    from controller.web import actions, queries
    from controller.web.actions import ConditionsEdit

    camp = write_campaign_dir(tmp_path / "camp", approval_mode=True)
    cfg = load_config(camp / "campaign.yaml")
    with open_store(camp) as store:
        ids = fill_small_campaign(store)
        rid = ids["recipes"]["C2"]
        with store.session() as s:
            r = s.get(Recipe, rid)
            r.rationale = "oxide route: CaO + TiO2 at 950 °C for 600 min"
            s.add(r)
        out = actions.edit_conditions(store, ids["campaign_id"], cfg, rid,
                                      ConditionsEdit(setpoint_c=975, dwell_min=480, user="ann"))
        assert out["rationale"].startswith("oxide route: CaO + TiO2 at 975 °C for 480 min")
        assert "950 → 975 °C by web:ann" in out["rationale"]
        assert out["details"]["rationale_planner"] == "oxide route: CaO + TiO2 at 950 °C for 600 min"
        out2 = actions.edit_conditions(store, ids["campaign_id"], cfg, rid, ConditionsEdit(setpoint_c=990))
        assert "at 990 °C" in out2["rationale"] and "950 → 990 °C" in out2["rationale"]
        with Session(store.engine) as s:
            campaign = s.exec(select(Campaign)).first()
            data = queries.proposals(s, campaign, cfg=cfg)
    group = next(t for t in data["targets"] if t["formula"] == "CaTiO3")
    assert group["judged"]["rows"] and group["why"]
