"""Replay on recorded outcomes, the table it reads, and the literature-informed ranking."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from recipes import CandidateSpace, OutcomeTableError, RecipePlanner, TargetSpec, parse_outcomes
from recipes.planner import THERMO_NATS_PER_100MEV

TABLE = """precursors,temperature_c,dwell_min,products
BaCO3;TiO2,900,240,BaTiO3:0.3;BaCO3:0.35;TiO2:0.35
BaCO3;TiO2,1100,240,BaTiO3:0.9;TiO2:0.1
BaO;TiO2,900,240,BaTiO3:0.6;TiO2:0.4
BaO2;TiO2,1000,240,Ba2TiO4:0.5;TiO2:0.5
Ba(NO3)2;TiO2,1000,240,BaTiO3:0.4;TiO2:0.6
Ba(OH)2;TiO2,1000,,BaTiO3:0.7;TiO2:0.3
"""


@pytest.fixture()
def table(tmp_path: Path) -> Path:
    p = tmp_path / "OUTCOMES.csv"
    p.write_text(TABLE)
    return p


def test_outcome_table_parses_and_bad_tables_name_row_and_problem(tmp_path: Path, table: Path) -> None:
    rows = parse_outcomes(table)
    assert len(rows) == 6 and rows[0].precursors == ("BaCO3", "TiO2")
    assert rows[5].dwell_min == 240.0 and rows[5].precursors == ("Ba(HO)2", "TiO2")
    assert rows[1].yield_of("BaTiO3") == pytest.approx(0.9)
    bad = {
        "precursors,temperature_c\nBaCO3;TiO2,900\n": r"missing column\(s\) products",
        "precursors,temperature_c,products\nBaCO3;TiO2,hot,BaTiO3:0.5\n": r"row 2: temperature_c 'hot' is not a number",
        "precursors,temperature_c,products\nBaCO3;TiO2,900,BaTiO3=0.5\n": r"row 2: product 'BaTiO3=0.5' is not FORMULA:FRACTION",
        "precursors,temperature_c,products\nBaCO3;Qq2,900,BaTiO3:0.5\n": r"row 2: precursor 'Qq2'",
        "precursors,temperature_c,products\nBaCO3;TiO2,900,BaTiO3:1.5\n": r"row 2: fraction of BaTiO3 is 1.5",
        "precursors,temperature_c,products\nBaCO3;TiO2,900,BaTiO3:0.5\nTiO2;BaCO3,900,BaTiO3:0.4\n": r"row 3: the same experiment .* row 2",
        "precursors,temperature_c,products\n": "no recorded experiments",
    }
    for i, (text, message) in enumerate(bad.items()):
        p = tmp_path / f"bad{i}.csv"
        p.write_text(text)
        with pytest.raises(OutcomeTableError, match=message):
            parse_outcomes(p)
    with pytest.raises(OutcomeTableError, match="no such outcomes file"):
        parse_outcomes(tmp_path / "missing.csv")


def test_candidate_space_restricts_proposals_to_recorded_rows(table: Path) -> None:
    rows = parse_outcomes(table)
    space = CandidateSpace.from_outcomes("BaTiO3", rows)
    planner = RecipePlanner(candidate_space=space)
    recorded = {(o.precursors, o.temperature_c, o.dwell_min) for o in rows}
    proposed = planner.initial_recipes(TargetSpec("BaTiO3"), [])
    assert len(proposed) == 5  # five of the six sets (one set recorded at two temperatures)
    for r in proposed:
        assert (tuple(sorted(r.precursor_formulas)), r.temperature_c, r.dwell_min) in recorded


def test_replay_runs_through_asktell_and_counts_against_random(table: Path) -> None:
    from controller.cli.recipes_cmds import replay_outcomes

    rows = parse_outcomes(table)
    result = replay_outcomes(rows, "BaTiO3", seed=0, random_draws=500)
    order = result["order"]
    recorded = {(tuple(o.precursors), o.temperature_c) for o in rows}
    assert all((tuple(e["precursors"]), e["temperature_c"]) in recorded for e in order)
    assert len({(tuple(e["precursors"]), e["temperature_c"]) for e in order}) == len(order)  # each row once
    assert result["successful_sets_total"] == 3 == result["successful_sets_found"]
    assert result["first_success_at"] == 1  # the literature's BaCO3 + TiO2, at its recorded 1100 °C
    assert result["experiments_to_all_successes"] == len(order) <= 5
    assert result["random"]["first_success_at_expected"] == pytest.approx(7 / 4)
    assert 3 < result["random"]["experiments_to_all_successes_expected"] <= 6
    budgeted = replay_outcomes(rows, "BaTiO3", budget=1)
    assert len(budgeted["order"]) == 1 and budgeted["experiments_to_all_successes"] is None


def test_unusable_stock_item_is_a_warning_and_the_score_adds_up() -> None:
    with pytest.warns(UserWarning, match="Xe3Kr2O9"):
        planner = RecipePlanner(stock=["BaCO3", "BaO", "BaO2", "Ba(OH)2", "TiO2", "Ti", "Ba", "Xe3Kr2O9"])
    recipes = planner.initial_recipes(TargetSpec("BaTiO3"), [])
    firsts = [set(r.precursor_formulas) for r in recipes[:2]]
    assert {"BaCO3", "TiO2"} in firsts  # the standard route first or second
    for r in recipes:
        m = re.search(r"score (-?[\d.]+) nats = literature (-?[\d.]+).*?thermodynamics (-?[\d.]+) "
                      r"\((-?\d+) meV/atom.*?handling (-?[\d.]+) \+ experience (-?[\d.]+)", r.rationale)
        assert m, r.rationale
        total, *parts = (float(m.group(i)) for i in (1, 2, 3, 5, 6))
        assert total == pytest.approx(sum(parts), abs=0.02)
        assert float(m.group(3)) == pytest.approx(THERMO_NATS_PER_100MEV * float(m.group(4)) / 100, abs=0.01)
        assert "HO)2" not in r.rationale and "LiHO" not in r.rationale
        assert ("predicted yield" in r.rationale) == (r.predicted_yield is not None)  # no yield from a prior
    scores = [r.details["score_terms"]["score"] for r in recipes]
    assert scores == sorted(scores, reverse=True)  # in the order of the one score


def test_literature_shelf_prefers_what_papers_use_over_exotic_exergonic_reagents() -> None:
    shelf = ["Li", "LiH", "Li2O2", "Li2CO3", "LiOH", "Ni", "NiO", "NiO2", "NiCO3",
             "P", "H3PO4", "NH4H2PO4", "(NH4)2HPO4", "P2O5"]
    recipes = RecipePlanner(stock=shelf).initial_recipes(TargetSpec("LiNiPO4"), [])
    assert set(recipes[0].precursor_formulas) == {"Li2CO3", "NiO", "NH4H2PO4"}
    assert not any({"Li", "LiH", "P"} & set(r.precursor_formulas) for r in recipes)  # the picks
    assert not any("Ni" in r.precursor_formulas for r in recipes[:2])
    assert "literature" in recipes[0].rationale and "Kononova" in recipes[0].rationale


def test_replay_cli_json_and_bad_table(tmp_path: Path, table: Path) -> None:
    from tests.test_recipes_cli import run

    out = run("recipes", "replay", str(table), "--target", "BaTiO3", "--json", "--budget", "4")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"order", "first_success_at", "successful_sets_total", "successful_sets_found",
            "experiments_to_all_successes", "random"} <= set(data)
    assert {"precursors", "temperature_c", "target_yield"} <= set(data["order"][0])
    bad = tmp_path / "bad.csv"
    bad.write_text("precursors,temperature_c,products\nBaCO3;TiO2,900,BaTiO3:x\n")
    err = run("recipes", "replay", str(bad), "--target", "BaTiO3")
    assert err.returncode == 2 and "row 2" in err.stderr and "not a number" in err.stderr


def test_pruning_by_score_bound_keeps_the_picks_and_their_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # before data only sets whose score bound reaches the picks are evaluated: the same five,
    # in the same order, at the same temperatures as the exhaustive ranking
    import recipes.planner as planner_module

    shelf = ["Li", "LiH", "Li2CO3", "LiOH", "Ni", "NiO", "NiO2", "NiCO3", "P", "H3PO4", "NH4H2PO4", "P2O5"]
    planner = RecipePlanner(stock=shelf)
    picks = {}
    for prune in (True, False):
        monkeypatch.setattr(planner_module, "PRUNE_BY_BOUND", prune)
        ranked, chosen = planner.ranking(TargetSpec("LiNiPO4"))
        picks[prune] = [(c.formulas, c.temperature_c, round(c.terms["score"], 9)) for c in chosen]
        if not prune:
            n_all = len(ranked)
        else:
            n_pruned = len(ranked)
    assert picks[True] == picks[False] and len(picks[True]) == 5
    assert n_pruned < n_all  # the bound did skip sets


def test_literature_term_is_the_learned_weights_times_the_evidence_parts() -> None:
    import recipes.planner as planner_module
    from recipes.literature import literature_model

    lit = literature_model()
    parts, notes = lit.set_evidence("BaTiO3", ["BaCO3", "TiO2"])
    total, _ = lit.set_log_likelihood("BaTiO3", ["BaCO3", "TiO2"])
    assert parts["sources"] + parts["same_set"] == pytest.approx(total)  # the likelihood's two parts
    assert parts["same_set"] > 0 and parts["compound_source"] == 0 and parts["unknown_sources"] == 0
    assert [e for e, _, _ in notes] == ["Ba", "Ti"]
    ranked, _ = RecipePlanner(stock=["BaCO3", "BaO", "TiO2"]).ranking(TargetSpec("BaTiO3"))
    c = next(c for c in ranked if set(c.formulas) == {"BaCO3", "TiO2"})
    want = sum(planner_module.LITERATURE_WEIGHTS[k] * v for k, v in parts.items())
    assert c.terms["literature"] == pytest.approx(want)
    # a powder no similar paper used for its element counts as unknown
    assert lit.set_evidence("BaTiO3", ["BaO2", "Ti"])[0]["unknown_sources"] >= 1
