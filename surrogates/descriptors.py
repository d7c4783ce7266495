"""Cheap composition descriptors used as auxiliary "expert knowledge" training targets.

Why as targets rather than inputs: predicting them forces the shared layers to encode
chemistry a chemist would check first (is the formula charge balanced? how ionic is it?),
which helps on small data sets and costs nothing at prediction time (the heads are unused).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from pymatgen.core import Composition, Element, Structure


@lru_cache(maxsize=256)
def _electronegativity(symbol: str) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = Element(symbol).X
    return float(x) if x == x and x > 0 else 2.0


@lru_cache(maxsize=256)
def _oxidation_states(symbol: str) -> tuple[int, ...]:
    el = Element(symbol)
    return tuple(el.common_oxidation_states) or (0,)


def mean_electronegativity(comp: Composition) -> float:
    """Atom-weighted mean Pauling electronegativity."""
    amounts = comp.get_el_amt_dict()
    total = sum(amounts.values())
    return sum(_electronegativity(el) * x for el, x in amounts.items()) / total


def electronegativity_spread(comp: Composition) -> float:
    """Max − min electronegativity: a proxy for ionic character."""
    xs = [_electronegativity(el) for el in comp.get_el_amt_dict()]
    return max(xs) - min(xs)


@lru_cache(maxsize=65536)
def _balanced(items: tuple[tuple[str, float], ...]) -> float:
    symbols = [el for el, _ in items]
    amounts = np.array([x for _, x in items])
    for states in itertools.product(*(_oxidation_states(el) for el in symbols)):
        if abs(float(np.dot(states, amounts))) < 1e-6:
            return 1.0
    return 0.0


def charge_balanced(comp: Composition) -> float:
    """1.0 if one common oxidation state per element makes the formula neutral, else 0.0
    (a fast stand-in for pymatgen's ``oxi_state_guesses``; elements are single-valued)."""
    red = comp.reduced_composition.get_el_amt_dict()
    if len(red) == 1:
        return 1.0
    return _balanced(tuple(sorted(red.items())))


AUX_TARGETS: dict[str, Callable[[Composition], float]] = {
    "mean_electronegativity": mean_electronegativity,
    "electronegativity_spread": electronegativity_spread,
    "charge_balanced": charge_balanced,
}


def aux_matrix(structures: list[Structure], names: tuple[str, ...]) -> np.ndarray:
    """(n, len(names)) matrix of auxiliary targets; unknown names raise ValueError."""
    for name in names:
        if name not in AUX_TARGETS:
            raise ValueError(f"unknown auxiliary target {name!r}; allowed: {sorted(AUX_TARGETS)}")
    out = np.zeros((len(structures), len(names)), dtype=np.float64)
    for i, s in enumerate(structures):
        comp = s.composition
        for j, name in enumerate(names):
            out[i, j] = AUX_TARGETS[name](comp)
    return out
