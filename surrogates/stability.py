"""Predicted formation energies → decomposition energies against the known convex hull.

Why per member: acquisition needs the spread of the decomposition energy, and because the
hull reference of a composition is a constant, each member's value is simply its formation
energy minus that constant (the spread carries over unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .ensemble import PredictionTable
from .thermo import KnownPhases, known_phases


def add_hull_energy(table: PredictionTable, formulas: Sequence[str], *,
                    column: str = "e_form", name: str = "e_above_hull",
                    phases: KnownPhases | None = None) -> PredictionTable:
    """A new table with output ``name`` = predicted ``column`` − hull energy at each formula
    (eV/atom; negative = below the known hull, i.e. predicted stable)."""
    if len(formulas) != len(table):
        raise ValueError(f"{len(formulas)} formulas for a table of {len(table)} candidates")
    kp = phases or known_phases()
    cache: dict[str, float] = {}
    refs = np.empty(len(formulas))
    for i, f in enumerate(formulas):
        if f not in cache:
            cache[f] = kp.hull_reference_energy(f)
        refs[i] = cache[f]
    j = table.column(column)
    extra = table.values[:, :, j] - refs[None, :]
    values = np.concatenate([table.values, extra[:, :, None]], axis=2)
    inflation = np.concatenate([table.inflation, table.inflation[j : j + 1]])
    return PredictionTable(values, (*table.outputs, name), inflation)
