"""World statistics: how hard a world's targets are, from the builder's exhaustive truth search.

Why: a world is only useful for comparing strategies when, as in the A-Lab, some targets cannot
be made, most recipes fail, and for most makeable targets the choice of precursors matters (some
shelf sets fail through intermediates that eat the driving force, volatility or slow kinetics).
These figures say whether a world is like that; ``synthloop sim-lab stats WORLD --json`` prints them.

Definitions (the truth search = every single-cation shelf precursor set of a target, at most
``MAX_SETS_PER_TARGET``, fired at each of ``TRUTH_TEMPERATURES_C`` for 8 h, no amorphisation):

* a **recipe** is one (precursor set, temperature) of that search; it **succeeds** at >= 50 %
  target weight fraction;
* a target is **makeable** when one of its recipes succeeds;
* a **set succeeds** when it succeeds at one of the temperatures, and **fails** when it fails at
  all of them;
* a makeable target is **precursor-dependent** when, at one temperature of the search, one of its
  shelf sets succeeds and another fails (the choice of precursors decides a recipe's outcome);
  **strictly** precursor-dependent when one set succeeds at some temperature and another fails at
  every temperature (no temperature rescues it).

Targets above the hull of the world's other phases with oxygen open in air at every temperature
from 300 C to the highest truth temperature (:func:`grand_e_above_hull`) never form in the reaction model (every reaction's
products lie on that hull), so their recipes are counted as failed without firing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from pymatgen.core import Composition

from .builder import TRUTH_DWELL_MIN, TRUTH_TEMPERATURES_C, _precursor_sets, precursor_masses
from .physics import simulate, thermo_for
from .world import World

MADE = 0.5


def grand_e_above_hull(
    world: World, formula: str, temperatures: tuple[float, ...] = TRUTH_TEMPERATURES_C, atmosphere: str = "air"
) -> float:
    """Distance (eV/atom) of a phase above the lower hull of the world's *other* phases with
    oxygen open at the furnace's mu_O, at the most favourable of ``temperatures``.

    Negative: the phase is stable there, by that much. Why grand: a crucible exchanges O2 with
    the furnace, so a phase stable only in a closed system (Co4+ or Fe4+ oxides, suboxides) can
    never form in air; the A-Lab likewise took only targets predicted stable in air.
    """
    import numpy as np
    from scipy.optimize import linprog

    thermo = thermo_for(world)
    key = Composition(formula).reduced_formula
    d = thermo.data[key]
    others = [f for f in thermo.solids if f != key and thermo.data[f].elements <= d.elements]
    els = sorted(d.elements)
    best = float("inf")
    for t in temperatures:
        mu = thermo.mu_o(float(t), atmosphere)
        if not others:
            return -1.0
        c = np.array([thermo.phi(f, mu) for f in others])
        a_eq = np.array([[thermo.data[f].cation_fractions.get(el, 0.0) for f in others] for el in els])
        b_eq = np.array([d.cation_fractions[el] for el in els])
        res = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=[(0, None)] * len(others), method="highs-ds")
        if res.status != 0:
            return -1.0  # nothing else holds these cations: the phase is the only option
        per_cation = thermo.phi(key, mu) - float(res.fun)
        best = min(best, per_cation * d.n_cat / d.n_atoms)
    return best


def _failure_cause(world: World, state: Any, target: str) -> str:
    """Why a set failed at its best temperature: 'volatility', 'kinetics' (precursors or their
    decomposition products left unreacted) or 'intermediates' (stable side phases formed)."""
    dosed = state.dosed_elements
    lost = 0.0
    for ox, moles in state.evaporated.items():
        comp = Composition(ox)
        for el, amt in comp.items():
            if el.symbol != "O" and dosed.get(el.symbol, 0) > 0:
                lost = max(lost, amt * moles / dosed[el.symbol])
    if lost > 0.1:
        return "volatility"
    shelf = set(world.precursors)
    binaries = [f for f in state.phases if f in shelf or len(Composition(f)) <= 2]
    wf = state.weight_fractions()
    if sum(wf.get(f, 0.0) for f in binaries) > 0.5:
        return "kinetics"
    return "intermediates"


def target_outcomes(
    world: World, formula: str, temperatures: tuple[float, ...] = TRUTH_TEMPERATURES_C
) -> dict[str, Any]:
    """The full truth search of one target: every set at every temperature, with yields."""
    key = Composition(formula).reduced_formula
    sets = _precursor_sets(world, key)
    # the shortcut must hold on the ramp too: mu_O is higher at lower temperature, where an
    # oxidised phase may form and then persist, too slow to decompose (CaMnO3 at 700 C)
    ramp = tuple(float(t) for t in range(300, int(max(temperatures)) + 1, 50))
    above = key not in thermo_for(world).data or grand_e_above_hull(world, key, ramp) > 1e-6
    rows: list[dict[str, Any]] = []
    for pset in sets:
        yields: list[float] = []
        cause = None
        best_state = None
        for temp in temperatures:
            if above:
                yields.append(0.0)
                continue
            profile = [{"ramp_c_per_min": 5.0, "setpoint_c": float(temp), "dwell_min": TRUTH_DWELL_MIN}]
            state = simulate(world, precursor_masses(key, pset), profile, seed=None)
            y = float(state.weight_fractions().get(key, 0.0))
            if best_state is None or y > max(yields, default=-1):
                best_state = state
            yields.append(round(y, 4))
        if max(yields, default=0.0) < MADE:
            cause = "above_hull" if above else _failure_cause(world, best_state, key)
        rows.append({"precursors": list(pset), "yields": yields, "failure": cause})
    return {"formula": key, "above_hull": above, "temperatures_c": list(temperatures), "sets": rows}


def summarise(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """The world figures from per-target outcomes (see the module docstring for definitions)."""
    n = len(outcomes)
    recipes = succeeded = 0
    recipes_m = succeeded_m = 0
    makeable: list[str] = []
    dependent: list[str] = []
    dependent_strict: list[str] = []
    multi: list[str] = []
    causes: dict[str, int] = {}
    for o in outcomes:
        set_ok = [max(r["yields"], default=0.0) >= MADE for r in o["sets"]]
        r_all = sum(len(r["yields"]) for r in o["sets"])
        r_ok = sum(y >= MADE for r in o["sets"] for y in r["yields"])
        recipes += r_all
        succeeded += r_ok
        if any(set_ok):
            makeable.append(o["formula"])
            recipes_m += r_all
            succeeded_m += r_ok
            if len(set_ok) > 1:
                multi.append(o["formula"])
            # at one temperature of the search (a recipe = set x temperature) one set reaches the
            # target and another does not: which precursors a planner picks decides the outcome
            n_t = min((len(r["yields"]) for r in o["sets"]), default=0)
            if any(len({r["yields"][t] >= MADE for r in o["sets"]}) == 2 for t in range(n_t)):
                dependent.append(o["formula"])
            if not all(set_ok):  # strict: one set fails at every temperature
                dependent_strict.append(o["formula"])
                for r in o["sets"]:
                    if r["failure"]:
                        causes[r["failure"]] = causes.get(r["failure"], 0) + 1
    sets_per = [len(o["sets"]) for o in outcomes]
    return {
        "targets": n,
        "makeable": len(makeable),
        "makeable_share": round(len(makeable) / n, 3) if n else 0.0,
        "recipes": recipes,
        "recipes_succeeded": succeeded,
        "recipe_success_share": round(succeeded / recipes, 3) if recipes else 0.0,
        "recipe_success_share_makeable": round(succeeded_m / recipes_m, 3) if recipes_m else 0.0,
        "precursor_dependent": len(dependent),
        "precursor_dependent_share": round(len(dependent) / len(makeable), 3) if makeable else 0.0,
        "precursor_dependent_strict": len(dependent_strict),
        "precursor_dependent_strict_share": round(len(dependent_strict) / len(makeable), 3) if makeable else 0.0,
        "makeable_with_several_sets": len(multi),
        "failed_set_causes_in_strictly_dependent": dict(sorted(causes.items())),
        "shelf_sets_per_target_median": statistics.median(sets_per) if sets_per else 0,
        "precursor_dependent_targets": dependent,
        "makeable_targets": makeable,
    }


def world_stats(
    world: World,
    *,
    recompute: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Statistics of ``world``'s targets; stored outcomes (``truth.outcomes``) are used unless
    ``recompute`` or missing (older world files), in which case the search runs now."""
    t0 = time.perf_counter()
    outcomes: list[dict[str, Any]] = []
    computed = 0
    targets = world.target_formulas()
    for i, f in enumerate(targets):
        truth = world.truth(f)
        stored = getattr(truth, "outcomes", None) if truth is not None else None
        if stored and not recompute:
            outcomes.append(dict(stored, formula=f))
            continue
        outcomes.append(target_outcomes(world, f))
        computed += 1
        if progress:
            progress(f"[{i + 1}/{len(targets)}] {f}: "
                     + ", ".join(f"{'+'.join(r['precursors'])} {max(r['yields'], default=0):.2f}"
                                 for r in outcomes[-1]["sets"]))
    out = {"world": world.name, **summarise(outcomes)}
    ehull = world.model.provenance.get("e_above_hull_of_hypothetical", {})
    eh = [ehull[f] for f in targets if f in ehull]
    if eh:
        out["target_e_above_hull_median_ev"] = round(statistics.median(eh), 4)
        out["target_e_above_hull_range_ev"] = [round(min(eh), 4), round(max(eh), 4)]
    out["searched_now"] = computed
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out
