"""Relaxation of predicted structures: the option a campaign config names, its errors, and the
predictor's relaxed output. ASE's EMT stands in for SevenNet where a test needs a real but fast
potential (metals only); the SevenNet path itself is covered by test_surrogates_pretrained."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from pymatgen.core import Composition, Lattice, Structure

import surrogates
from surrogates import Relaxer, RelaxerUnavailable, StructurePredictor, make_relaxer


def fcc(symbol: str, a: float) -> Structure:
    """Primitive fcc cell (one atom): the cheapest real relaxation."""
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [symbol],
                                     [[0, 0, 0]]).get_primitive_structure()


def predictor(known: dict[str, Structure], **kw) -> StructurePredictor:
    """A predictor over ``known`` only (no bundled seeds or templates: fast, and the parent is
    certain)."""
    return StructurePredictor(known, templates=[], seeds=[], **kw)


def test_the_face_exports_the_new_names_and_stays_lazy() -> None:
    for name in ("select_pareto_batch", "partial_substitutions", "PretrainedEnergy",
                 "train_delta_ensemble", "Relaxer", "make_relaxer"):
        assert name in surrogates.__all__
    code = ("import sys, surrogates; from surrogates import known_phases, Relaxer; "
            "assert 'torch' not in sys.modules and 'botorch' not in sys.modules, 'eager import'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_relax_options_none_unknown_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_relaxer(None) is None and make_relaxer("none") is None
    with pytest.raises(ValueError, match="unknown relax option 'chgnet'"):
        make_relaxer("chgnet")
    # injected fault: the optional package is not installed
    import surrogates.relax as relax

    monkeypatch.setattr(relax, "sevenn_available", lambda: False)
    assert make_relaxer("auto") is None  # auto quietly stays off
    with pytest.raises(RelaxerUnavailable, match="pip install 'synthloop\\[pretrained\\]'"):
        predictor({}, relax="sevenn")  # asked for: fails at construction, not later


def test_relaxer_moves_a_strained_cell_to_the_potentials_minimum() -> None:
    done = Relaxer(calculator=EMT(), fmax=0.01, max_steps=200).relax(fcc("Cu", 3.9))
    a = (done.structure.volume * 4) ** (1 / 3)
    assert done.converged and 1 <= done.steps <= 200
    assert a == pytest.approx(3.59, abs=0.02)  # EMT's Cu lattice constant
    assert done.volume_change < 0 and done.cpu_seconds >= 0 and done.seconds > 0
    capped = Relaxer(calculator=EMT(), fmax=1e-6, max_steps=3).relax(fcc("Cu", 3.9))
    assert capped.steps == 3 and not capped.converged


def test_predictor_relaxes_its_guess_and_says_so() -> None:
    known = {"Cu": fcc("Cu", 3.61)}  # substitution parent: Cu -> Ag
    plain = predictor(known)
    relaxing = predictor(known, relax=Relaxer(calculator=EMT(), fmax=0.01))
    guess, prov0 = plain.predict("Ag")
    made, prov = relaxing.predict("Ag")
    assert made.composition.reduced_composition == Composition("Ag")
    assert prov.startswith(prov0) and "relaxed" in prov and "converged" in prov
    assert "Ag" in relaxing.relaxations
    assert not np.isclose(made.volume, guess.volume)  # EMT's Ag cell, not the radius-scaled guess


class _Exploding(Calculator):
    """Injected fault: a potential that returns an absurd energy (NaN, or the 1e15 eV/atom a
    universal potential reached on fused atoms)."""

    implemented_properties = ("energy", "forces", "stress")

    def __init__(self, energy: float) -> None:
        super().__init__()
        self.energy = energy

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        n = len(self.atoms)
        self.results = {"energy": self.energy * n, "forces": np.zeros((n, 3)), "stress": np.zeros(6)}


@pytest.mark.parametrize("energy", [float("nan"), -1e15])
def test_a_failed_relaxation_keeps_the_unrelaxed_prediction(energy: float) -> None:
    known = {"Cu": fcc("Cu", 3.61)}
    guess, _ = predictor(known).predict("Ag")
    with pytest.raises(ValueError, match="collapsed"):
        Relaxer(calculator=_Exploding(energy)).relax(guess)
    made, prov = predictor(known, relax=Relaxer(calculator=_Exploding(energy))).predict("Ag")
    assert prov.endswith("relaxation failed")
    assert made.volume == pytest.approx(guess.volume)


def test_fused_atoms_are_not_a_relaxed_structure() -> None:
    """Two atoms 0.3 Å apart (the mis-set spinel template's O-O contact) fail the check even
    with a plausible energy."""
    from surrogates.relax import _closest_distance

    s = Structure(Lattice.cubic(5.0), ["O", "O"], [[0, 0, 0], [0.06, 0, 0]])
    assert _closest_distance(s) == pytest.approx(0.3)
    assert _closest_distance(fcc("Cu", 3.61)) == float("inf")
