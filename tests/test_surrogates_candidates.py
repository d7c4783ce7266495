"""Candidates: CIF folders with bad files, substitution generation, hull energies."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from surrogates import (
    PredictionTable,
    SubstitutionTable,
    add_hull_energy,
    generate_candidates,
    known_phases,
    read_candidate_cifs,
)


def test_bad_cif_is_reported_by_name_and_skipped(tmp_path) -> None:
    good = Structure(Lattice.cubic(3.9), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    good.to(filename=str(tmp_path / "a_good.cif"))
    (tmp_path / "b_broken.cif").write_text("data_x\n_cell_length_a 3.9\nthis is not a cif\n")
    (tmp_path / "c_empty.cif").write_text("")
    good.to(filename=str(tmp_path / "d_good.cif"))
    (tmp_path / "notes.txt").write_text("ignored")
    cands, errors = read_candidate_cifs(tmp_path)
    assert [c.id for c in cands] == ["cif-a_good", "cif-d_good"]
    assert cands[0].formula == "SrTiO3" and cands[0].provenance["file"] == "a_good.cif"
    assert len(errors) == 2
    assert errors[0].startswith("b_broken.cif: ") and errors[1].startswith("c_empty.cif: ")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_candidate_cifs(tmp_path / "missing")


def test_substitution_candidates_are_charge_balanced_novel_distinct_and_in_system() -> None:
    cands = generate_candidates(["Li-Mn-Ti-O", "Ba-Sr-Ti-O"], seed=0, max_candidates=50,
                                threshold=1e-5)
    assert cands, "expected substitution candidates"
    kp = known_phases()
    allowed = [{"Li", "Mn", "Ti", "O"}, {"Ba", "Sr", "Ti", "O"}]
    assert len({c.id for c in cands}) == len(cands)
    for c in cands:
        els = {e.symbol for e in c.structure.composition.elements}
        assert any(els <= a for a in allowed), c.formula
        assert abs(sum(sp.oxi_state * n for sp, n in c.structure.composition.items())) < 1e-6
        assert kp.formation_energy(c.formula) is None  # novel composition
        assert c.provenance["probability"] >= 1e-5 and c.source == "substitution"
    probs = [c.provenance["probability"] for c in cands]
    assert probs == sorted(probs, reverse=True)
    again = generate_candidates(["Li-Mn-Ti-O", "Ba-Sr-Ti-O"], seed=0, max_candidates=50,
                                threshold=1e-5)
    assert [c.id for c in again] == [c.id for c in cands]
    with pytest.raises(ValueError, match="unknown element 'Qq'"):
        generate_candidates(["Li-Qq-O"], seed=0)


def test_substitution_table_is_pymatgen_hautier_model() -> None:
    t = SubstitutionTable()
    # values of pymatgen's SubstitutionProbability(alpha=-5).cond_prob for the same pairs
    assert t.cond_prob("Co3+", "Mn3+") == pytest.approx(0.023255810134324807, rel=1e-9)
    assert t.cond_prob("Ba2+", "Sr2+") == pytest.approx(0.14327854143714355, rel=1e-9)
    with pytest.raises(KeyError):
        t.cond_prob("Xx9+", "Mn3+")


def test_hull_energy_column_from_predicted_formation_energies() -> None:
    kp = known_phases()
    e_li2o = kp.formation_energy("Li2O")
    values = np.array([[[e_li2o], [e_li2o + 0.2]], [[e_li2o - 0.1], [e_li2o + 0.3]]])
    t = add_hull_energy(PredictionTable(values, ("e_form",), np.array([2.0])), ["Li2O", "Li2O"])
    j = t.column("e_above_hull")
    assert np.allclose(t.mean[:, j], [-0.05, 0.25])
    assert t.inflation[j] == 2.0


def test_odd_chemistry_rules_name_the_rule_and_pass_ordinary_oxides() -> None:
    from surrogates.plausibility import oddities

    bati = oddities({("Ba", 2): 1, ("Ti", 2): 1, ("O", -2): 2})  # BaTiO2: Ti2+
    assert [o.rule for o in bati] == ["rare_valence"] and "Ti2+" in bati[0].detail
    pair = oddities({("Ti", 3): 1, ("Fe", 3): 1, ("O", -2): 3})  # would be Fe2+Ti4+O3
    assert [o.rule for o in pair] == ["redox_pair"]
    assert oddities({("Li", 1): 2, ("Ni", 2): 1, ("Mn", 4): 1, ("O", -2): 4}) == []  # LiNi0.5Mn0.5O2
    assert oddities({("Mn", 2): 1, ("Mn", 3): 2, ("O", -2): 4}) == []  # Mn3O4: one element's valences
    # each rule can be switched off by its threshold
    assert oddities({("Ti", 3): 1, ("Fe", 3): 1, ("O", -2): 3}, redox_margin=float("inf")) == []
    assert oddities({("Ba", 2): 1, ("Ti", 2): 1, ("O", -2): 2}, min_share=0.0) == []


def _textbook_templates():
    from surrogates.enumeration import ionic_template
    from surrogates.prototypes import template_library

    return [t for t in (ionic_template(d, {"O"}) for d in template_library() if d["kind"] == "prototype")
            if t is not None]


def test_prototype_enumeration_is_charge_balanced_and_size_plausible_per_site() -> None:
    from surrogates.enumeration import enumerate_prototypes

    tpls = _textbook_templates()
    assert {t.id for t in tpls} >= {"perovskite SrTiO3", "ilmenite FeTiO3", "spinel MgAl2O4"}
    cands = enumerate_prototypes("Ba-Sr-Ti-O", templates=tpls)
    by_tpl: dict[str, set[str]] = {}
    for c in cands:
        assert abs(sum(site.specie.oxi_state for site in c.structure)) < 1e-9
        assert c.provenance["radius_mismatch"] <= 0.3
        by_tpl.setdefault(c.provenance["template"], set()).add(c.formula)
    assert {"BaTiO3", "SrTiO3"} <= by_tpl["perovskite SrTiO3"]
    assert not any("Ba" in f or "Sr" in f for f in by_tpl.get("ilmenite FeTiO3", set()))
    assert "Sr2TiO4" in by_tpl["K2NiF4 Sr2TiO4"]
    mismatches = [c.provenance["radius_mismatch"] for c in cands]
    assert mismatches == sorted(mismatches)  # best fits first
    # spinel's two sites take two valences of one element: Mn2+ tetrahedral, Mn3+ octahedral
    # (Mn3+ is 21 % larger than Al3+ at 6-fold: inside a 25 % tolerance, outside the default 20 %)
    spinel = [c.formula for c in enumerate_prototypes("Li-Mn-O", templates=tpls, tolerance=0.25)
              if c.provenance["template"] == "spinel MgAl2O4"]
    assert "Mn3O4" in spinel
    assert "Mn3O4" not in [c.formula for c in enumerate_prototypes("Li-Mn-O", templates=tpls)
                           if c.provenance["template"] == "spinel MgAl2O4"]
    # a hold-out never sees a template of its own composition
    assert not [c for c in enumerate_prototypes("Sr-Ti-O", templates=tpls, exclude_formulas=["SrTiO3"])
                if c.provenance["template"] == "perovskite SrTiO3"]
    with pytest.raises(ValueError, match="exactly one anion"):
        enumerate_prototypes("Li-Mn-O-F", templates=tpls)


def test_candidate_pool_is_novel_distinct_plausible_and_counts_what_it_dropped() -> None:
    from surrogates.candidate_pool import PoolSettings, build_candidate_pool

    settings = PoolSettings(sources=("substitution", "prototypes", "aliovalent"), tolerance=0.3,
                            templates=tuple(_textbook_templates()))
    pool, (rep,) = build_candidate_pool(["Li-Mn-Ni-O"], settings=settings)
    kp = known_phases()
    assert len(pool) >= 10, rep.as_dict()  # nine textbook templates only, no isovalent step
    assert len({c.formula for c in pool}) == len(pool)  # max_per_formula = 1
    for c in pool:
        assert kp.formation_energy(c.formula) is None and c.provenance["novel"]
        assert c.provenance["oddities"] == []
        assert abs(sum(site.specie.oxi_state for site in c.structure)) < 1e-9
    assert rep.kept == len(pool) and rep.novel_after_rules == len(pool)
    assert rep.novel_before_rules > rep.novel_after_rules and rep.odd["rare_valence"] > 0
    # holding known compositions out lets the pipeline re-discover them, never as seeds/templates
    held = {"LiMn2O4", "Li2MnO3", "LiNiO2", "Li2NiO3"}
    again, _ = build_candidate_pool(["Li-Mn-Ni-O"], settings=settings, holdout=held)
    found = {c.formula for c in again} & held
    assert found and all(c.provenance["novel"] for c in again)
    assert all(kp.formation_energy(c.formula) is None or c.formula in held for c in again)
    assert not [c for c in again if c.provenance.get("template_formula") in held]
    with pytest.raises(ValueError, match="unknown candidate source"):
        PoolSettings(sources=("magic",))


def test_campaign_switch_selects_the_pool_and_the_face_exports_it() -> None:
    import pydantic

    import surrogates
    from controller.config import SubstitutionSource

    assert SubstitutionSource(kind="substitution").generator == "whole_site"  # unchanged default
    assert SubstitutionSource(kind="substitution", generator="pool").generator == "pool"
    with pytest.raises(pydantic.ValidationError):
        SubstitutionSource(kind="substitution", generator="everything")
    assert surrogates.build_candidate_pool.__module__ == "surrogates.candidate_pool"
    assert surrogates.aliovalent_substitutions.__module__ == "surrogates.partial"
