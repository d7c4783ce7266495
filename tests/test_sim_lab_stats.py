"""World statistics, computed structures of targets, and the builder's pieces that need no CHGNet."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure

sys.path.insert(0, str(Path(__file__).parent))
from sim_lab_toy import toy_world_dict  # noqa: E402

from sim_lab import load_world, parse_world, world_stats  # noqa: E402
from sim_lab.stats import summarise, target_outcomes  # noqa: E402


def test_summary_counts_makeable_recipes_and_precursor_dependence() -> None:
    outcomes = [
        {"formula": "A", "sets": [{"yields": [0.0, 0.9]}, {"yields": [0.1, 0.2]}] and
         [{"yields": [0.0, 0.9], "failure": None}, {"yields": [0.1, 0.2], "failure": "kinetics"}]},
        {"formula": "B", "sets": [{"yields": [0.6, 0.7], "failure": None}, {"yields": [0.8, 0.0], "failure": None}]},
        {"formula": "C", "sets": [{"yields": [0.0, 0.0], "failure": "above_hull"}]},
    ]
    s = summarise(outcomes)
    assert s["targets"] == 3 and s["makeable"] == 2 and s["makeable_share"] == pytest.approx(0.667, abs=1e-3)
    assert s["recipes"] == 10 and s["recipes_succeeded"] == 4
    assert s["recipe_success_share"] == 0.4
    # A: at 850 one set works and one does not (strictly too: set 2 never works); B: at the
    # second temperature set 1 works and set 2 does not, but every set works somewhere
    assert s["precursor_dependent"] == 2 and s["precursor_dependent_targets"] == ["A", "B"]
    assert s["precursor_dependent_share"] == 1.0
    assert s["precursor_dependent_strict"] == 1 and s["precursor_dependent_strict_share"] == 0.5
    assert s["failed_set_causes_in_strictly_dependent"] == {"kinetics": 1}


def test_toy_world_target_depends_on_the_precursors() -> None:
    """Li2Mn3O7 forms from LiOH + MnO2 but stalls from Li2CO3 (docs/sim_lab.md): dependent."""
    world = parse_world(toy_world_dict(), "<toy>")
    o = target_outcomes(world, "Li2Mn3O7")
    assert not o["above_hull"]
    best = {"+".join(r["precursors"]): max(r["yields"]) for r in o["sets"]}
    assert max(best.values()) >= 0.5 > min(best.values())
    stats = world_stats(world)
    assert stats["makeable"] == 1 and stats["precursor_dependent"] == 1
    assert stats["precursor_dependent_share"] == 1.0


def test_stats_read_stored_outcomes_instead_of_firing_again() -> None:
    doc = copy.deepcopy(toy_world_dict())
    doc["targets"][0]["truth"] = {
        "makeable": True, "best_yield": 0.9, "recipes_tried": 2,
        "outcomes": {"above_hull": False, "temperatures_c": [700, 850],
                     "sets": [{"precursors": ["LiHO", "MnO2"], "yields": [0.9, 0.95], "failure": None}]},
    }
    stats = world_stats(parse_world(doc, "<toy>"))
    assert stats["searched_now"] == 0 and stats["recipes"] == 2 and stats["recipe_success_share"] == 1.0


def test_stats_command_prints_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from controller.cli.app import app

    path = parse_world(toy_world_dict(), "<toy>").save(tmp_path / "toy.json")
    res = CliRunner().invoke(app, ["sim-lab", "stats", str(path), "--json"])
    assert res.exit_code == 0, res.output
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")][-1]
    figures = json.loads(line)
    for key in ("makeable_share", "recipe_success_share", "precursor_dependent_share"):
        assert 0.0 <= figures[key] <= 1.0
    assert figures["targets"] == 1 and figures["world"] == "toy-li-mn-o"


def test_a_target_publishes_its_computed_structure_and_the_lab_differs_from_it() -> None:
    from sim_lab.structures import experimental_structure

    doc = copy.deepcopy(toy_world_dict())
    target = next(p for p in doc["phases"] if p["formula"] == "Li2Mn3O7")
    computed = Structure.from_dict(target["structure"]["pymatgen"])
    lab, how = experimental_structure(computed, seed=3)
    target["computed_structure"] = {"pymatgen": computed.as_dict()}
    target["structure"] = {"pymatgen": lab.as_dict()}
    world = parse_world(doc, "<toy>")
    assert world.computed_formulas() == ["Li2Mn3O7"]
    pub = world.computed_structure("Li2Mn3O7")
    assert pub.composition.reduced_formula == "Li2Mn3O7"
    assert pub.volume == pytest.approx(computed.volume)
    true = world.structure("Li2Mn3O7")
    assert 0.95 < true.volume / pub.volume < 0.995  # experiment: a few per cent smaller
    assert how["volume_change"] == pytest.approx(true.volume / pub.volume - 1, abs=1e-3)
    with pytest.raises(KeyError, match="not a target"):
        world.computed_structure("Li2MnO3")  # known phases: known_structure, not a computation
    with pytest.raises(KeyError, match="no computed structure"):
        load_world("demo-v1").computed_structure(load_world("demo-v1").target_formulas()[0])


def test_another_ordering_swaps_unlike_cations_and_keeps_the_composition() -> None:
    from sim_lab.structures import experimental_structure

    lat = Lattice.cubic(8.0)
    species = ["Li"] * 4 + ["Mn"] * 4 + ["O"] * 8
    coords = np.random.default_rng(0).random((16, 3))
    s = Structure(lat, species, coords)
    reordered = [experimental_structure(s, seed, reorder_probability=1.0) for seed in range(3)]
    for new, how in reordered:
        assert new.composition == s.composition
        assert how["reordered"] and "Li/Mn" in how["reordered"] or "Mn/Li" in how["reordered"]
    never = experimental_structure(s, 0, reorder_probability=0.0)[1]
    assert never["reordered"] is None


def test_decoration_takes_charge_balanced_compositions_only() -> None:
    from sim_lab.builder import _charge_balanced

    assert _charge_balanced(Composition("SrTiO3")) and _charge_balanced(Composition("Ca2V2O7"))
    assert _charge_balanced(Composition("NaFePO4"))
    assert not _charge_balanced(Composition("SrO3")) and not _charge_balanced(Composition("Na3TiO2"))


def test_retargeting_holds_out_hull_phases_as_computed_only_targets() -> None:
    """As the A-Lab's targets: a known hull phase without an experimental CIF becomes a target
    with a public computed structure; the lab's structure is that one made experimental."""
    from sim_lab.builder import retarget_world

    doc = copy.deepcopy(toy_world_dict())
    hyp = next(p for p in doc["phases"] if p["formula"] == "Li2Mn3O7")
    hyp["computed_e_form_ev_per_atom"] = hyp["e_form_ev_per_atom"]
    world = parse_world(doc, "<toy>")
    new = retarget_world(world, name="toy-rt", max_e_hull=0.05, holdout_fraction=1.0, energy_noise_ev=0.0)
    held = new.model.provenance["targets"]["held_out_known"]
    assert "Li2MnO3" in held and "Li2MnO3" not in new.known_formulas()
    assert set(held) <= set(new.target_formulas()) | set(held)
    pub = new.computed_structure("Li2MnO3")
    assert pub.volume == pytest.approx(world.structure("Li2MnO3").volume)
    assert new.structure("Li2MnO3").volume < pub.volume
    assert all(new.truth(f).outcomes for f in new.target_formulas())


def test_held_out_phase_takes_the_builders_relaxed_structure_as_computed() -> None:
    from sim_lab.builder import retarget_world

    doc = copy.deepcopy(toy_world_dict())
    hyp = next(p for p in doc["phases"] if p["formula"] == "Li2Mn3O7")
    hyp["computed_e_form_ev_per_atom"] = hyp["e_form_ev_per_atom"]
    world = parse_world(doc, "<toy>")
    relaxed = world.structure("Li2MnO3").copy()
    relaxed.scale_lattice(relaxed.volume * 1.05)
    new = retarget_world(world, name="toy-rt", max_e_hull=0.05, holdout_fraction=1.0, energy_noise_ev=0.0,
                         computed_structures={"Li2MnO3": relaxed})
    assert new.computed_structure("Li2MnO3").volume == pytest.approx(relaxed.volume)
    assert "CHGNet-relaxed" in new.phase("Li2MnO3").source.structure
