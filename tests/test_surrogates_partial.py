"""Partial substitution: charge-balanced, de-duplicated, novel mixed-site candidates."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Species, Structure

from surrogates.candidates import Candidate
from surrogates.partial import FINE_FRACTIONS, partial_substitutions
from surrogates.thermo import known_phases


def rocksalt_parent() -> Candidate:
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.18), [Species("Ni", 2), Species("O", -2)],
                                  [[0, 0, 0], [0.5, 0.5, 0.5]])
    return Candidate("seed-NiO", "NiO", s, "substitution")


def spinel_like_parent() -> Candidate:
    """LiMn2O4-like ordered cell (Mn3+/Mn4+ as two sublattices kept separate)."""
    s = Structure(Lattice.cubic(8.2), [Species("Li", 1)] * 2 + [Species("Mn", 3)] * 2
                  + [Species("Mn", 4)] * 2 + [Species("O", -2)] * 8,
                  [[0, 0, 0], [0.25, 0.25, 0.25], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0],
                   [0, 0, 0.5], [0.26, 0.26, 0.74], [0.26, 0.74, 0.26], [0.74, 0.26, 0.26],
                   [0.74, 0.74, 0.74], [0.24, 0.76, 0.76], [0.76, 0.24, 0.76], [0.76, 0.76, 0.24],
                   [0.24, 0.24, 0.24]])
    return Candidate("seed-LiMn2O4", "LiMn2O4", s, "substitution")


def test_mixed_site_candidates_are_charge_balanced_distinct_and_traceable() -> None:
    out = partial_substitutions([rocksalt_parent(), spinel_like_parent()], ["Li-Mn-Ni-Mg-O"],
                                novel_only=False)
    assert out, "expected mixed-site candidates"
    formulas = {c.formula for c in out}
    assert "MgNiO2" in formulas or "Mg(NiO)2" in formulas or any("Mg" in f for f in formulas)
    for c in out:
        assert abs(sum(site.specie.oxi_state for site in c.structure)) < 1e-9
        assert c.source == "partial_substitution" and c.provenance["parent"].startswith("seed-")
        assert c.structure.is_ordered and len(c.structure) <= 40
    assert len({c.id for c in out}) == len(out)
    # novelty: with novel_only every composition is absent from the Materials Project table
    kp = known_phases()
    novel = partial_substitutions([rocksalt_parent(), spinel_like_parent()], ["Li-Mn-Ni-Mg-O"])
    assert all(kp.formation_energy(c.formula) is None for c in novel)
    assert {c.formula for c in novel} <= formulas
    # seeded and deterministic
    again = partial_substitutions([rocksalt_parent(), spinel_like_parent()], ["Li-Mn-Ni-Mg-O"])
    assert [c.id for c in again] == [c.id for c in novel]


def test_parents_outside_the_system_or_undecorated_are_skipped_and_bad_input_named() -> None:
    assert partial_substitutions([rocksalt_parent()], ["Li-Mn-O"]) == []
    plain = Candidate("x", "NiO", Structure(Lattice.cubic(4.18), ["Ni", "O"],
                                            [[0, 0, 0], [0.5, 0.5, 0.5]]), "cif")
    assert partial_substitutions([plain], ["Ni-Mg-O"]) == []
    with pytest.raises(ValueError, match="unknown element 'Xx'"):
        partial_substitutions([rocksalt_parent()], ["Ni-Xx-O"])


def layered_limno2_parent() -> Candidate:
    """α-NaFeO2-like LiMnO2 (Li+ and Mn3+ octahedral layers), 8 atoms."""
    s = Structure.from_spacegroup("R-3m", Lattice.hexagonal(2.85, 14.2),
                                  [Species("Li", 1), Species("Mn", 3), Species("O", -2)],
                                  [[0, 0, 0.5], [0, 0, 0], [0, 0, 0.25]])
    return Candidate("seed-LiMnO2", "LiMnO2", s.get_primitive_structure(), "substitution")


def test_aliovalent_substitution_compensates_charge_on_a_second_site() -> None:
    from surrogates.partial import aliovalent_substitutions

    out = aliovalent_substitutions([layered_limno2_parent()], ["Li-Mn-Ni-O"], novel_only=False)
    assert out, "expected aliovalent candidates"
    for c in out:
        assert abs(sum(site.specie.oxi_state for site in c.structure)) < 1e-9
        assert len(c.structure) <= 40 and c.structure.is_ordered
        p = c.provenance
        assert p["replaced"] != p["by"] and p["count"] >= 1 and p["compensation_count"] >= 1
    assert len({c.formula for c in out}) == len(out)  # one structure per composition
    # Li+ onto Mn3+ sites, compensated by Mn3+ -> Mn4+: Li[Li1/3Mn2/3]O2 = Li2MnO3
    li2mno3 = [c for c in out if c.formula == "Li2MnO3"]
    assert li2mno3 and li2mno3[0].provenance["by"] == "Li+1"
    assert li2mno3[0].provenance["compensated_by"] == "Mn+4"
    # LiNi0.5Mn0.5O2: Ni2+ on a Mn3+ site, compensated by Mn3+ -> Mn4+ (the smallest valence
    # changes win over an Li+/Ni3+ anti-site pair that gives the same composition)
    lnmo = [c for c in out if c.formula == "Li2MnNiO4"]
    assert lnmo and (lnmo[0].provenance["by"], lnmo[0].provenance["compensated_by"]) == ("Ni+2", "Mn+4")
    assert "LiMnO2" not in {c.formula for c in out}  # an anti-site swap is not a new composition
    # novelty: Li2MnO3 is in the Materials Project table, so it only returns when held out
    novel = aliovalent_substitutions([layered_limno2_parent()], ["Li-Mn-Ni-O"])
    kp = known_phases()
    assert "Li2MnO3" not in {c.formula for c in novel}
    assert all(kp.formation_energy(c.formula) is None for c in novel)
    held = aliovalent_substitutions([layered_limno2_parent()], ["Li-Mn-Ni-O"], holdout=["Li4Mn2O6"])
    assert "Li2MnO3" in {c.formula for c in held}


def test_isovalent_substitution_in_supercells_obeys_the_radius_rule() -> None:
    fine = partial_substitutions([rocksalt_parent()], ["Ni-Mg-Ba-O"], novel_only=False,
                                 fractions=FINE_FRACTIONS, max_cells=8, tolerance=0.3)
    formulas = {c.formula for c in fine}
    assert "MgNi7O8" in formulas and "Mg7NiO8" in formulas  # eighths in a 2 x 2 x 2 cell
    assert not any("Ba" in f for f in formulas)  # Ba2+ (1.35 A) is no Ni2+ (0.69 A) octahedron
    loose = partial_substitutions([rocksalt_parent()], ["Ni-Mg-Ba-O"], novel_only=False)
    assert any("Ba" in c.formula for c in loose)  # the original rule has no radius check
    with pytest.raises(ValueError, match="max_cells"):
        partial_substitutions([rocksalt_parent()], ["Ni-Mg-O"], max_cells=9)


def test_lower_valent_cation_is_compensated_by_anion_vacancies() -> None:
    from surrogates.partial import aliovalent_substitutions

    s = Structure(Lattice.cubic(3.93), [Species("La", 3), Species("Fe", 3)] + [Species("O", -2)] * 3,
                  [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]])
    out = aliovalent_substitutions([Candidate("seed-LaFeO3", "LaFeO3", s, "substitution")],
                                   ["La-Sr-Fe-O"], novel_only=False)
    vac = [c for c in out if c.provenance["compensated_by"] == "vacancy"]
    assert vac, [c.provenance for c in out]
    for c in vac:  # Sr2+ for La3+, one O vacancy per two Sr, never more than 1/6 of the O sites
        comp = c.structure.composition
        n_sr, n_o, n_fe = comp["Sr2+"], comp["O2-"], comp["Fe3+"]
        assert n_sr == 2 * (3 * n_fe - n_o) and 3 * n_fe - n_o <= n_fe * 3 / 6
        assert abs(sum(site.specie.oxi_state for site in c.structure)) < 1e-9
    assert "SrLa3(FeO4)2" in {c.formula for c in vac} or "Sr2La2Fe4O11" in {c.formula for c in vac}
