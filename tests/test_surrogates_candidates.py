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
