"""One formula normalisation for the brain's packages (surrogates, recipes, controller)."""

from __future__ import annotations

import pytest

from recipes import RecipeError
from recipes.library import reduced_formula as recipes_reduced_formula
from surrogates import UnknownCompositionError, chemical_system, reduced_formula


def test_reduced_formula_and_chemical_system() -> None:
    assert reduced_formula("O3MnLi2") == reduced_formula("Li4Mn2O6") == "Li2MnO3"
    assert reduced_formula("(NH4)2HPO4") == reduced_formula("N2H9PO4")
    assert chemical_system("Li2MnO3") == chemical_system("MnLiO") == "Li-Mn-O"


@pytest.mark.parametrize("bad", ["not a formula!", "", "Xq2O"])
def test_a_bad_formula_names_itself(bad: str) -> None:
    with pytest.raises(UnknownCompositionError, match="is not a chemical formula"):
        reduced_formula(bad)
    with pytest.raises(RecipeError, match="is not a chemical formula"):  # the planner's error type
        recipes_reduced_formula(bad)
