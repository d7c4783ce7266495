"""World files: validation errors that name key and problem; bundled worlds load."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from sim_lab_toy import toy_world_dict  # noqa: E402

from sim_lab import WorldError, bundled_worlds, load_world, parse_world  # noqa: E402


def write(tmp_path: Path, data, name: str = "w.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if name.endswith(".yaml") else json.dumps(data))
    return path


def test_a_valid_world_file_round_trips(tmp_path: Path) -> None:
    path = write(tmp_path, toy_world_dict())
    world = load_world(path)
    assert world.systems == ["Li-Mn-O"]
    assert set(world.precursors) == {"Li2CO3", "LiHO", "MnO2", "Mn2O3"}
    assert world.target_formulas() == ["Li2Mn3O7"]
    assert world.known_structure("Li2MnO3").composition.reduced_formula == "Li2MnO3"
    with pytest.raises(KeyError, match="not a known phase"):
        world.known_structure("Li2Mn3O7")  # hypothetical: truth, not public crystallography
    again = load_world(world.save(tmp_path / "copy.json"))
    assert again.to_dict() == world.to_dict()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["phases"][1].pop("e_form_ev_per_atom"), r"phases\[1\]\.e_form_ev_per_atom: required key is missing"),
        (lambda d: d["phases"][0].update(e_form_ev_per_atom="low"), r"phases\[0\]\.e_form_ev_per_atom: bad value 'low'"),
        (lambda d: d["phases"][2].update(formula="Xx9Q"), r"phases\[2\]\.formula: bad value 'Xx9Q'"),
        (lambda d: d["kinetics"].update(tamman_ratio=3), r"kinetics\.tamman_ratio: bad value 3"),
        (lambda d: d.update(colour="blue"), r"colour: unknown key"),
        (lambda d: d["precursors"].append({"formula": "Fe2O3"}), r"precursors\[4\]\.formula: 'Fe2O3' is not among phases"),
        (
            lambda d: d["precursors"][0]["decomposition"]["products"].update(CO2=2),
            r"precursors\[0\]\.decomposition\.products: do not balance Li2CO3",
        ),
        (lambda d: d["phases"][0].update(structure={}), r"phases\[0\]\.structure: .*exactly one of 'cif'"),
        (lambda d: d.update(format="other/2"), r"format: bad value 'other/2'"),
    ],
)
def test_malformed_world_errors_name_the_key_and_problem(tmp_path: Path, mutate, expected) -> None:
    data = copy.deepcopy(toy_world_dict())
    data.setdefault("kinetics", {})
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(WorldError, match=expected) as info:
        load_world(path)
    assert str(path) in str(info.value)


def test_unreadable_world_files_get_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("phases: [unclosed\n")
    with pytest.raises(WorldError, match="not valid YAML at line"):
        load_world(bad)
    with pytest.raises(WorldError, match="no such world file"):
        load_world(tmp_path / "missing.json")
    with pytest.raises(WorldError, match="no world named 'atlantis'"):
        load_world("atlantis")
    with pytest.raises(WorldError, match="top level must be a mapping"):
        parse_world([1, 2])


def test_a_structure_that_does_not_match_its_formula_is_named() -> None:
    data = toy_world_dict()
    data["phases"][0]["structure"] = data["phases"][1]["structure"]  # MnO2's CIF for Li2O
    world = parse_world(data, "mixed.yaml")
    with pytest.raises(WorldError, match=r"mixed.yaml: phases\[0\]\.structure: .*does not match formula Li2O"):
        world.structure("Li2O")


@pytest.mark.parametrize("name", ["demo", "alab-like", "alab-like-v2"])
def test_bundled_worlds_load_and_hide_nothing_they_should_show(name: str) -> None:
    assert name in bundled_worlds()
    world = load_world(name)
    targets = world.target_formulas()
    assert targets and len(set(targets)) == len(targets)
    assert world.precursors and world.systems
    for formula in targets:
        assert world.phase(formula).kind == "hypothetical"
        assert world.truth(formula) is not None
    known = world.known_formulas()[0]
    assert world.known_structure(known).composition.reduced_formula == known


def test_widening_a_world_adds_every_candidate_with_the_builders_truth() -> None:
    """The wide world is the same chemistry with more targets: a candidate the builder left out
    comes back with the truth the builder's own search gives it."""
    from sim_lab import widen_world

    demo = load_world("demo-v1")  # a world of single-point energies, as alab-like (widened)
    doc = demo.to_dict()
    removed = next(t for t in doc["targets"] if t["formula"] == "Li2Mn3O7")
    doc["targets"] = [t for t in doc["targets"] if t["formula"] != "Li2Mn3O7"]
    narrow = parse_world(doc, "<narrow>")
    wide = widen_world(narrow, name="demo-wide", max_e_hull=0.08)
    assert wide.name == "demo-wide"
    assert sorted(wide.target_formulas()) == sorted(demo.target_formulas())
    back = next(t for t in wide.to_dict()["targets"] if t["formula"] == "Li2Mn3O7")["truth"]
    # the builder's search (here stopping at the first recipe that makes it: a lower bound)
    assert back["makeable"] == removed["truth"]["makeable"] is True
    assert 0.5 <= back["best_yield"] <= removed["truth"]["best_yield"] + 1e-9
    assert back["recipes_tried"] <= removed["truth"]["recipes_tried"]
    assert wide.model.phases == demo.model.phases  # the chemistry is untouched


def test_bundled_wide_world_holds_every_alab_like_target_and_more() -> None:
    narrow, wide = load_world("alab-like"), load_world("alab-like-wide")
    assert set(narrow.target_formulas()) < set(wide.target_formulas())
    truth = {t["formula"]: t["truth"] for t in wide.to_dict()["targets"]}
    assert all(truth[t["formula"]] == t["truth"] for t in narrow.to_dict()["targets"])
    assert sum(v["makeable"] for v in truth.values()) == 40  # the added ones are all unmakeable


def test_widening_with_known_phases_adds_the_known_compounds_a_lab_would_make() -> None:
    """--include-known: every known multi-cation phase that is not on the shelf becomes a target
    with the builder's truth; precursors, binaries and carbonates do not."""
    from pymatgen.core import Composition

    from sim_lab import widen_world

    demo = load_world("demo-v1")  # every candidate of this older world is already a target
    wide = widen_world(demo, name="demo-known", include_known=True)
    shelf = {Composition(p.formula).reduced_formula for p in demo.model.precursors}
    added = set(wide.target_formulas()) - set(demo.target_formulas())
    expected = {f for f in demo.known_formulas()
                if len(Composition(f).elements) >= 3 and f not in shelf
                and not {e.symbol for e in Composition(f).elements} & {"C", "H"}}
    assert added == expected and added  # the demo world has known ternaries to add
    truth = {t["formula"]: t["truth"] for t in wide.to_dict()["targets"]}
    assert all(truth[f]["recipes_tried"] > 0 for f in added)  # searched, not assumed
    assert wide.to_dict()["provenance"]["targets"]["known_added"] == len(added)
    assert wide.model.phases == demo.model.phases


def test_bundled_xl_world_is_alab_like_with_known_targets_added() -> None:
    narrow, xl = load_world("alab-like"), load_world("alab-like-xl")
    truth = {t["formula"]: t["truth"] for t in xl.to_dict()["targets"]}
    assert all(truth[t["formula"]] == t["truth"] for t in narrow.to_dict()["targets"])
    assert len(truth) == 418 and sum(v["makeable"] for v in truth.values()) == 179


def test_rebuilt_world_publishes_computed_structures_and_its_truth_search() -> None:
    """alab-like-v2: every target has a computed structure the lab's differs from, and the full
    truth search is stored (``sim-lab stats`` reads it without firing)."""
    world = load_world("alab-like-v2")
    assert world.computed_formulas() == world.target_formulas()
    for f in world.target_formulas()[:5]:
        computed, true = world.computed_structure(f), world.structure(f)
        assert computed.composition.reduced_formula == true.composition.reduced_formula == f
        assert 0.94 < true.volume / computed.volume * len(computed) / len(true) < 0.999
        assert world.truth(f).outcomes["sets"]
