"""Mass balance of a phase analysis against the sample's weighed (nominal) composition.

Why: two look-alike phases (a spinel target and LiCl, or Li2FeCl4 vs Li6FeCl8) can explain the
same peaks about equally well, and the pattern alone then flips a coin. The expert decides such
cases by composition: 100 % LiCl in a sample weighed as Li1.6Mg0.6Ni0.2Hf0.2Cl4 implies ~3x the
weighed Li and no Mg at all. Weight fractions convert to moles of each phase, moles to an
implied elemental composition, and that is compared with the weighed one.

Tolerant by design: Li and the anions (Cl, O, ...) are lost on heating (volatile chlorides,
CO2 / H2O / NOx from precursors), and amorphous or unmodelled phases hold part of the sample, so
only the part of each element's deviation beyond a relative tolerance counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# elements whose loss (or pickup) during synthesis is routine: a wider relative tolerance
VOLATILE = frozenset({"Li", "Na", "K", "Cl", "Br", "I", "F", "O", "C", "H", "N", "S"})
# relative tolerance of every other element's atomic fraction (weighing, impurities)
OTHER_TOLERANCE = 0.15


def as_composition(composition: Any):
    """A pymatgen Composition from a Composition, a formula string or an {element: amount} map."""
    from pymatgen.core import Composition

    if composition is None:
        return None
    return composition if isinstance(composition, Composition) else Composition(composition)


def implied_fractions(weight_fractions: Sequence[float], phase_compositions: Sequence[Any]
                      ) -> dict[str, float]:
    """Atomic fractions of the elements implied by phase weight fractions (moles of each phase
    = w_i / its formula mass)."""
    amounts: dict[str, float] = {}
    for w, comp in zip(weight_fractions, phase_compositions, strict=True):
        if w <= 0:
            continue
        moles = w / float(comp.weight)
        for el, n in comp.items():
            amounts[el.symbol] = amounts.get(el.symbol, 0.0) + moles * float(n)
    total = sum(amounts.values())
    return {k: v / total for k, v in amounts.items()} if total > 0 else {}


def mismatch(implied: Mapping[str, float], nominal: Any, volatile_tolerance: float) -> float:
    """Share of atoms (0-1, half the L1 distance of atomic fractions) misplaced beyond the
    tolerances: |x_implied - x_nominal| minus tol * x_nominal per element, clipped at 0.
    An implied element that was never weighed counts in full (no tolerance)."""
    nom = as_composition(nominal).fractional_composition
    x_nom = {el.symbol: float(v) for el, v in nom.items()}
    cost = 0.0
    for el in set(x_nom) | set(implied):
        xn, xi = x_nom.get(el, 0.0), implied.get(el, 0.0)
        tol = volatile_tolerance if el in VOLATILE else OTHER_TOLERANCE
        cost += max(0.0, abs(xi - xn) - tol * xn)
    return 0.5 * cost


def phase_mismatch(weight_fractions: Sequence[float], phase_compositions: Sequence[Any],
                   nominal: Any, volatile_tolerance: float) -> float:
    """:func:`mismatch` of the composition implied by these weight fractions (1.0 when no phase
    has weight: nothing found explains nothing)."""
    implied = implied_fractions(weight_fractions, phase_compositions)
    if not implied:
        return 1.0
    return mismatch(implied, nominal, volatile_tolerance)
