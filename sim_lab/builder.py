"""World builder: real thermodynamics for known phases, an independent model for hypothetical ones.

Steps (each recorded in the world's ``provenance``):

1. **Known phases**: every composition on the closed convex hull of each chemical system in the
   shipped Materials Project table (lowest ``e_form`` per composition), oxides only (intermetallics
   never survive the furnace's oxygen), plus the shelf precursors. Structures: a shipped real CIF,
   else prototype decoration, else a seeded random packing (``structures.py``).
2. **Hypothetical compounds**, enumerated the way a campaign would: element substitution
   (``chemistry.SUBSTITUTIONS``) into known multi-cation phases of sister systems. Each gets the
   parent's structure with the swapped elements, volume-scaled, then a seeded distortion (the true
   structure differs from any prediction).
3. **Independent energies**: CHGNet (pretrained, shipped in its wheel, CPU) single-point energies
   of all known and hypothetical structures (``relax_steps`` > 0 adds a short FIRE relaxation);
   per-element reference energies are fitted by least squares so that CHGNet reproduces the MP
   formation energies of the known phases; a hypothetical phase's formation energy is its CHGNet
   energy minus those references. Without CHGNet (``oracle="none"``) the builder refuses rather
   than inventing energies.
4. **Targets and truth**: hypothetical phases within ``max_e_hull`` of the hull are candidates; the
   builder fires every single-cation precursor combination from the shelf at several temperatures
   (8 h dwells, the physics model) and records the best yield: makeable = best yield >= 0.5.
   ``n_targets``/``makeable_fraction`` pick the target list from the candidates when given.
"""

from __future__ import annotations

import itertools
import os
import time
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Structure

from .chemistry import (
    DECOMPOSITION,
    MP_ATTRIBUTION,
    SHELF,
    SUBSTITUTIONS,
    VOLATILE,
    estimate_melting_c,
    mp_table,
)
from .physics import simulate
from .structures import known_structure, perturb, substitute
from .world import FORMAT, GASES, World, WorldError, parse_world

#: A swap-reaction energy beyond this (eV/atom) means CHGNet saw a broken geometry (an
#: unrelaxed decoration far from its minimum), not chemistry: such candidates are dropped.
MAX_SWAP_EV_PER_ATOM = 0.3
TRUTH_TEMPERATURES_C = (700, 850, 1000, 1150)
TRUTH_DWELL_MIN = 480
TRUTH_BATCH_G = 2.0
MAX_SETS_PER_TARGET = 8


def _elements(system: str) -> set[str]:
    return set(system.split("-"))


@lru_cache(maxsize=1)
def _table_elements() -> tuple[tuple[str, frozenset[str]], ...]:
    """Element set of every composition in the MP table, parsed once (47k formulas)."""
    return tuple((f, frozenset(el.symbol for el in Composition(f))) for f in mp_table())


MU_O_RANGE = (0.0, -1.0, -2.0, -3.0)


def _hull_phases(elements: set[str]) -> list[str]:
    return list(_hull_phases_cached(frozenset(elements)))


@lru_cache(maxsize=512)
def _hull_phases_cached(elements: frozenset[str]) -> tuple[str, ...]:
    """Oxides of a system stable at some furnace oxygen potential (shipped MP table).

    Why the grand hull: suboxides and intermetallics on the closed hull (Ti2O, TiZn) never
    survive a furnace in air or inert gas, and would only bloat the world.
    """
    table = mp_table()
    entries = [PDEntry(Composition(e), 0.0) for e in elements]
    for f, els in _table_elements():
        if len(els) > 1 and els <= elements:
            c = Composition(f)
            entries.append(PDEntry(c, table[f][0] * c.num_atoms, name=f))
    pd = PhaseDiagram(entries)
    closed = [e for e in pd.stable_entries if len(e.composition) > 1 and "O" in e.composition]
    if "O" not in elements or len(elements) < 2:
        return tuple(sorted(e.name for e in closed))
    keep: set[str] = set()
    from pymatgen.analysis.phase_diagram import GrandPotentialPhaseDiagram
    from pymatgen.core import Element

    for mu in MU_O_RANGE:
        gpd = GrandPotentialPhaseDiagram(pd.stable_entries, {Element("O"): mu})
        keep |= {e.original_entry.name for e in gpd.stable_entries}
    return tuple(sorted(e.name for e in closed if e.name in keep))


def _phase_record(formula: str, e_form: float, struct: Structure, kind: str, energy_src: str,
                  structure_src: str) -> dict[str, Any]:
    return {
        "formula": formula,
        "kind": kind,
        "e_form_ev_per_atom": round(float(e_form), 5),
        "melting_point_c": estimate_melting_c(formula),
        "structure": {"cif": struct.to(fmt="cif")},
        "source": {"energy": energy_src, "structure": structure_src},
    }


class _Oracle:
    """CHGNet energies (eV/atom, total) of structures, loaded lazily and used offline."""

    def __init__(self, relax_steps: int) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        try:
            from chgnet.model import CHGNet, StructOptimizer
        except ImportError as exc:  # the [oracle] extra is missing
            raise WorldError(
                "the world builder needs CHGNet for hypothetical energies: "
                "pip install 'synthloop[oracle]'"
            ) from exc
        self.model = CHGNet.load(verbose=False)
        self.relaxer = StructOptimizer(model=self.model) if relax_steps > 0 else None
        self.relax_steps = relax_steps
        self.version = getattr(self.model, "version", None) or "pretrained"

    def energies(self, structures: Sequence[Structure]) -> tuple[list[float], list[Structure]]:
        out_s: list[Structure] = []
        for s in structures:
            p = s.get_primitive_structure() if len(s) > 12 else s
            if self.relaxer is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = self.relaxer.relax(p, steps=self.relax_steps, verbose=False, fmax=0.1)
                p = res["final_structure"]
            out_s.append(p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            preds = self.model.predict_structure(out_s, task="e", batch_size=16)
        if isinstance(preds, dict):
            preds = [preds]
        return [float(p["e"]) for p in preds], out_s


def _oxide_pair(old: str, new: str) -> tuple[str, str] | None:
    """Binary oxides of ``old`` and ``new`` with the same formula type (same oxidation state)."""
    table = mp_table()
    for ox in [f for f in SHELF.get(old, []) if len(Composition(f)) == 2] + sorted(
        f for f in table if set(x.symbol for x in Composition(f)) == {old, "O"}
    ):
        c = Composition(ox)
        twin = Composition({(new if e.symbol == old else e.symbol): a for e, a in c.items()}).reduced_formula
        if twin in table and ox in table:
            return ox, twin
    return None


def _enumerate_hypothetical(systems: list[str], known: set[str]) -> dict[str, tuple[str, dict[str, str]]]:
    """Substitution candidates: formula -> (parent formula, swaps parent->target element)."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for system in systems:
        els = _elements(system)
        cations = sorted(els - {"O"})
        for target_el in cations:
            for sister in SUBSTITUTIONS.get(target_el, []):
                if sister in els:
                    continue
                sister_els = (els - {target_el}) | {sister}
                try:
                    parents = _hull_phases(sister_els)
                except Exception:  # a sister system the table barely covers
                    continue
                for parent in parents:
                    pc = Composition(parent)
                    if sister not in pc or len([e for e in pc if e.symbol != "O"]) < 2:
                        continue
                    new = Composition(
                        {(target_el if el.symbol == sister else el.symbol): amt for el, amt in pc.items()}
                    )
                    key = new.reduced_formula
                    if key in known or key in out or new.num_atoms > 40:
                        continue
                    if {e.symbol for e in new} != els:
                        continue
                    out[key] = (parent, {sister: target_el})
    return out


def _precursor_sets(world: World, target: str) -> list[tuple[str, ...]]:
    cations = sorted(el.symbol for el in Composition(target) if el.symbol != "O")
    choices = []
    for el in cations:
        opts = [p for p in world.precursors if {e.symbol for e in Composition(p)} - {"O", "C", "H", "N"} == {el}]
        if not opts:
            return []
        choices.append(opts)
    return list(itertools.product(*choices))[:MAX_SETS_PER_TARGET]


def precursor_masses(target: str, precursors: Sequence[str], batch_g: float = TRUTH_BATCH_G) -> dict[str, float]:
    """Grams of single-cation precursors giving the target's cation ratio (batch of ``batch_g``)."""
    tc = Composition(target)
    moles: dict[str, float] = {}
    for p in precursors:
        pc = Composition(p)
        el = next(e.symbol for e in pc if e.symbol not in {"O", "C", "H", "N"})
        moles[p] = tc[el] / pc[el]
    mass = sum(m * Composition(p).weight for p, m in moles.items())
    return {p: m * Composition(p).weight * batch_g / mass for p, m in moles.items()}


def target_truth(
    world: World,
    target: str,
    temperatures: Sequence[float] = TRUTH_TEMPERATURES_C,
    *,
    stop_when_made: bool = False,
) -> dict[str, Any]:
    """Best yield over precursor sets x temperatures (no amorphisation: a recipe property).

    ``stop_when_made``: stop at the first recipe reaching 50 % (the builder's fast mode; the
    best yield is then a lower bound).
    """
    best: dict[str, Any] = {"makeable": False, "best_yield": 0.0, "best_recipe": None, "recipes_tried": 0}
    key = Composition(target).reduced_formula
    for pset in _precursor_sets(world, key):
        if stop_when_made and best["best_yield"] >= 0.5:
            break
        masses = precursor_masses(key, pset)
        for temp in temperatures:
            profile = [{"ramp_c_per_min": 5.0, "setpoint_c": float(temp), "dwell_min": TRUTH_DWELL_MIN}]
            state = simulate(world, masses, profile, seed=None)
            y = state.weight_fractions().get(key, 0.0)
            best["recipes_tried"] += 1
            if y > best["best_yield"]:
                best.update(
                    best_yield=round(float(y), 4),
                    best_recipe={"precursors": {k: round(v, 4) for k, v in masses.items()}, "profile": profile},
                )
    best["makeable"] = best["best_yield"] >= 0.5
    return best


def build_world(
    systems: Sequence[str],
    out: Path | str | None = None,
    *,
    seed: int = 0,
    name: str | None = None,
    description: str = "",
    n_targets: int | None = None,
    makeable_fraction: float | None = None,
    max_e_hull: float = 0.06,
    relax_steps: int = 0,
    log: Callable[[str], None] | None = None,
) -> World:
    """Build (and with ``out`` save) a world over ``systems`` such as ["Li-Mn-O", "Ba-Ti-O"]."""
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    systems = list(systems)
    table = mp_table()
    for system in systems:
        els = _elements(system)
        if "O" not in els:
            raise WorldError(f"system {system!r}: only oxide systems (containing O) are supported")
        bad = [e for e in els if e != "O" and e not in SHELF]
        if bad:
            raise WorldError(f"system {system!r}: no precursor on the shelf for {', '.join(bad)}")
    # 1. known phases ---------------------------------------------------------------------
    phases: dict[str, dict[str, Any]] = {}
    omitted: list[str] = []
    structures: dict[str, Structure] = {}
    for system in systems:
        for f in _hull_phases(_elements(system)):
            if f in phases or f in omitted:
                continue
            made = known_structure(f, table[f][1])
            if made is None:
                omitted.append(f)
                continue
            structures[f] = made[0]
            phases[f] = _phase_record(
                f, table[f][0], made[0], "known",
                f"Materials Project e_form ({table[f][2]}, space group {table[f][1]})", made[1],
            )
    cations = sorted({e for s in systems for e in _elements(s)} - {"O"})
    precursors: list[dict[str, Any]] = []
    for el in cations:
        for f in SHELF[el]:
            if f not in table:
                continue
            dec = DECOMPOSITION.get(f)
            products = dec[1] if dec else {}
            needed = [Composition(p).reduced_formula for p in products if Composition(p).reduced_formula not in GASES]
            ok = True
            for g in [f, *needed]:
                if g in phases:
                    continue
                if g not in table:
                    ok = False
                    break
                made = known_structure(g, table[g][1])
                if made is None:
                    ok = False
                    break
                structures[g] = made[0]
                phases[g] = _phase_record(
                    g, table[g][0], made[0], "known",
                    f"Materials Project e_form ({table[g][2]}, space group {table[g][1]})", made[1],
                )
            if not ok:
                continue
            entry: dict[str, Any] = {"formula": f}
            if dec:
                entry["decomposition"] = {"temperature_c": dec[0], "products": dec[1]}
            precursors.append(entry)
    say(f"known phases: {len(phases)} ({len(omitted)} omitted: no structure); precursors: {len(precursors)}")
    # 2. hypothetical compounds -----------------------------------------------------------
    hyp = _enumerate_hypothetical(systems, set(phases))
    hyp_structs: dict[str, Structure] = {}
    parent_structs: dict[str, tuple[Structure, str]] = {}
    for f, (parent, swaps) in sorted(hyp.items()):
        if parent not in parent_structs:
            made = known_structure(parent, table.get(parent, (0, 0, ""))[1])
            if made is None or made[1].startswith("random"):
                continue
            parent_structs[parent] = made
        s = substitute(parent_structs[parent][0], swaps)
        if s.composition.reduced_formula != f:
            continue
        hyp_structs[f] = s
    say(f"hypothetical compositions by substitution: {len(hyp_structs)}")
    # 3. CHGNet energies: a balanced swap reaction  hyp + k*ox_old -> parent + k*ox_new --------
    oracle = _Oracle(relax_steps)
    no_gas = [f for f in phases if not ({e.symbol for e in Composition(f)} & {"C", "H", "N"})]
    swap_oxides: dict[tuple[str, str], tuple[str, str]] = {}
    ref_structs: dict[str, Structure] = {}
    for f in list(hyp_structs):
        parent, swaps = hyp[f]
        (old, new), = swaps.items()
        if (old, new) not in swap_oxides:
            pair = _oxide_pair(old, new)
            if pair is None:
                swap_oxides[(old, new)] = ("", "")
            else:
                swap_oxides[(old, new)] = pair
                for ox in pair:
                    if ox not in ref_structs:
                        made = known_structure(ox, table[ox][1])
                        if made is not None and not made[1].startswith("random"):
                            ref_structs[ox] = made[0]
        ox_old, ox_new = swap_oxides[(old, new)]
        if not ox_old or ox_old not in ref_structs or ox_new not in ref_structs:
            del hyp_structs[f]
            continue
        ref_structs.setdefault(parent, parent_structs[parent][0])
    hyp_list = sorted(hyp_structs)
    ref_list = sorted(ref_structs)
    energies, relaxed = oracle.energies([hyp_structs[f] for f in hyp_list] + [ref_structs[f] for f in ref_list])
    e_chg = dict(zip(hyp_list + ref_list, energies, strict=True))  # eV/atom
    say(f"CHGNet: {len(hyp_list)} hypothetical + {len(ref_list)} parents/oxides")

    def total(formula: str, per_atom: float) -> float:
        return per_atom * Composition(formula).num_atoms

    hyp_energy: dict[str, float] = {}
    rejected: dict[str, float] = {}
    for idx, f in enumerate(hyp_list):
        parent, swaps = hyp[f]
        (old, new), = swaps.items()
        ox_old, ox_new = swap_oxides[(old, new)]
        k = Composition(parent)[old] / Composition(ox_old)[old]
        scale = Composition(f).num_atoms / Composition(parent).num_atoms  # same formula units
        d_chg = total(f, e_chg[f]) - scale * (
            total(parent, e_chg[parent]) + k * (total(ox_new, e_chg[ox_new]) - total(ox_old, e_chg[ox_old]))
        )
        e_tot = scale * (
            total(parent, table[parent][0]) + k * (total(ox_new, table[ox_new][0]) - total(ox_old, table[ox_old][0]))
        ) + d_chg
        if abs(d_chg) / Composition(f).num_atoms > MAX_SWAP_EV_PER_ATOM:
            rejected[f] = round(d_chg / Composition(f).num_atoms, 3)
            continue
        hyp_energy[f] = e_tot / Composition(f).num_atoms
        hyp_structs[f] = perturb(relaxed[idx], seed)
    if rejected:
        say(f"rejected {len(rejected)} hypotheticals with |swap energy| > {MAX_SWAP_EV_PER_ATOM} eV/atom")
    # hull distance of each hypothetical against the known phases of its system
    ehull: dict[str, float] = {}
    for f, e in hyp_energy.items():
        els = {el.symbol for el in Composition(f)}
        entries = [PDEntry(Composition(el), 0.0) for el in els]
        entries += [
            PDEntry(Composition(g), phases[g]["e_form_ev_per_atom"] * Composition(g).num_atoms)
            for g in no_gas if {x.symbol for x in Composition(g)} <= els
        ]
        pd = PhaseDiagram(entries)
        ehull[f] = float(e - pd.get_hull_energy_per_atom(Composition(f)))
    say("e_above_hull of hypothetical (eV/atom): " + ", ".join(f"{f} {ehull[f]:+.3f}" for f in sorted(ehull, key=ehull.get)))
    keep = sorted(f for f in hyp_energy if ehull[f] <= max(max_e_hull, 0.1))
    for f in keep:
        parent, swaps = hyp[f]
        phases[f] = _phase_record(
            f, hyp_energy[f], hyp_structs[f], "hypothetical",
            f"MP e_form of parent {parent} and of {'/'.join(swap_oxides[next(iter(swaps.items()))])} "
            f"+ CHGNet {oracle.version} energy of the swap reaction "
            f"({'after ' + str(relax_steps) + ' FIRE steps' if relax_steps else 'single points'})",
            f"substitution {swaps} on {parent} ({phases.get(parent, {}).get('source', {}).get('structure', 'parent structure')[:80]}), "
            f"volume-scaled, seeded distortion",
        )
    candidates = sorted((f for f in keep if ehull[f] <= max_e_hull), key=lambda f: ehull[f])
    say(f"candidate targets within {max_e_hull} eV/atom of the hull: {len(candidates)}")
    doc: dict[str, Any] = {
        "format": FORMAT,
        "name": name or "-".join(s.replace("-", "") for s in systems)[:60],
        "description": description or f"built by synthloop sim-lab build-world for {', '.join(systems)}",
        "seed": seed,
        "systems": systems,
        "provenance": {
            "builder": "sim_lab.build_world",
            "energies_known": MP_ATTRIBUTION,
            "energies_hypothetical": f"CHGNet pretrained ({oracle.version}), single-point"
            + (f" after {relax_steps} FIRE steps" if relax_steps else " on volume-scaled structures"),
            "structures": "reference CIFs (XRD-AutoAnalyzer, Dara; MIT), Alexandria templates "
            "(CC BY 4.0), textbook prototypes; see each phase's source.structure",
            "omitted_phases_no_structure": omitted,
            "rejected_hypothetical_swap_energy_ev_per_atom": rejected,
            "e_above_hull_of_hypothetical": {f: round(ehull[f], 4) for f in keep},
        },
        "phases": list(phases.values()),
        "precursors": precursors,
        "targets": [],
        "volatility": [
            {"element": el, "oxide": ox, "onset_c": on, "rate_per_h": r, "doubling_c": d}
            for el, ox, on, r, d in VOLATILE if el in cations
        ],
    }
    world = parse_world(doc, "<builder>")
    # 4. truth for candidates ---------------------------------------------------------------
    truths: dict[str, dict[str, Any]] = {}
    for f in candidates:
        if ehull[f] > 0:  # above the hull: the reaction model never forms it (LP products lie on it)
            truths[f] = {"makeable": False, "best_yield": 0.0, "best_recipe": None, "recipes_tried": 0}
        else:
            truths[f] = target_truth(world, f, stop_when_made=True)
    makeable = [f for f in candidates if truths[f]["makeable"]]
    not_makeable = [f for f in candidates if not truths[f]["makeable"]]
    if n_targets is None:
        chosen = candidates
    elif makeable_fraction is None:
        chosen = candidates[:n_targets]
    else:
        n_make = min(len(makeable), round(n_targets * makeable_fraction))
        n_fail = min(len(not_makeable), n_targets - n_make)
        if n_make + n_fail < n_targets:  # not enough of one kind: fill with the other
            n_make = min(len(makeable), n_targets - n_fail)
        rng = np.random.default_rng(seed)
        pick_m = sorted(rng.choice(len(makeable), n_make, replace=False).tolist()) if n_make else []
        pick_f = sorted(rng.choice(len(not_makeable), n_fail, replace=False).tolist()) if n_fail else []
        chosen = sorted([makeable[i] for i in pick_m] + [not_makeable[i] for i in pick_f])
    doc["targets"] = [{"formula": f, "truth": truths[f]} for f in chosen]
    frac = sum(truths[f]["makeable"] for f in chosen) / max(1, len(chosen))
    doc["provenance"]["targets"] = {
        "candidates": len(candidates),
        "candidates_makeable": len(makeable),
        "chosen": len(chosen),
        "makeable_fraction": round(frac, 3),
        "truth_search": f"single-cation shelf precursor sets (<= {MAX_SETS_PER_TARGET}) x "
        f"{list(TRUTH_TEMPERATURES_C)} C, {TRUTH_DWELL_MIN} min dwell, 5 C/min",
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    world = parse_world(doc, "<builder>")
    say(f"targets: {len(chosen)}, makeable fraction {frac:.2f}; {time.perf_counter() - t0:.0f} s")
    if out is not None:
        world.save(out)
        world.source = str(out)
    return world


def _known_target_formulas(world: World) -> list[str]:
    """Known multi-cation phases that are not on the shelf: compounds a lab might be asked to
    make (ternary or richer, no carbonate or hydroxide, which are precursors, not products)."""
    shelf = {Composition(p.formula).reduced_formula for p in world.model.precursors}
    out = []
    for f in sorted(world.known_formulas()):
        els = {e.symbol for e in Composition(f).elements}
        if f in shelf or len(els) < 3 or els & {"C", "H"}:
            continue
        out.append(f)
    return out


def widen_world(world: World, *, name: str, max_e_hull: float = 0.08, include_known: bool = False,
                description: str = "", log: Callable[[str], None] | None = None) -> World:
    """A world with every candidate target of ``world`` (all hypotheticals within
    ``max_e_hull`` eV/atom of the hull), not just the ones its builder picked; with
    ``include_known`` also every known multi-cation phase that is not a precursor.

    Why: a campaign on ``alab-like`` resolves all 60 targets in ~130 experiments, and one on
    all 115 candidates in ~310-335, so an A-Lab-sized campaign (355 experiments, ended by its
    budget) needs more targets to spend them on; known compounds are the ones a lab also makes
    (references, precursors of later steps). The phases, precursors, kinetics and instruments
    are the same world's, so the chemistry is unchanged; the added targets get their truth from
    the same search the builder runs (:func:`target_truth`), and those above the hull are
    unmakeable by construction (the reaction model never forms them).
    """
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    doc = world.to_dict()
    ehull = doc.get("provenance", {}).get("e_above_hull_of_hypothetical", {})
    have = {t["formula"] for t in doc["targets"]}
    added: list[dict[str, Any]] = []
    for f in sorted(ehull, key=lambda k: (ehull[k], k)):
        if ehull[f] > max_e_hull or f in have:
            continue
        if ehull[f] > 0:
            truth: dict[str, Any] = {"makeable": False, "best_yield": 0.0, "best_recipe": None,
                                     "recipes_tried": 0}
        else:
            truth = target_truth(world, f, stop_when_made=True)
        added.append({"formula": f, "truth": truth})
    if include_known:
        have |= {a["formula"] for a in added}
        for f in _known_target_formulas(world):
            if f not in have:
                added.append({"formula": f, "truth": target_truth(world, f, stop_when_made=True)})
    doc["targets"] = sorted([*doc["targets"], *added], key=lambda t: t["formula"])
    doc["name"] = name
    doc["description"] = description or (
        f"{world.name} with every candidate target within {max_e_hull} eV/atom of the hull"
        + (" and every known multi-cation phase that is not a precursor" if include_known else ""))
    n_make = sum(bool(t["truth"]["makeable"]) for t in doc["targets"])
    doc["provenance"]["targets"] = {
        **doc["provenance"].get("targets", {}),
        "widened_from": world.name,
        "added": len(added),
        "known_added": len({a["formula"] for a in added} & set(world.known_formulas())),
        "chosen": len(doc["targets"]),
        "makeable_fraction": round(n_make / max(1, len(doc["targets"])), 3),
        "widen_seconds": round(time.perf_counter() - t0, 1),
    }
    say(f"{name}: {len(doc['targets'])} targets ({len(added)} added), {n_make} makeable")
    return parse_world(doc, "<widen_world>")
