"""Partial substitution: charge-balanced, de-duplicated, novel mixed-site candidates."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Species, Structure

from surrogates.candidates import Candidate
from surrogates.partial import partial_substitutions
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
