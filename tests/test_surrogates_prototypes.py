"""Predicted structures from public inputs: substitution into a known structure first, then
decoration of a shipped template; the shipped library and the known structures stay untouched."""

from __future__ import annotations

import pytest
from pymatgen.core import Composition, Lattice, Structure

from surrogates import StructurePredictor, predict_structure, template_library


@pytest.fixture(scope="module")
def srtio3() -> Structure:
    return Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def test_the_template_library_ships_with_surrogates_and_loads_once() -> None:
    lib = template_library()
    assert lib is template_library()
    kinds = {t["kind"] for t in lib}
    assert kinds == {"prototype", "cif", "alexandria"} and len(lib) > 1000
    assert all(Composition(t["formula"]).anonymized_formula == t["anon"] for t in lib[:50])


def test_a_known_structure_is_the_first_parent_and_is_not_modified(srtio3: Structure) -> None:
    before = srtio3.as_dict()
    made = predict_structure("BaTiO3", {"SrTiO3": srtio3})
    assert made is not None
    struct, provenance = made
    assert provenance == "known:SrTiO3 with Sr->Ba"
    assert struct.composition.reduced_composition == Composition("BaTiO3")
    assert struct.volume > srtio3.volume  # Ba is larger than Sr
    assert srtio3.as_dict() == before


def test_decoration_when_no_structure_substitutes_into_the_formula(srtio3: Structure) -> None:
    predictor = StructurePredictor({"SrTiO3": srtio3})
    assert predictor.substitute("ZnGa2O4") is None
    struct, provenance = predictor.predict("ZnGa2O4")
    assert provenance.startswith("prototype spinel")
    assert struct.composition.reduced_composition == Composition("ZnGa2O4")
    # a prototype takes the density of the known structures, not its own
    looser = srtio3.copy()
    looser.scale_lattice(1.2 * srtio3.volume)
    other, _ = StructurePredictor({"SrTiO3": looser}).predict("ZnGa2O4")
    assert other.volume == pytest.approx(1.2 * struct.volume)


def test_no_structure_when_no_template_has_the_anonymised_formula() -> None:
    assert predict_structure("Li2Ti6O13", {}) is None

