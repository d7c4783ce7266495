"""Small real crystals the XRD tests build patterns from: one home for the rock-salt and spinel
cells several test files mix (a rock-salt binary beside a spinel is the look-alike case of the
A-Lab chlorides, in oxide form)."""

from __future__ import annotations

from pymatgen.core import Lattice, Structure


def rocksalt(a: float, cation: str = "Mg", anion: str = "O") -> Structure:
    """A rock-salt AX cell (Fm-3m) of lattice parameter ``a`` Å."""
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])


def spinel_like(a: float) -> Structure:
    """MgAl2O4 (Fd-3m, origin 2) of lattice parameter ``a`` Å."""
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(a), ["Mg", "Al", "O"],
                                     [[0.125, 0.125, 0.125], [0.5, 0.5, 0.5],
                                      [0.2624, 0.2624, 0.2624]])
