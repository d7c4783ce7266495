"""Firing conditions from precursor properties: the documented heuristic the yield model refines.

Heuristic (why each part):
- Solid-state reactions become appreciable near the Tammann temperature, ~0.5-0.6 of the
  melting point (K) of the reacting solids, when lattice diffusion sets in. We take
  T = 0.6 × the cation-weighted mean melting point (K) of the solids present after the
  precursors decompose (BaCO3 counts as BaO, MnO2 as Mn2O3...).
- Salts must have decomposed: T ≥ (highest decomposition onset of a salt: carbonate, hydroxide,
  nitrate, ammonium salt, oxalate, acid) − 100 °C (acidic oxides pull CO2 out of carbonates
  below their free decomposition temperature), at most 800 °C (Li2CO3 and BaCO3 decompose on
  their own only above 1300 °C but react with oxides from ~600 °C). Oxides losing O2 (Fe2O3,
  CuO) do not count.
- Volatile precursors (Li2CO3, MoO3, Bi2O3, alkali salts...) lose material above their
  ``volatile_above_c``: T is capped at that + 50 °C unless this would fall under the
  decomposition floor (then the floor wins and the rationale says so).
- Dwell 4 h, 8 h when the driving force of the target-forming step is small (< 100 meV/atom)
  since such steps are sluggish (A-Lab: < 50 meV/atom was the main failure cause).
- Precursors that release gas below 500 °C (ammonium salts, nitrates, hydroxides) get a 1 h
  hold just above their decomposition first, so the gas leaves before the powder sinters.
All temperatures are rounded to 25 °C and clipped to the campaign's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .library import UNKNOWN_MELTING_C, PrecursorLibrary
from .pathways import effective_phases
from .thermo import amounts_of
from .types import HeatingSegment

TAMMANN_FACTOR = 0.6
RAMP_C_PER_MIN = 5.0
BASE_DWELL_MIN = 240.0
SLUGGISH_DWELL_MIN = 480.0
SLUGGISH_MEV = 100.0
DWELL_CHOICES = (120.0, 240.0, 480.0, 720.0)
# carbonates (Li2CO3 1300 °C, BaCO3 1360 °C free decomposition) react with oxides far below
# their own decomposition: the "salts must decompose" floor never exceeds this
SALT_FLOOR_CAP_C = 800.0


@dataclass(frozen=True)
class Heuristic:
    temperature_c: float
    dwell_min: float
    reasons: tuple[str, ...]
    floor_c: float
    cap_c: float | None


def _round25(t: float) -> float:
    return float(round(t / 25.0) * 25.0)


def _melting_c(library: PrecursorLibrary, formula: str) -> float:
    p = library.describe(formula)
    if p.melting_c is not None:
        return p.melting_c
    if p.decomposition_c is not None and not p.decomposes_to:
        return p.decomposition_c
    return UNKNOWN_MELTING_C


def mean_melting_k(
    library: PrecursorLibrary, reactants: Sequence[tuple[str, float]], at_c: float = 1000.0
) -> float:
    """Cation-weighted mean melting point (K) of the solids present at ``at_c``."""
    phases = effective_phases(reactants, library, at_c)
    total, weight = 0.0, 0.0
    for formula, moles in phases.items():
        cations = sum(n for el, n in amounts_of(formula).items() if el not in {"O", "C", "H", "N", "F"})
        w = moles * max(cations, 1e-6)
        total += w * (_melting_c(library, formula) + 273.15)
        weight += w
    return total / weight if weight else UNKNOWN_MELTING_C + 273.15


def heuristic_conditions(
    library: PrecursorLibrary,
    reactants: Sequence[tuple[str, float]],
    driving_force_mev: float,
    min_c: float,
    max_c: float,
) -> Heuristic:
    """Temperature and dwell from the rules in the module docstring."""
    reasons: list[str] = []
    tm = mean_melting_k(library, reactants)
    t = TAMMANN_FACTOR * tm - 273.15
    reasons.append(f"0.6 × mean melting point of the reacting solids ({tm - 273.15:.0f} °C) = {t:.0f} °C")
    decomp = [
        library.describe(f).decomposition_c
        for f, _ in reactants
        if library.describe(f).decomposition_c is not None
        and library.describe(f).decomposes_to
        and library.describe(f).kind not in {"oxide", "peroxide", "ternary"}
    ]
    floor = min(max(decomp) - 100.0, SALT_FLOOR_CAP_C) if decomp else min_c
    if t < floor:
        t = floor
        reasons.append(f"raised to {floor:.0f} °C so every salt decomposes")
    vol = [library.describe(f).volatile_above_c for f, _ in reactants]
    vol = [v for v in vol if v is not None]
    cap = min(vol) + 50.0 if vol else None
    if cap is not None and t > cap:
        if cap >= floor:
            t = cap
            reasons.append(f"capped at {cap:.0f} °C: a volatile precursor loses material above it")
        else:
            reasons.append("volatile precursor present but decomposition needs more heat (expect losses)")
    t = min(max(_round25(t), min_c), max_c)
    dwell = BASE_DWELL_MIN
    if driving_force_mev < SLUGGISH_MEV:
        dwell = SLUGGISH_DWELL_MIN
        reasons.append(f"dwell 8 h: driving force {driving_force_mev:.0f} meV/atom < {SLUGGISH_MEV:.0f} is sluggish")
    return Heuristic(t, dwell, tuple(reasons), floor, cap)


def build_profile(
    library: PrecursorLibrary, formulas: Sequence[str], temperature_c: float, dwell_min: float
) -> tuple[HeatingSegment, ...]:
    """Heating segments: optional low-temperature outgassing hold, then the firing dwell."""
    outgas = [
        library.describe(f).decomposition_c
        for f in formulas
        if library.describe(f).decomposition_c is not None
        and library.describe(f).kind in {"ammonium", "nitrate", "hydroxide", "acid"}
        and library.describe(f).decomposition_c < 500
    ]
    segments: list[HeatingSegment] = []
    if outgas:
        hold = _round25(max(outgas) + 50.0)
        if hold < temperature_c - 100:
            segments.append(HeatingSegment(RAMP_C_PER_MIN, hold, 60.0))
    segments.append(HeatingSegment(RAMP_C_PER_MIN, float(temperature_c), float(dwell_min)))
    return tuple(segments)
