"""Reaction thermodynamics: balancing precursor sets to a product, reaction energies, pairs.

Energy frame (documented in ``data/gases.yaml``): condensed phases have G ≈ ΔHf from the
Materials Project table shipped by ``surrogates.known_phases()`` (lowest polymorph); gases
carry their full standard entropy at the firing temperature, from NIST-JANAF values. The
entropy of released CO2/H2O/O2 is what makes carbonates, hydroxides and higher oxides react
at all, so it must be in; the much smaller entropies of solids are left out.

Balancing convention. For a product P made from precursors p_i:
- every element of P except O is *pinned*: Σ a_i n_i(e) = n_P(e) exactly, which fixes the
  coefficients a_i (the set must have full column rank on the pinned elements, so two
  sources of the same element are never mixed at an arbitrary ratio);
- elements of the precursors that are not in P must leave as gas: F as HF (needs H), N with
  H as NH3, the remaining N as NO2, the remaining H as H2O, C as CO2;
- O is balanced with O2 from or to the atmosphere (at its partial pressure).
A fixed convention (instead of free energy minimisation over gases) keeps, e.g., the
combustion of NH3 from inflating the driving force of ammonium-phosphate routes.

Energies are reported per atom of the solid product (meV/atom, negative = downhill).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import yaml
from pymatgen.core import Composition

from .types import RecipeError, TargetSpec

EV_PER_KJ_MOL = 1.0 / 96.485332
R_KJ = 8.314462618e-3
GASIFIABLE = frozenset({"C", "H", "N", "F"})
GAS_FORMULAS = {"O2", "CO2", "H2O", "NH3", "NO2", "NO", "HF", "H3N", "N2", "CO"}


@lru_cache(maxsize=65536)
def parse(formula: str) -> tuple[str, tuple[tuple[str, float], ...], float]:
    """Cached (reduced formula, element amounts per reduced formula unit, atoms per unit).

    pymatgen's Composition reduction dominated the planner's run time; every formula string
    is parsed once per process."""
    comp = Composition(formula).reduced_composition
    amounts = tuple(sorted((el.symbol, float(n)) for el, n in comp.items()))
    return comp.reduced_formula, amounts, float(comp.num_atoms)


def amounts_of(formula: str) -> dict[str, float]:
    return dict(parse(formula)[1])


def rf(formula: str) -> str:
    return parse(formula)[0]


@lru_cache(maxsize=65536)
def molar_mass(formula: str) -> float:
    return float(Composition(rf(formula)).weight)


@dataclass(frozen=True)
class GasRef:
    dhf_kj_mol: float
    s_j_mol_k: float
    cp_j_mol_k: float

    def g_ev(self, temperature_c: float, pressure_atm: float) -> float:
        """G(T) of one molecule in the enthalpy frame (eV)."""
        t = temperature_c + 273.15
        t0 = 298.15
        h = self.dhf_kj_mol + self.cp_j_mol_k * (t - t0) / 1000.0
        s = (self.s_j_mol_k + self.cp_j_mol_k * math.log(t / t0)) / 1000.0
        g = h - t * s + R_KJ * t * math.log(pressure_atm)
        return g * EV_PER_KJ_MOL


@lru_cache(maxsize=1)
def _gas_table() -> tuple[dict[str, GasRef], float, dict[str, float]]:
    text = resources.files("recipes").joinpath("data/gases.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    gases = {k: GasRef(**v) for k, v in data["gases"].items()}
    return gases, float(data["pressure_atm"]), {k: float(v) for k, v in data["o2_pressure_atm"].items()}


def gas_energy_ev(gas: str, temperature_c: float, atmosphere: str = "air") -> float:
    """G(T) of one gas molecule (eV) at the product pressure (O2: the atmosphere's pO2)."""
    gases, p, o2p = _gas_table()
    if gas not in gases:
        raise RecipeError(f"unknown gas {gas!r}; known: {', '.join(sorted(gases))}")
    if gas == "O2":
        if atmosphere not in o2p:
            raise RecipeError(
                f"unknown atmosphere {atmosphere!r}; known: {', '.join(sorted(o2p))}"
            )
        return gases["O2"].g_ev(temperature_c, o2p[atmosphere])
    return gases[gas].g_ev(temperature_c, p)


@dataclass(frozen=True)
class Reaction:
    """Σ coeff·reactant (+ O2 from air) → product + gases, per formula unit of product."""

    reactants: tuple[tuple[str, float], ...]
    product: str
    gases: tuple[tuple[str, float], ...]  # O2 positive = released, negative = taken from air
    energy_mev_per_atom: float
    temperature_c: float

    def coefficient(self, formula: str) -> float:
        return dict(self.reactants).get(formula, 0.0)

    def element_balance(self) -> dict[str, float]:
        """Σ reactants + O2 in − product − gases out, per element (all ≈ 0 when balanced)."""
        out: dict[str, float] = {}
        for f, c in self.reactants:
            for el, n in amounts_of(f).items():
                out[el] = out.get(el, 0.0) + c * n
        for el, n in amounts_of(self.product).items():
            out[el] = out.get(el, 0.0) - n
        for g, c in self.gases:
            for el, n in amounts_of(g).items():
                out[el] = out.get(el, 0.0) - c * n
        return out

    def equation(self) -> str:
        def fmt(c: float, f: str) -> str:
            return f if abs(c - 1) < 1e-9 else f"{c:.4g} {f}"

        left = [fmt(c, f) for f, c in self.reactants]
        right = [fmt(1.0, self.product)]
        for g, c in self.gases:
            if g == "O2" and c < 0:
                left.append(fmt(-c, "O2"))
            elif c > 1e-12:
                right.append(fmt(c, g))
        return " + ".join(left) + " -> " + " + ".join(right)

    def to_dict(self) -> dict[str, Any]:
        return {
            "equation": self.equation(),
            "reactants": {f: c for f, c in self.reactants},
            "product": self.product,
            "gases": {g: c for g, c in self.gases},
            "energy_mev_per_atom": self.energy_mev_per_atom,
            "temperature_c": self.temperature_c,
        }


class Thermo:
    """Energies of solids (from known phases) and gases; balancing; pairwise reactions.

    ``known`` is a ``surrogates.KnownPhases`` (anything with ``formation_energy(formula)``,
    ``phases(chemsys)`` and ``hull_reference_energy(formula)``). Target energies given by the
    caller override the table (a GNN prediction for a hypothetical compound).
    """

    def __init__(self, known: Any, atmosphere: str = "air") -> None:
        self.known = known
        self.atmosphere = atmosphere
        self._target_e: dict[str, tuple[float, str]] = {}
        # registered targets that may form as a pair product (None: all of them); the planner
        # sets it per call to the target and the history's targets (see RecipePlanner)
        self.pair_targets: frozenset[str] | None = None
        self._pair_cache: dict[tuple[str, str, int, tuple[str, ...]], Reaction | None] = {}
        self._solid_cache: dict[str, float | None] = {}
        self.target_kind: dict[str, str] = {}  # "table" | "given" | "hull_estimate"
        self._balance_cache: dict[tuple[tuple[str, ...], str], Any] = {}
        self._phase_cache: dict[tuple[str, ...], list[str]] = {}

    # ---------------------------------------------------------------- energies
    def formation_energy(self, formula: str) -> float | None:
        """eV/atom from the table (lowest polymorph), or a registered target energy."""
        key = rf(formula)
        if key in self._target_e:
            return self._target_e[key][0]
        if key not in self._solid_cache:
            e = self.known.formation_energy(key)
            self._solid_cache[key] = None if e is None else float(e)
        return self._solid_cache[key]

    def solid_energy_ev(self, formula: str) -> float:
        """G of one reduced formula unit (eV); raises if the table does not know it."""
        e = self.formation_energy(formula)
        if e is None:
            raise RecipeError(
                f"{formula} is not on the Materials Project table: its energy is unknown "
                "(give it in TargetSpec.e_form_ev_per_atom if it is a target)"
            )
        return e * parse(formula)[2]

    def register_target(self, target: TargetSpec) -> tuple[float, str]:
        """Fix the target's formation energy (eV/atom) and say where it came from."""
        key = rf(target.formula)
        if target.e_form_ev_per_atom is not None:
            value = (float(target.e_form_ev_per_atom), "given in TargetSpec")
            self.target_kind[key] = "given"
        else:
            table = self.known.formation_energy(key)
            self.target_kind[key] = "table" if table is not None else "hull_estimate"
            if table is not None:
                value = (float(table), "Materials Project table (lowest polymorph)")
            else:
                try:
                    hull = float(self.known.hull_reference_energy(key))
                except Exception as exc:  # noqa: BLE001 - any failure: the target cannot be placed
                    raise RecipeError(f"target {key}: cannot estimate its energy: {exc}") from None
                value = (hull, "not on the table: estimated as on the convex hull (e_above_hull = 0)")
        if self._target_e.get(key) != value:
            self._target_e[key] = value
            self._pair_cache.clear()  # a new phase can be a pair product
        return value

    # ---------------------------------------------------------------- balancing
    def balance(
        self, reactants: tuple[str, ...] | list[str], product: str, temperature_c: float
    ) -> Reaction | None:
        """Balanced reaction of these reactants to one formula unit of ``product``, or None.

        None when: the reactants leave an element that cannot leave as an allowed gas, the
        pinned elements cannot be matched exactly with positive amounts, or two reactants
        are redundant (rank deficient) — see the module docstring.
        """
        key = (tuple(reactants), product)
        hit = self._balance_cache.get(key)
        if hit is None:
            hit = self._balance_cache[key] = self._coefficients(tuple(reactants), product)
        if hit is False:
            return None
        names, coeffs, gases = hit
        energy = self.reaction_energy(list(zip(names, coeffs, strict=True)), product, gases, temperature_c)
        return Reaction(
            reactants=tuple((n, float(c)) for n, c in zip(names, coeffs, strict=True)),
            product=rf(product),
            gases=tuple(gases),
            energy_mev_per_atom=energy,
            temperature_c=float(temperature_c),
        )

    def _coefficients(self, reactants: tuple[str, ...], product: str) -> Any:
        """(names, coefficients, gases) of the balance, or False (temperature independent)."""
        prod = amounts_of(product)
        reac = [amounts_of(r) for r in reactants]
        pinned = sorted(set(prod) - {"O"})
        if not pinned:
            return False
        for r in reac:
            extra = set(r) - set(prod) - {"O"}
            if not extra <= GASIFIABLE:
                return False
        a_mat = np.array([[r.get(e, 0.0) for r in reac] for e in pinned], dtype=float)
        b = np.array([prod[e] for e in pinned], dtype=float)
        if np.linalg.matrix_rank(a_mat) < len(reac):
            return False
        coeffs, *_ = np.linalg.lstsq(a_mat, b, rcond=None)
        if np.max(np.abs(a_mat @ coeffs - b)) > 1e-8 or np.min(coeffs) <= 1e-9:
            return False
        excess: dict[str, float] = {}
        for c, r in zip(coeffs, reac, strict=True):
            for el, n in r.items():
                excess[el] = excess.get(el, 0.0) + c * n
        for el, n in prod.items():
            excess[el] = excess.get(el, 0.0) - n
        gases = self._gas_split(excess, pinned)
        if gases is None:
            return False
        return [rf(r) for r in reactants], [float(c) for c in coeffs], gases

    @staticmethod
    def _gas_split(excess: dict[str, float], pinned: list[str]) -> list[tuple[str, float]] | None:
        """Leftover C, H, N, F, O → CO2, HF, NH3, NO2, H2O and O2 (fixed order, see module)."""
        tol = 1e-9
        c = excess.get("C", 0.0) if "C" not in pinned else 0.0
        h = excess.get("H", 0.0) if "H" not in pinned else 0.0
        n = excess.get("N", 0.0) if "N" not in pinned else 0.0
        f = excess.get("F", 0.0) if "F" not in pinned else 0.0
        o = excess.get("O", 0.0)
        if min(c, h, n, f) < -tol:
            return None  # a gasifiable element is needed but nothing supplies it
        out: list[tuple[str, float]] = []
        if f > tol:
            if h < f - tol:
                return None  # fluorine can only leave as HF
            out.append(("HF", f))
            h -= f
        nh3 = min(n, h / 3.0)
        if nh3 > tol:
            out.append(("NH3", nh3))
            n -= nh3
            h -= 3 * nh3
        if n > tol:
            out.append(("NO2", n))
        if h > tol:
            out.append(("H2O", h / 2.0))
        if c > tol:
            out.append(("CO2", c))
        o_out = 2 * c + h / 2.0 + 2 * max(n, 0.0)
        o2 = (o - o_out) / 2.0
        if abs(o2) > tol:
            out.append(("O2", o2))
        return out

    def reaction_energy(
        self,
        reactants: list[tuple[str, float]],
        product: str,
        gases: list[tuple[str, float]] | tuple[tuple[str, float], ...],
        temperature_c: float,
    ) -> float:
        """ΔG (meV per atom of product) of a balanced reaction at ``temperature_c``."""
        g = self.solid_energy_ev(product)
        for gas, c in gases:
            g += c * gas_energy_ev(gas, temperature_c, self.atmosphere)
        for r, c in reactants:
            g -= c * self.solid_energy_ev(r)
        return 1000.0 * g / parse(product)[2]

    def phases_energy_to(
        self, phases: dict[str, float], product: str, temperature_c: float
    ) -> float | None:
        """ΔG (meV/atom of product) of turning these amounts of phases (mol per product f.u.)
        into one formula unit of ``product`` + gases; None if the amounts do not conserve the
        product's pinned elements."""
        prod = amounts_of(product)
        pinned = set(prod) - {"O"}
        excess: dict[str, float] = {}
        for f, amount in phases.items():
            for el, n in amounts_of(f).items():
                excess[el] = excess.get(el, 0.0) + amount * n
        for el, n in prod.items():
            excess[el] = excess.get(el, 0.0) - n
        for el, x in excess.items():
            if el in pinned and abs(x) > 1e-6:
                return None
            if el not in pinned and el not in GASIFIABLE | {"O"} and abs(x) > 1e-6:
                return None
        gases = self._gas_split(excess, sorted(pinned))
        if gases is None:
            return None
        return self.reaction_energy(list(phases.items()), product, gases, temperature_c)

    # ---------------------------------------------------------------- pairwise reactions
    def pair_reaction(self, a: str, b: str, temperature_c: float) -> Reaction | None:
        """The most downhill single product of a + b (the deepest point of their tie line
        among known phases that balance with both), or None if nothing forms."""
        a, b = sorted((rf(a), rf(b)))
        ea = set(amounts_of(a)) - GASIFIABLE - {"O"}
        eb = set(amounts_of(b)) - GASIFIABLE - {"O"}
        targets = set(self._target_e) if self.pair_targets is None else \
            set(self._target_e) & self.pair_targets
        # only the targets that could form from a + b change the answer: they key the cache
        relevant = tuple(sorted(t for t in targets if set(amounts_of(t)) <= (ea | eb | {"O"})))
        key = (a, b, int(round(temperature_c / 25.0)), relevant)
        if key in self._pair_cache:
            return self._pair_cache[key]
        own_a, own_b = ea - eb, eb - ea
        best: Reaction | None = None
        if own_a and own_b:
            chemsys = sorted(ea | eb | {"O"})
            ckey = tuple(chemsys)
            if ckey not in self._phase_cache:
                self._phase_cache[ckey] = sorted({p.formula for p in self.known.phases(chemsys)})
            candidates = set(self._phase_cache[ckey]) | set(relevant)
            for formula in sorted(candidates):
                pe = set(amounts_of(formula))
                if not (pe & own_a and pe & own_b) or not pe <= (ea | eb | {"O"}):
                    continue
                if formula in GAS_FORMULAS:
                    continue
                rxn = self.balance((a, b), formula, temperature_c)
                if rxn is not None and (best is None or rxn.energy_mev_per_atom < best.energy_mev_per_atom):
                    best = rxn
        if best is not None and best.energy_mev_per_atom >= 0:
            best = None
        self._pair_cache[key] = best
        return best
