"""Formula normalisation: the one way the brain (surrogates, recipes, controller) names a compound.

Why one function: a phase is looked up by its formula in many tables (the Materials Project
table, the precursor library, the store, a world's wish list); two spellings of one compound
(``"Li2MnO3"``, ``"O3MnLi2"``, ``"(NH4)2HPO4"``) must meet as one key, so every package
normalises with :func:`reduced_formula` and groups by :func:`chemical_system`.
``sim_lab`` keeps its own (it may not import the brain).
"""

from __future__ import annotations

from functools import lru_cache

from pymatgen.core import Composition, Element


class UnknownCompositionError(ValueError):
    """A formula could not be parsed or contains elements unknown to the table."""


def composition(formula: str | Composition) -> Composition:
    """The parsed composition; raises :class:`UnknownCompositionError` naming formula and problem."""
    if isinstance(formula, Composition):
        return formula
    try:
        comp = Composition(formula)
    except Exception as exc:  # pymatgen raises several types for bad formulas
        raise UnknownCompositionError(f"{formula!r} is not a chemical formula: {exc}") from None
    if comp.num_atoms <= 0:
        raise UnknownCompositionError(f"{formula!r} is not a chemical formula: no atoms")
    bad = [str(el) for el in comp.elements if not Element.is_valid_symbol(str(el))]
    if bad:
        raise UnknownCompositionError(
            f"{formula!r} is not a chemical formula: unknown element(s) {', '.join(bad)}")
    return comp


@lru_cache(maxsize=65536)
def reduced_formula(formula: str | Composition) -> str:
    """Canonical reduced formula: pymatgen's, so ``"O3MnLi2"`` and ``"Li4Mn2O6"`` are both
    ``"Li2MnO3"`` and ``"(NH4)2HPO4"`` and ``"N2H9PO4"`` both ``"PH9(NO2)2"``."""
    return composition(formula).reduced_formula


@lru_cache(maxsize=65536)
def chemical_system(formula: str | Composition) -> str:
    """``"Li2MnO3"`` → ``"Li-Mn-O"`` (sorted element symbols joined by ``-``)."""
    return "-".join(sorted(el.symbol for el in composition(formula).elements))
