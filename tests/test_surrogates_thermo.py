"""Known phases: the shipped Materials Project table and hulls built from it."""

from __future__ import annotations

import pytest

from surrogates import UnknownCompositionError, known_phases


def test_formation_energy_lowest_polymorph_and_formula_units() -> None:
    kp = known_phases()
    e = kp.formation_energy("Li2O")
    assert e is not None and -2.5 < e < -1.5
    assert kp.formation_energy("Li4O2") == e  # formula units do not matter
    assert kp.formation_energy("Li") == 0.0
    assert kp.formation_energy("Xe3Li7") is None


def test_hull_energy_of_known_stable_phase_is_zero_and_signs() -> None:
    kp = known_phases()
    e = kp.formation_energy("Li2O")
    assert kp.hull_energy("Li2O", e) == pytest.approx(0.0, abs=1e-9)
    assert kp.hull_energy("Li2O", e + 0.1) == pytest.approx(0.1, abs=1e-9)
    # a phase below the known hull gets a negative decomposition energy
    assert kp.hull_energy("Li2O", e - 0.05) == pytest.approx(-0.05, abs=1e-9)


def test_entries_include_subsystems_and_elements_at_zero() -> None:
    kp = known_phases()
    entries = kp.entries("Li-Mn-O")
    names = {e.composition.reduced_formula for e in entries}
    assert {"Li", "Mn", "O2", "Li2O", "MnO"} <= names
    for e in entries:
        if len(e.composition.elements) == 1:
            assert e.energy == 0.0
    # one entry per composition (lowest polymorph)
    keys = [e.composition.reduced_composition for e in entries]
    assert len(keys) == len(set(keys))


def test_bad_input_names_the_problem() -> None:
    kp = known_phases()
    with pytest.raises(UnknownCompositionError, match="Qq"):
        kp.entries("Li-Qq")
    with pytest.raises(UnknownCompositionError, match="not a formula"):
        kp.formation_energy("not a formula")
