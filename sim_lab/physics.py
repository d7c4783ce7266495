"""Solid-state reaction physics of the simulated lab (the ARROWS3 picture, made executable).

Model (parameters in ``World.kinetics``; docs/sim_lab.md explains each):

* **Open oxygen.** The furnace atmosphere fixes the oxygen chemical potential
  ``mu_O(T) = min(0, intercept + slope*T[K]) + offset[atmosphere]`` (eV per O atom, referenced to
  the formation energies' O2). Phases are compared by their grand energy per cation
  ``phi = (E_form*N_atoms - mu_O*N_O) / N_cations``; oxygen is taken from or released to the
  atmosphere as O2. The default line puts MnO2 -> Mn2O3 near 500 C and Mn2O3 -> Mn3O4 near 930 C
  in air with Materials Project energies, as observed.
* **Decomposition.** Shelf precursors with a ``decomposition`` (carbonates, hydroxides, nitrates,
  ammonium salts) turn into their products above the decomposition temperature; gases leave.
  Phases holding C, H or N take part in nothing else (they react through their decomposition
  products).
* **Pairwise reactions.** Every pair of crystalline phases in contact (and every single phase, for
  its own instability) has one best reaction: the linear programme "mix A and B in any ratio and
  let the mixture fall onto the lower hull of the world's phases" gives the most negative reaction
  energy and its products (the most stable products on the A-B tie line). Pairs react in order of
  driving force (largest first) within each time step.
* **Kinetics.** Extent per step ``1 - exp(-k dt)`` of the limiting reactant with
  ``k = k0 * s(T) * g(dG)``: ``s`` switches on around the Tamman temperature
  (``tamman_ratio * Tm`` of the lower-melting reactant) and grows above it; ``g = dG^n/(dG^n+dG_half^n)``
  makes steps below ~50 meV/atom sluggish. Cooling is fast and reaction-free.
* **Volatility.** Volatile oxides (Li2O, Na2O, K2O, MoO3, Bi2O3, PbO) evaporate above an onset,
  faster as free oxides than bound in compounds; the depleted remainder falls onto the hull.
* **Amorphisation.** With a seeded probability a product phase forms partly amorphous in a sample
  (no Bragg peaks, not counted as made).

Mass and elements are conserved: solids + gases released (minus O2 taken up) + evaporated oxides
equal what was dosed (``SampleState.element_balance`` checks it).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from pymatgen.core import Composition
from scipy.optimize import linprog

from .world import GAS_FORMING, GASES, World

_GASES_REDUCED = frozenset(Composition(g).reduced_formula for g in GASES)

KELVIN = 273.15
_TINY = 1e-12


@lru_cache(maxsize=4096)
def _comp(formula: str) -> Composition:
    return Composition(formula)


@lru_cache(maxsize=4096)
def molar_mass(formula: str) -> float:
    """g/mol as a plain float (pymatgen's weight carries units, which numpy dislikes)."""
    return float(Composition(formula).weight)


@lru_cache(maxsize=4096)
def _elements_of(formula: str) -> tuple[tuple[str, float], ...]:
    return tuple((el.symbol, float(amt)) for el, amt in Composition(formula).items())


@dataclass(frozen=True)
class Segment:
    """One heating segment: ramp to ``setpoint_c`` at ``ramp_c_per_min``, then hold ``dwell_min``."""

    ramp_c_per_min: float
    setpoint_c: float
    dwell_min: float


def as_profile(profile: Any) -> list[Segment]:
    """Accept dicts, tuples, or objects with the three attributes (e.g. recipes' HeatingSegment)."""
    segments: list[Segment] = []
    for i, seg in enumerate(profile):
        try:
            if isinstance(seg, Mapping):
                values = (seg["ramp_c_per_min"], seg["setpoint_c"], seg["dwell_min"])
            elif isinstance(seg, Sequence):
                values = tuple(seg)
            else:
                values = (seg.ramp_c_per_min, seg.setpoint_c, seg.dwell_min)
            ramp, setpoint, dwell = (float(v) for v in values)
        except (KeyError, AttributeError, TypeError, ValueError) as exc:
            raise ValueError(
                f"profile[{i}]: needs ramp_c_per_min, setpoint_c, dwell_min ({exc})"
            ) from None
        if ramp <= 0 or dwell < 0 or not 0 < setpoint <= 2000:
            raise ValueError(
                f"profile[{i}]: ramp must be > 0, dwell >= 0 and 0 < setpoint <= 2000 C; "
                f"got ramp={ramp}, setpoint={setpoint}, dwell={dwell}"
            )
        segments.append(Segment(ramp, setpoint, dwell))
    if not segments:
        raise ValueError("profile: at least one heating segment is needed")
    return segments


def profile_duration_min(profile: Any, cooling_c_per_min: float = 5.0, start_c: float = 25.0) -> float:
    """Real furnace time of a profile: ramps, dwells, and cooling back to room temperature."""
    t, temp = 0.0, start_c
    for seg in as_profile(profile):
        t += abs(seg.setpoint_c - temp) / (seg.ramp_c_per_min if seg.setpoint_c > temp else cooling_c_per_min)
        t += seg.dwell_min
        temp = seg.setpoint_c
    return t + max(0.0, temp - start_c) / cooling_c_per_min


@dataclass(frozen=True)
class PhaseData:
    formula: str
    elements: frozenset[str]  # cations (non-O elements)
    cation_fractions: dict[str, float]
    n_cat: float  # cations per formula unit
    n_o: float
    n_atoms: float
    energy_fu: float  # formation energy per formula unit, eV
    mass_fu: float  # g/mol
    melting_c: float


@dataclass(frozen=True)
class Reaction:
    """Best reaction of a pair: consume cation-moles ``reactants``; form ``products`` (cation-moles)."""

    reactants: tuple[tuple[str, float], ...]
    products: tuple[tuple[str, float], ...]
    dg_ev_per_atom: float  # negative: favourable
    tamman_c: float


class Thermo:
    """Hull geometry of one world at a given oxygen chemical potential (cached LPs)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.kin = world.kinetics
        self.data: dict[str, PhaseData] = {}
        for formula in world.phase_formulas():
            phase = world.phase(formula)
            comp = Composition(formula)
            cations = {el.symbol: amt for el, amt in comp.items() if el.symbol != "O"}
            n_cat = sum(cations.values())
            self.data[formula] = PhaseData(
                formula=formula,
                elements=frozenset(cations),
                cation_fractions={el: amt / n_cat for el, amt in cations.items()} if n_cat else {},
                n_cat=n_cat,
                n_o=comp["O"],
                n_atoms=comp.num_atoms,
                energy_fu=phase.e_form_ev_per_atom * comp.num_atoms,
                mass_fu=comp.weight,
                melting_c=phase.melting_point_c,
            )
        # phases that can react and form: no gas-forming element, at least one cation
        self.solids = sorted(
            f for f, d in self.data.items() if d.n_cat > 0 and not (d.elements & GAS_FORMING)
        )
        self._best: dict[tuple[str, str, float], Reaction | None] = {}
        self._decomp: dict[tuple[tuple[tuple[str, float], ...], float], dict[str, float] | None] = {}

    def mu_o(self, temperature_c: float, atmosphere: str) -> float:
        """Oxygen chemical potential (eV/O atom), rounded so LP results cache well."""
        k = self.kin
        base = min(0.0, k.oxygen_mu_intercept_ev + k.oxygen_mu_slope_ev_per_k * (temperature_c + KELVIN))
        try:
            offset = k.oxygen_mu_offset_ev[atmosphere]
        except KeyError:
            raise ValueError(
                f"atmosphere {atmosphere!r} unknown; the world knows {sorted(k.oxygen_mu_offset_ev)}"
            ) from None
        return round((base + offset) / 0.05) * 0.05

    def phi(self, formula: str, mu: float) -> float:
        d = self.data[formula]
        return (d.energy_fu - mu * d.n_o) / d.n_cat

    def _candidates(self, elements: frozenset[str]) -> list[str]:
        return [f for f in self.solids if self.data[f].elements <= elements]

    def best_reaction(self, a: str, b: str, mu: float) -> Reaction | None:
        """Most favourable reaction of A with B (or of A alone when a == b) at ``mu``."""
        if a > b:
            a, b = b, a
        key = (a, b, mu)
        if key in self._best:
            return self._best[key]
        da, db = self.data[a], self.data[b]
        elements = da.elements | db.elements
        cands = self._candidates(elements)
        els = sorted(elements)
        n = len(cands)
        # variables: lambda_P (per-cation amounts of candidates), then x_a, x_b
        c = np.array([self.phi(p, mu) for p in cands] + [-self.phi(a, mu), -self.phi(b, mu)])
        a_eq = np.zeros((len(els) + 1, n + 2))
        for j, p in enumerate(cands):
            for i, el in enumerate(els):
                a_eq[i, j] = self.data[p].cation_fractions.get(el, 0.0)
        for i, el in enumerate(els):
            a_eq[i, n] = -da.cation_fractions.get(el, 0.0)
            a_eq[i, n + 1] = -db.cation_fractions.get(el, 0.0)
        a_eq[-1, n] = a_eq[-1, n + 1] = 1.0
        b_eq = np.zeros(len(els) + 1)
        b_eq[-1] = 1.0
        bounds = [(0, None)] * n + [(0, 1), (0, 1 if a != b else 0)]
        res = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs-ds")
        result: Reaction | None = None
        if res.status == 0:
            x = res.x
            xa, xb = x[n], x[n + 1]
            atoms = xa * da.n_atoms / da.n_cat + xb * db.n_atoms / db.n_cat
            dg = res.fun / atoms if atoms > 0 else 0.0
            if dg < -self.kin.min_driving_force_mev / 1000.0:
                # net change per phase: candidates formed minus reactants used (a reactant may
                # also appear among the candidates; only the net matters for conservation)
                net: dict[str, float] = {a: -xa} if a == b else {a: -xa, b: -xb}
                for j, p in enumerate(cands):
                    if x[j] > 1e-12:
                        net[p] = net.get(p, 0.0) + x[j]
                consumed = {p: -v for p, v in net.items() if v < -1e-12}
                products = {p: v for p, v in net.items() if v > 1e-12}
                if consumed and products:
                    tm = min(self.data[p].melting_c for p in consumed)
                    result = Reaction(
                        reactants=tuple(sorted(consumed.items())),
                        products=tuple(sorted(products.items())),
                        dg_ev_per_atom=dg,
                        tamman_c=self.kin.tamman_ratio * (tm + KELVIN) - KELVIN,
                    )
        self._best[key] = result
        return result

    def decompose(self, cations: Mapping[str, float], mu: float) -> dict[str, float] | None:
        """Lowest-grand-energy assemblage (formula-unit moles) holding these cation moles."""
        items = tuple(sorted((el, round(v, 12)) for el, v in cations.items() if v > _TINY))
        if not items:
            return {}
        total = sum(v for _, v in items)
        norm = tuple((el, round(v / total, 9)) for el, v in items)
        key = (norm, mu)
        if key not in self._decomp:
            els = [el for el, _ in norm]
            cands = self._candidates(frozenset(els))
            sol: dict[str, float] | None = None
            if cands:
                c = np.array([self.phi(p, mu) for p in cands])
                a_eq = np.array(
                    [[self.data[p].cation_fractions.get(el, 0.0) for p in cands] for el in els]
                )
                b_eq = np.array([v for _, v in norm])
                res = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=[(0, None)] * len(cands), method="highs-ds")
                if res.status == 0:
                    sol = {p: float(v) for p, v in zip(cands, res.x, strict=True) if v > 1e-10}
            self._decomp[key] = sol
        sol = self._decomp[key]
        if sol is None:
            return None
        return {p: v * total / self.data[p].n_cat for p, v in sol.items()}


_THERMO: dict[int, tuple[World, Thermo]] = {}


def thermo_for(world: World) -> Thermo:
    """One cached ``Thermo`` per world object (its LP caches make later recipes cheap)."""
    entry = _THERMO.get(id(world))
    if entry is None or entry[0] is not world:
        entry = (world, Thermo(world))
        _THERMO[id(world)] = entry
    return entry[1]


@dataclass
class SampleState:
    """Physical content of one crucible, in formula-unit moles."""

    phases: dict[str, float] = field(default_factory=dict)  # crystalline
    amorphous: dict[str, float] = field(default_factory=dict)
    gases_out: dict[str, float] = field(default_factory=dict)  # O2 negative = taken up
    evaporated: dict[str, float] = field(default_factory=dict)  # volatile oxides lost
    dosed_elements: dict[str, float] = field(default_factory=dict)  # moles of each element dosed
    history: list[dict[str, Any]] = field(default_factory=list)
    max_temperature_c: float = 25.0

    def _add(self, store: dict[str, float], formula: str, moles: float) -> None:
        store[formula] = float(store.get(formula, 0.0) + moles)
        if abs(store[formula]) < 1e-15:
            del store[formula]

    def solid_masses(self) -> dict[str, float]:
        masses: dict[str, float] = {}
        for store in (self.phases, self.amorphous):
            for f, m in store.items():
                if m > _TINY:
                    masses[f] = masses.get(f, 0.0) + m * molar_mass(f)
        return masses

    def total_mass_g(self) -> float:
        return sum(self.solid_masses().values())

    def weight_fractions(self) -> dict[str, float]:
        """True crystalline weight fractions of the whole solid (remainder is amorphous)."""
        total = self.total_mass_g()
        if total <= 0:
            return {}
        out = {
            f: m * molar_mass(f) / total for f, m in self.phases.items() if m > _TINY
        }
        return {f: w for f, w in sorted(out.items(), key=lambda kv: -kv[1]) if w > 1e-6}

    def amorphous_fraction(self) -> float:
        total = self.total_mass_g()
        if total <= 0:
            return 0.0
        return sum(m * molar_mass(f) for f, m in self.amorphous.items()) / total

    def element_balance(self) -> dict[str, float]:
        """Moles of each element now (solids + gases + evaporated, O2 uptake negative) minus dosed."""
        now: dict[str, float] = {}
        for store in (self.phases, self.amorphous, self.gases_out, self.evaporated):
            for f, m in store.items():
                for el, amt in _elements_of(f):
                    now[el] = now.get(el, 0.0) + amt * m
        keys = set(now) | set(self.dosed_elements)
        return {k: now.get(k, 0.0) - self.dosed_elements.get(k, 0.0) for k in sorted(keys)}

    def scale(self, factor: float) -> None:
        """Lose a fraction of the powder uniformly (recovery losses)."""
        for store in (self.phases, self.amorphous):
            for f in list(store):
                store[f] *= factor
        for el in list(self.dosed_elements):
            self.dosed_elements[el] *= factor
        for store in (self.gases_out, self.evaporated):
            for f in list(store):
                store[f] *= factor

    def to_dict(self) -> dict[str, Any]:
        return {
            "phases": self.phases,
            "amorphous": self.amorphous,
            "gases_out": self.gases_out,
            "evaporated": self.evaporated,
            "dosed_elements": self.dosed_elements,
            "max_temperature_c": self.max_temperature_c,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampleState:
        return cls(
            phases=dict(data.get("phases", {})),
            amorphous=dict(data.get("amorphous", {})),
            gases_out=dict(data.get("gases_out", {})),
            evaporated=dict(data.get("evaporated", {})),
            dosed_elements=dict(data.get("dosed_elements", {})),
            max_temperature_c=float(data.get("max_temperature_c", 25.0)),
        )


def dose(world: World, precursors: Mapping[str, float]) -> SampleState:
    """A fresh crucible holding ``precursors`` (formula -> grams); off-shelf powders raise ValueError."""
    state = SampleState()
    shelf = set(world.precursors)
    for formula, grams in precursors.items():
        try:
            key = Composition(formula).reduced_formula
        except Exception:
            raise ValueError(f"precursor {formula!r} is not a chemical formula") from None
        if key not in shelf:
            raise ValueError(f"precursor {formula!r} is not on the shelf (shelf: {', '.join(sorted(shelf))})")
        if grams < 0 or not math.isfinite(grams):
            raise ValueError(f"precursor {formula!r}: mass must be a finite number >= 0, got {grams}")
        if grams == 0:
            continue
        moles = grams / molar_mass(key)
        state._add(state.phases, key, moles)
        for el, amt in _elements_of(key):
            state.dosed_elements[el] = state.dosed_elements.get(el, 0.0) + amt * moles
    return state


def _amorphous_share(seed: int | None, formula: str, kin: Any) -> float:
    if seed is None or kin.amorphous_probability <= 0:
        return 0.0
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(formula.encode())])
    if rng.random() >= kin.amorphous_probability:
        return 0.0
    lo, hi = kin.amorphous_fraction_range
    return float(rng.uniform(lo, hi))


def _time_steps(profile: list[Segment], dt: float) -> Iterable[tuple[float, float]]:
    """(temperature at step midpoint in C, step length in min) through ramps and dwells."""
    temp = 25.0
    for seg in profile:
        if seg.setpoint_c > temp:
            span = (seg.setpoint_c - temp) / seg.ramp_c_per_min
            n = max(1, math.ceil(span / dt))
            for i in range(n):
                yield temp + (seg.setpoint_c - temp) * (i + 0.5) / n, span / n
        temp = seg.setpoint_c
        if seg.dwell_min > 0:
            n = max(1, math.ceil(seg.dwell_min / dt))
            for _ in range(n):
                yield temp, seg.dwell_min / n


def heat(
    world: World,
    state: SampleState,
    profile: Any,
    *,
    atmosphere: str = "air",
    seed: int | None = 0,
    record: bool = False,
) -> SampleState:
    """Run a heating profile on a crucible in place (and return it). ``seed=None``: no amorphisation."""
    thermo = thermo_for(world)
    kin = world.kinetics
    segments = as_profile(profile)
    decomps = world.decompositions
    vols = world.model.volatility
    for temp, dt in _time_steps(segments, kin.time_step_min):
        state.max_temperature_c = max(state.max_temperature_c, temp)
        if temp < 100:
            continue
        mu = thermo.mu_o(temp, atmosphere)
        # 1. decomposition of carbonates, hydroxides, nitrates, ammonium salts
        for formula in list(state.phases):
            dec = decomps.get(formula)
            if dec is None or temp < dec.temperature_c:
                continue
            k = kin.decomposition_rate_per_min * (1 + (temp - dec.temperature_c) / 50.0)
            amount = state.phases[formula] * (1 - math.exp(-k * dt))
            if state.phases[formula] - amount < 1e-9 * max(1.0, state.phases[formula]):
                amount = state.phases[formula]
            state._add(state.phases, formula, -amount)
            for prod, coeff in dec.products.items():
                red = _comp(prod).reduced_formula
                per_fu = coeff * _comp(prod).num_atoms / _comp(red).num_atoms
                # compare reduced formulas: NH3 reduces to "H3N", which the GASES keys do not
                # spell; every listed gas leaves at a decomposition temperature, even one the
                # world also knows as a (molecular, cryogenic) solid phase from the Materials Project
                if red in _GASES_REDUCED:
                    state._add(state.gases_out, red, amount * per_fu)
                else:
                    state._add(state.phases, red, amount * per_fu)
        # 2. pairwise reactions, largest driving force first (single phases: own instability)
        present = [f for f, m in state.phases.items() if m > _TINY and f in thermo.data and f in _solid_set(thermo)]
        rxns: list[Reaction] = []
        for i, a in enumerate(present):
            for b in present[i:]:
                r = thermo.best_reaction(a, b, mu)
                if r is not None:
                    rxns.append(r)
        rxns.sort(key=lambda r: r.dg_ev_per_atom)
        for r in rxns:
            _apply_reaction(thermo, state, r, temp, dt, mu, seed)
        # 3. volatility
        for vol in vols:
            if temp <= vol.onset_c:
                continue
            k_h = vol.rate_per_h * 2 ** ((temp - vol.onset_c) / vol.doubling_c)
            _evaporate(thermo, state, vol, k_h * dt / 60.0, mu)
        if record:
            state.history.append({"t_c": round(temp, 1), "phases": dict(state.weight_fractions())})
    return state


def _solid_set(thermo: Thermo) -> frozenset[str]:
    cached = getattr(thermo, "_solid_set", None)
    if cached is None:
        cached = frozenset(thermo.solids)
        thermo._solid_set = cached  # type: ignore[attr-defined]
    return cached


def _apply_reaction(
    thermo: Thermo, state: SampleState, r: Reaction, temp: float, dt: float, mu: float, seed: int | None
) -> None:
    kin = thermo.kin
    # extent limited by the scarcest reactant (in cation-moles)
    avail = min(
        state.phases.get(p, 0.0) * thermo.data[p].n_cat / nu for p, nu in r.reactants
    )
    if avail <= _TINY:
        return
    x = (temp - r.tamman_c) / kin.tamman_width_c
    s = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))
    s *= min(kin.max_thermal_boost, math.exp(max(0.0, temp - r.tamman_c) / kin.activation_scale_c))
    dg = -r.dg_ev_per_atom * 1000.0
    n = kin.driving_force_exponent
    g = dg**n / (dg**n + kin.driving_force_half_mev**n)
    k = kin.rate_prefactor_per_min * s * g
    extent = avail * (1 - math.exp(-k * dt))
    if extent <= _TINY:
        return
    if avail - extent < 1e-9 * avail:
        extent = avail
    o_change = 0.0
    for p, nu in r.reactants:
        d = thermo.data[p]
        moles = extent * nu / d.n_cat
        state._add(state.phases, p, -moles)
        if state.phases.get(p, 0.0) < 1e-14:
            state.phases.pop(p, None)
        o_change += moles * d.n_o
    for p, nu in r.products:
        d = thermo.data[p]
        moles = extent * nu / d.n_cat
        o_change -= moles * d.n_o
        share = _amorphous_share(seed, p, kin)
        state._add(state.phases, p, moles * (1 - share))
        if share > 0:
            state._add(state.amorphous, p, moles * share)
    # oxygen released (positive) or taken up (negative) as O2
    state._add(state.gases_out, "O2", o_change / 2.0)


def _evaporate(thermo: Thermo, state: SampleState, vol: Any, k_dt: float, mu: float) -> None:
    oxide = _comp(vol.oxide).reduced_formula
    ox = _comp(oxide)
    per_oxide = ox[vol.element]
    for formula in list(state.phases):
        if formula not in thermo.data or vol.element not in thermo.data[formula].elements:
            continue
        if formula not in _solid_set(thermo) and formula != oxide:
            continue
        factor = 1.0 if formula == oxide else vol.bound_factor
        f = 1 - math.exp(-k_dt * factor)
        if f <= 0:
            continue
        moles = state.phases[formula]
        lost_fu = moles * f
        comp = _comp(formula)
        units = lost_fu * comp[vol.element] / per_oxide
        state._add(state.evaporated, oxide, units)
        state._add(state.phases, formula, -lost_fu)
        if formula == oxide:
            continue
        # the element-depleted remainder falls onto the hull (O balance via O2)
        residual = {el.symbol: amt * lost_fu for el, amt in comp.items()}
        for el, amt in ox.items():
            residual[el.symbol] = residual.get(el.symbol, 0.0) - amt * units
        cations = {el: v for el, v in residual.items() if el != "O" and v > 1e-15}
        products = thermo.decompose(cations, mu) or {}
        o_left = residual.get("O", 0.0)
        for p, m in products.items():
            state._add(state.phases, p, m)
            o_left -= m * thermo.data[p].n_o
        state._add(state.gases_out, "O2", o_left / 2.0)


def simulate(
    world: World,
    precursors: Mapping[str, float],
    profile: Any,
    *,
    atmosphere: str = "air",
    seed: int | None = 0,
    record: bool = False,
) -> SampleState:
    """Dose ``precursors`` (formula -> grams) and fire ``profile``; returns the crucible's state."""
    return heat(world, dose(world, precursors), profile, atmosphere=atmosphere, seed=seed, record=record)


def simulate_recipe(
    world: World,
    precursors: Mapping[str, float],
    profile: Any,
    seed: int | None = 0,
    *,
    atmosphere: str = "air",
) -> dict[str, float]:
    """Pure function for benchmarks: true crystalline weight fractions after firing.

    Fractions are of the whole solid; what is missing to 1 is amorphous. ``seed`` drives the
    amorphisation draw; ``seed=None`` switches amorphisation off.
    """
    return simulate(world, precursors, profile, atmosphere=atmosphere, seed=seed).weight_fractions()
