"""World builder: real thermodynamics for known phases, relaxed CHGNet for hypothetical ones.

Steps (each recorded in the world's ``provenance``; docs/sim_lab.md "World builder" in full):

1. **Known phases**: the MP table's hull oxides of each system (stable at some furnace mu_O) and
   the shelf (``shelf="wide"`` adds hydroxides, nitrates, more oxides). Structures: a shipped real
   CIF, else prototype decoration, else a seeded random packing (``structures.py``).
2. **Hypothetical compositions** over each system and its multi-cation subsystems: substitution
   into sister systems' phases, prototype decoration of charge-balanced compositions, and MP
   compositions off the MP hull.
3. **Energies on the MP footing**: CHGNet relaxes every candidate structure (after a single-point
   screen) and the known phases it needs; computed energy = MP hull energy + CHGNet energy of
   forming the compound from its MP-hull products (fitted per-element references; MP's constant
   per-element corrections cancel in the balanced reaction); MP compositions keep MP's energy.
   The lowest-energy relaxed structure is the *computed structure*. Truth: computed energy +
   seeded noise, computed structure made experimental.
4. **Targets and truth** (:func:`retarget_world`): hull phases without an experimental CIF held
   out as computed-only targets, targets computed stable (within ``max_e_hull``) with O open in
   air, full truth search stored per target (``truth.outcomes``; ``sim-lab stats`` reads it).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
import warnings
import zlib
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
    SHELF_WIDE_EXTRA,
    SUBSTITUTIONS,
    VOLATILE,
    estimate_melting_c,
    mp_table,
    reference_cifs,
    templates,
)
from .physics import simulate
from .structures import experimental_structure, known_structure, substitute, templated_structure
from .world import FORMAT, GASES, World, WorldError, parse_world

#: single-point screen before relaxing: structures further than this above their MP-hull
#: decomposition products (eV/atom, unrelaxed) are not relaxed
SCREEN_EV_PER_ATOM = 0.6
#: a computed hypothetical further below the known hull than this (eV/atom) is a CHGNet artefact
#: (a templated geometry it mis-scores), not an undiscovered compound: not a target
MIN_CREDIBLE_E_HULL = -0.1
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


@lru_cache(maxsize=512)
def _near_hull_cached(elements: frozenset[str], max_e: float) -> tuple[tuple[str, float], ...]:
    """Oxides of the MP table with every element of ``elements`` that lie above the table's hull
    by at most ``max_e`` eV/atom: compositions DFT computed but the hull does not hold (the A-Lab
    took its targets from such computed lists)."""
    table = mp_table()
    entries = [PDEntry(Composition(e), 0.0) for e in elements]
    for f, els in _table_elements():
        if len(els) > 1 and els <= elements:
            c = Composition(f)
            entries.append(PDEntry(c, table[f][0] * c.num_atoms, name=f))
    pd = PhaseDiagram(entries)
    stable = {e.name for e in pd.stable_entries}
    out = []
    for e in entries[len(elements):]:
        if e.name in stable or {x.symbol for x in e.composition} != set(elements):
            continue
        eh = float(pd.get_e_above_hull(e))
        if eh <= max_e:
            out.append((e.name, round(eh, 4)))
    return tuple(sorted(out))


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


def _enumerate_substitutions(
    systems: list[str], known: set[str], per_formula: int
) -> dict[str, list[tuple[Structure, str]]]:
    """Substitution candidates: formula -> [(structure, how)], one per parent (<= per_formula).

    Every multi-cation hull phase of a sister system (one element swapped for a same-valence
    neighbour, ``chemistry.SUBSTITUTIONS``) whose structure is a real CIF or a template decoration
    gives the target's element-swapped, volume-scaled structure.
    """
    table = mp_table()
    out: dict[str, list[tuple[Structure, str]]] = {}
    for system in systems:
        els = _elements(system)
        for target_el in sorted(els - {"O"}):
            for sister in SUBSTITUTIONS.get(target_el, []):
                if sister in els:
                    continue
                try:
                    parents = _hull_phases((els - {target_el}) | {sister})
                except Exception:  # a sister system the table barely covers
                    continue
                for parent in parents:
                    pc = Composition(parent)
                    if sister not in pc or len([e for e in pc if e.symbol != "O"]) < 2:
                        continue
                    new = Composition({(target_el if el.symbol == sister else el.symbol): amt
                                       for el, amt in pc.items()})
                    key = new.reduced_formula
                    if key in known or new.num_atoms > 40 or {e.symbol for e in new} != els:
                        continue
                    if len(out.get(key, [])) >= per_formula:
                        continue
                    made = known_structure(parent, table[parent][1])
                    if made is None or made[1].startswith("random"):
                        continue
                    struct = substitute(made[0], {sister: target_el})
                    if struct.composition.reduced_formula != key:
                        continue
                    out.setdefault(key, []).append(
                        (struct, f"substitution {sister}->{target_el} on {parent} ({made[1][:70]})"))
    return out


def _with_subsystems(systems: Sequence[str]) -> list[str]:
    """The systems and their multi-cation oxide subsystems (Na-Fe-P-O: also Na-Fe-O, Na-P-O,
    Fe-P-O): a target in a user's chemistry may lie on any face of it."""
    out: list[str] = []
    for system in systems:
        cations = sorted(_elements(system) - {"O"})
        for k in range(len(cations), 1, -1):
            for sub in itertools.combinations(cations, k):
                name = "-".join([*sub, "O"])
                if name not in out and not any(set(name.split("-")) == set(o.split("-")) for o in out):
                    out.append(name)
    return out


def _charge_balanced(comp: Composition) -> bool:
    """Some combination of common positive oxidation states balances O2-."""
    cations = [(el, amt) for el, amt in comp.items() if el.symbol != "O"]
    options = [[s for s in el.common_oxidation_states if s > 0] or [s for s in el.oxidation_states if s > 0]
               for el, _ in cations]
    if any(not o for o in options):
        return False
    need = 2 * comp["O"]
    return any(abs(sum(q * amt for q, (_, amt) in zip(combo, cations, strict=True)) - need) < 1e-6
               for combo in itertools.product(*options))


def _enumerate_decorations(system: str, known: set[str], taken: set[str], limit: int) -> dict[str, list[tuple[Structure, str]]]:
    """Prototype decoration: charge-balanced compositions of ``system`` that some shipped template
    (textbook prototype, reference CIF, Alexandria) carries; the smallest cells first."""
    if limit <= 0:
        return {}
    els = sorted(_elements(system))
    cations = [e for e in els if e != "O"]
    anons: set[str] = set(templates())
    anons |= {Composition(f).anonymized_formula for f in reference_cifs()}
    found: dict[str, Composition] = {}
    for anon in sorted(anons):
        amounts = sorted(Composition(anon).values())
        if len(amounts) != len(els) or sum(amounts) > 30:
            continue
        for perm in set(itertools.permutations(amounts)):
            comp = Composition(dict(zip(cations + ["O"], perm, strict=True)))
            if comp["O"] < max(comp[c] for c in cations):
                continue
            key = comp.reduced_formula
            if key in known or key in taken or key in found or not _charge_balanced(comp):
                continue
            found[key] = comp
    out: dict[str, list[tuple[Structure, str]]] = {}
    for key in sorted(found, key=lambda f: (found[f].reduced_composition.num_atoms, f)):
        if len(out) >= limit:
            break
        made = templated_structure(key)
        if made is not None:
            out[key] = [made]
    return out


class _Relaxer:
    """CHGNet relaxations (FIRE, cell and positions) with progress, loaded lazily, offline."""

    def __init__(self, steps: int, say: Callable[[str], None], max_atoms: int = 40,
                 cache_dir: Path | None = None) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        try:
            from chgnet.model import CHGNet, StructOptimizer
        except ImportError as exc:  # the [oracle] extra is missing
            raise WorldError("the world builder needs CHGNet for hypothetical energies: "
                             "pip install 'synthloop[oracle]'") from exc
        self.model = CHGNet.load(verbose=False)
        self.opt = StructOptimizer(model=self.model)
        self.steps = steps
        self.say = say
        self.max_atoms = max_atoms
        self.version = getattr(self.model, "version", None) or "pretrained"
        self.count = 0
        self.cached = 0
        self.seconds = 0.0
        self.cache_dir = cache_dir
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)

    def relax(self, structure: Structure) -> tuple[float, Structure] | None:
        """(energy eV/atom, relaxed structure); None for a cell too large to relax here."""
        p = structure.get_primitive_structure() if len(structure) > 8 else structure
        if len(p) > self.max_atoms:
            return None
        entry = None
        if self.cache_dir is not None:
            key = hashlib.sha1(f"{self.version}|{self.steps}|{p.to(fmt='cif')}".encode()).hexdigest()
            entry = self.cache_dir / f"{key}.json"
            if entry.exists():
                data = json.loads(entry.read_text())
                self.cached += 1
                return float(data["e"]), Structure.from_dict(data["structure"])
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.steps > 0:
                res = self.opt.relax(p, steps=self.steps, fmax=0.1, verbose=False)
                final = res["final_structure"]
                energy = float(res["trajectory"].energies[-1]) / len(final)
            else:
                final = p
                energy = float(self.model.predict_structure(p, task="e")["e"])
        self.count += 1
        self.seconds += time.perf_counter() - t0
        if entry is not None:
            entry.write_text(json.dumps({"e": energy, "structure": final.as_dict()}))
        return energy, final

    def relax_all(self, jobs: list[tuple[str, Structure]], what: str) -> list[tuple[float, Structure] | None]:
        out: list[tuple[float, Structure] | None] = []
        t0 = time.perf_counter()
        for i, (label, s) in enumerate(jobs):
            out.append(self.relax(s))
            done = i + 1
            if done % 5 == 0 or done == len(jobs):
                spent = time.perf_counter() - t0
                self.say(f"  CHGNet {what}: {done}/{len(jobs)} relaxed ({label}), {spent:.0f} s, "
                         f"about {spent / done * (len(jobs) - done):.0f} s left")
        return out


def _fit_references(rows: list[tuple[str, float, float]], limit: float = 0.08) -> tuple[dict[str, float], list[str]]:
    """Per-element CHGNet references: least squares of E_chg - E_MP (eV/atom) = sum_el x_el mu_el.
    The worst phase is dropped and the fit repeated while it is more than ``limit`` eV/atom off
    (a templated structure CHGNet finds far from the real one), unless it is the last phase holding
    one of the elements. Returns the references and the phases the fit kept.

    Why: CHGNet predicts uncorrected MPtrj (GGA/GGA+U) energies; the MP table's formation energies
    carry elemental references and per-atom corrections (oxide O, +U metals). Both are constant per
    atom of an element, so this fit absorbs them (and in a balanced reaction they cancel exactly).
    """
    use = list(rows)
    mu: dict[str, float] = {}
    while True:
        comps = [Composition(f) for f, _, _ in use]
        els = sorted({el.symbol for c in comps for el in c})
        a = np.array([[c[el] / c.num_atoms for el in els] for c in comps])
        b = np.array([e_chg - e_mp for _, e_chg, e_mp in use])
        sol, *_ = np.linalg.lstsq(a, b, rcond=None)
        mu = dict(zip(els, (float(m) for m in sol), strict=True))
        resid = np.abs(a @ sol - b)
        dropped = False
        for i in np.argsort(-resid):
            if resid[i] <= limit:
                break
            held = {el.symbol for el in comps[i]}
            rest = {el.symbol for j, c in enumerate(comps) if j != i for el in c}
            if held <= rest and len(use) > len(els) + 1:
                use.pop(int(i))
                dropped = True
                break
        if not dropped:
            break
    return mu, [f for f, _, _ in use]


def _noise(seed: int, formula: str, sigma: float) -> float:
    if sigma <= 0:
        return 0.0
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(formula.encode()), 11])
    return float(rng.normal(0.0, sigma))


def build_world(
    systems: Sequence[str],
    out: Path | str | None = None,
    *,
    seed: int = 0,
    name: str | None = None,
    description: str = "",
    n_targets: int | None = None,
    makeable_fraction: float | None = None,
    max_e_hull: float = 0.02,
    relax_steps: int = 40,
    shelf: str = "wide",
    structures_per_formula: int = 2,
    decorations_per_system: int = 25,
    energy_noise_ev: float = 0.02,
    kinetics: dict[str, Any] | None = None,
    max_relax_atoms: int = 40,
    relax_cache: Path | str | None = None,
    mp_off_hull: float = 0.08,
    holdout_fraction: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> World:
    """Build (and with ``out`` save) a world over ``systems`` such as ["Li-Mn-O", "Ba-Ti-O"].

    Known phases: the MP table's hull oxides and the shelf (``shelf="wide"`` adds hydroxides,
    nitrates and more oxides, ``chemistry.SHELF_WIDE_EXTRA``). Hypothetical compounds: element
    substitution into sister systems' phases (<= ``structures_per_formula`` parents each) and
    prototype decoration (<= ``decorations_per_system`` compositions per system), every structure
    relaxed by CHGNet (``relax_steps`` FIRE steps, fmax 0.1 eV/A); the lowest-energy one is the
    composition's *computed structure* (published for targets, ``World.computed_structure``).
    Computed energy: MP hull energy at the composition + CHGNet's energy of forming the compound
    from its MP-hull decomposition products (each relaxed too), so CHGNet's systematic errors and
    MP's corrections cancel in the balanced reaction. True energy: computed + N(0,
    ``energy_noise_ev``) (computed stability is inaccurate, as in the A-Lab). Compositions the MP
    table holds within ``mp_off_hull`` eV/atom above its hull are candidates too, with MP's energy
    as the computed one (their structure: templated, relaxed). ``relax_cache``: a
    folder keeping CHGNet relaxations between builds (keyed by model, steps and input structure). True structure: the
    computed one made experimental (``structures.experimental_structure``). Candidate targets:
    computed e_above_hull with O open in air at a furnace temperature <= ``max_e_hull``
    (:func:`retarget_world`, which also holds out ``holdout_fraction`` of the known multi-cation
    phases without an experimental CIF as computed-only targets, as the A-Lab's targets were MP
    hull phases no experiment had reported); each gets the full truth search (every shelf set x
    4 temperatures), stored as ``truth.outcomes``. ``kinetics`` overrides reaction-model
    parameters. Progress goes to ``log``.
    """
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
    if shelf not in {"wide", "narrow"}:
        raise WorldError(f"shelf {shelf!r}: use 'wide' or 'narrow'")
    # 1. known phases ---------------------------------------------------------------------
    phases: dict[str, dict[str, Any]] = {}
    omitted: list[str] = []
    known_how: dict[str, str] = {}
    known_structs: dict[str, Structure] = {}

    def add_known(f: str) -> bool:
        if f in phases:
            return True
        if f not in table:
            return False
        made = known_structure(f, table[f][1])
        if made is None:
            return False
        known_structs[f] = made[0]
        known_how[f] = made[1]
        phases[f] = _phase_record(f, table[f][0], made[0], "known",
                                  f"Materials Project e_form ({table[f][2]}, space group {table[f][1]})", made[1])
        return True

    for system in systems:
        for f in _hull_phases(_elements(system)):
            if f not in phases and f not in omitted and not add_known(f):
                omitted.append(f)
    cations = sorted({e for s in systems for e in _elements(s)} - {"O"})
    precursors: list[dict[str, Any]] = []
    for el in cations:
        powders = SHELF[el] + (SHELF_WIDE_EXTRA.get(el, []) if shelf == "wide" else [])
        for f in powders:
            dec = DECOMPOSITION.get(f)
            needed = [Composition(p).reduced_formula for p in (dec[1] if dec else {})
                      if Composition(p).reduced_formula not in GASES]
            if not all(add_known(g) for g in [f, *needed]):
                continue
            entry: dict[str, Any] = {"formula": f}
            if dec:
                entry["decomposition"] = {"temperature_c": dec[0], "products": dec[1]}
            precursors.append(entry)
    say(f"known phases: {len(phases)} ({len(omitted)} omitted: no structure); "
        f"precursors: {len(precursors)} ({shelf} shelf)")
    # 2. hypothetical compositions and their candidate structures ---------------------------
    spaces = _with_subsystems(systems)
    cands = _enumerate_substitutions(spaces, set(phases), structures_per_formula)
    n_sub = len(cands)
    for system in spaces:
        for f, opts in _enumerate_decorations(system, set(phases), set(cands), decorations_per_system).items():
            cands[f] = opts
    n_dec = len(cands) - n_sub
    # compositions the MP table computed off its hull: their computed energy is MP's (DFT)
    mp_energy: dict[str, float] = {}
    if mp_off_hull > 0:
        for system in spaces:
            for f, _eh in _near_hull_cached(frozenset(_elements(system)), mp_off_hull):
                if f in phases or Composition(f).num_atoms > 40:
                    continue
                made = known_structure(f, table[f][1])
                if made is None or made[1].startswith("random"):
                    continue
                cands.setdefault(f, []).append(
                    (made[0], f"MP composition off the hull (space group {table[f][1]}): {made[1][:70]}"))
                mp_energy[f] = table[f][0]
    say(f"hypothetical compositions: {len(cands)} ({n_sub} by substitution, {n_dec} by "
        f"prototype decoration, {len(mp_energy)} computed by MP off its hull), "
        f"{sum(len(v) for v in cands.values())} structures")
    # MP-hull decomposition products of every candidate (closed system, known non-gas phases)
    no_gas = [f for f in phases if not ({e.symbol for e in Composition(f)} & {"C", "H", "N"})]
    pds: dict[frozenset[str], PhaseDiagram] = {}

    def diagram(els: frozenset[str]) -> PhaseDiagram:
        if els not in pds:
            entries = [PDEntry(Composition(el), 0.0) for el in els]
            entries += [PDEntry(Composition(g), phases[g]["e_form_ev_per_atom"] * Composition(g).num_atoms, name=g)
                        for g in no_gas if {x.symbol for x in Composition(g)} <= els]
            pds[els] = PhaseDiagram(entries)
        return pds[els]

    decomp: dict[str, dict[str, float]] = {}  # formula -> {product: atom fraction} (elements: "")
    hull_e: dict[str, float] = {}
    for f in cands:
        comp = Composition(f)
        pd = diagram(frozenset(el.symbol for el in comp))
        dec = pd.get_decomposition(comp)
        decomp[f] = {(e.name if len(e.composition) > 1 else e.composition.reduced_formula): float(x)
                     for e, x in dec.items()}
        hull_e[f] = float(pd.get_hull_energy_per_atom(comp))
    needed = {p for d in decomp.values() for p in d if p in phases}
    # relaxed known phases: the decomposition products, and for the reference fit the binary
    # oxides and the phases with a real (reference CIF) structure
    needed_known = sorted(needed | {g for g in no_gas if len(Composition(g)) == 2
                                    or known_how[g].startswith("reference CIF")})
    # 3. CHGNet ------------------------------------------------------------------------------
    relaxer = _Relaxer(relax_steps, say, max_relax_atoms, Path(relax_cache) if relax_cache else None)
    say(f"CHGNet {relaxer.version}: relaxing {len(needed_known)} known phases ({relax_steps} FIRE steps max)")
    known_res = relaxer.relax_all([(g, known_structs[g]) for g in needed_known], "known phases")
    e_chg_known = {g: r[0] for g, r in zip(needed_known, known_res, strict=True) if r is not None}
    relaxed_known = {g: r[1] for g, r in zip(needed_known, known_res, strict=True) if r is not None}
    rows = [(g, e_chg_known[g], table[g][0]) for g in e_chg_known if not known_how[g].startswith("random")]
    mu, fitted = _fit_references(rows) if rows else ({}, [])

    def e_form_chg(formula: str, e_chg: float) -> float:
        c = Composition(formula)
        return e_chg - sum(c[el] * mu.get(el.symbol, 0.0) for el in c) / c.num_atoms

    # a product CHGNet cannot place near MP (its structure is templated or random, far from the
    # real one) takes MP's energy: its CHGNet error would otherwise pass to the hypothetical
    trusted: dict[str, float] = {}
    untrusted: list[str] = []
    for g in needed:
        if g in fitted:
            trusted[g] = e_form_chg(g, e_chg_known[g])
        else:
            untrusted.append(g)
            trusted[g] = table[g][0]

    def above_products(f: str, e_chg: float) -> float:
        return e_form_chg(f, e_chg) - sum(x * trusted.get(p, 0.0) for p, x in decomp[f].items())

    # screen: single points of the unrelaxed structures; relaxation rarely gains > 0.3 eV/atom
    jobs = [(f, st, how) for f in sorted(cands) for st, how in cands[f]]
    screened = []
    for f, st, how in jobs:
        p = st.get_primitive_structure() if len(st) > 8 else st
        if len(p) > max_relax_atoms:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e_sp = float(relaxer.model.predict_structure(p, task="e")["e"])
        if f in mp_energy or above_products(f, e_sp) <= SCREEN_EV_PER_ATOM:
            screened.append((f, st, how))
    say(f"single-point screen: {len(screened)} of {len(jobs)} hypothetical structures within "
        f"{SCREEN_EV_PER_ATOM} eV/atom of their decomposition products; relaxing those")
    hyp_res = relaxer.relax_all([(f, st) for f, st, _ in screened], "hypothetical")
    best: dict[str, tuple[float, Structure, str]] = {}
    for (f, _, how), r in zip(screened, hyp_res, strict=True):
        if r is not None and (f not in best or r[0] < best[f][0]):
            best[f] = (r[0], r[1], how)
    fit_rms = (float(np.sqrt(np.mean([(e_form_chg(g, e_chg_known[g]) - table[g][0]) ** 2 for g in fitted])))
               if fitted else 0.0)
    computed_e: dict[str, float] = {}
    for f, (e, _, _) in best.items():
        computed_e[f] = mp_energy[f] if f in mp_energy else hull_e[f] + above_products(f, e)
    # e_above_hull against every known phase and every other computed hypothetical (what a
    # database of computed structures would say), as the A-Lab chose its targets
    ehull: dict[str, float] = {}
    for f, e in computed_e.items():
        els = frozenset(el.symbol for el in Composition(f))
        others = [PDEntry(Composition(g), ge * Composition(g).num_atoms) for g, ge in computed_e.items()
                  if g != f and {x.symbol for x in Composition(g)} <= els]
        entries = list(diagram(els).all_entries) + others
        ehull[f] = float(e - PhaseDiagram(entries).get_hull_energy_per_atom(Composition(f)))
    say("computed e_above_hull (eV/atom): " + ", ".join(f"{f} {ehull[f]:+.3f}" for f in sorted(ehull, key=ehull.get)))
    true_e = {f: computed_e[f] + _noise(seed, f, energy_noise_ev) for f in computed_e}
    # a composition computed far below the known hull is a CHGNet artefact: leaving it in the
    # world would make it a sink that eats every neighbouring target
    artefacts = sorted(f for f in computed_e if ehull[f] < MIN_CREDIBLE_E_HULL)
    if artefacts:
        say(f"dropped as CHGNet artefacts (< {MIN_CREDIBLE_E_HULL} eV/atom below the hull): {', '.join(artefacts)}")
    keep = sorted(f for f in computed_e if MIN_CREDIBLE_E_HULL <= ehull[f] <= max(max_e_hull, 0.1))
    for f in keep:
        _, relaxed, how = best[f]
        truth_struct, change = experimental_structure(relaxed, seed)
        energy_how = (
            f"MP e_form of this composition ({table[f][2]}, off the MP hull)" if f in mp_energy else
            f"MP hull energy at the composition + CHGNet {relaxer.version} energy of forming it from "
            f"{'/'.join(p for p in decomp[f])} (relaxed, {relax_steps} FIRE steps)")
        rec = _phase_record(
            f, true_e[f], truth_struct, "hypothetical",
            f"{energy_how} + true-energy offset {true_e[f] - computed_e[f]:+.3f} (computed stability "
            f"is inaccurate)",
            f"lowest-energy of {len(cands[f])} relaxed candidate(s): {how}; lab structure = computed "
            f"made experimental: volume {change['volume_change']:+.3f}"
            + (f", {change['reordered']}" if change["reordered"] else ""),
        )
        rec["computed_structure"] = {"cif": relaxed.to(fmt="cif")}
        rec["computed_e_form_ev_per_atom"] = round(computed_e[f], 5)
        phases[f] = rec
    doc: dict[str, Any] = {
        "format": FORMAT,
        "name": name or "-".join(s.replace("-", "") for s in systems)[:60],
        "description": description or f"built by synthloop sim-lab build-world for {', '.join(systems)}",
        "seed": seed,
        "systems": systems,
        "provenance": {
            "builder": "sim_lab.build_world (relaxed CHGNet reaction energies vs the MP hull)",
            "energies_known": MP_ATTRIBUTION,
            "energies_hypothetical": (
                f"MP hull energy + CHGNet {relaxer.version} reaction energy from the MP-hull decomposition "
                f"products, all relaxed ({relax_steps} FIRE steps, fmax 0.1 eV/A); per-element CHGNet "
                f"references fitted on {len(fitted)} of {len(rows)} known phases (rms {fit_rms:.3f} eV/atom; "
                f"the others > 0.1 eV/atom off), which cancel in the balanced reaction; decomposition "
                f"products outside the fit use MP's energy ({', '.join(sorted(untrusted)) or 'none'}); "
                f"true = computed + N(0, {energy_noise_ev})"),
            "structures": "reference CIFs (XRD-AutoAnalyzer, Dara; MIT), Alexandria templates "
            "(CC BY 4.0), textbook prototypes; see each phase's source.structure",
            "omitted_phases_no_structure": omitted,
            "e_above_hull_of_hypothetical": {f: round(ehull[f], 4) for f in keep},
            "dropped_chgnet_artefacts_e_above_hull": {f: round(ehull[f], 4) for f in artefacts},
            "computed_by_mp_off_hull": sorted(f for f in keep if f in mp_energy),
            "true_e_above_hull_offset": {f: round(true_e[f] - computed_e[f], 4) for f in keep},
            "chgnet_relaxations": {"count": relaxer.count, "from_cache": relaxer.cached,
                                   "seconds": round(relaxer.seconds, 1)},
        },
        "phases": list(phases.values()),
        "precursors": precursors,
        "targets": [],
        "volatility": [
            {"element": el, "oxide": ox, "onset_c": on, "rate_per_h": r, "doubling_c": d}
            for el, ox, on, r, d in VOLATILE if el in cations
        ],
    }
    if kinetics:
        doc["kinetics"] = dict(kinetics)
    world = parse_world(doc, "<builder>")
    # 4. targets, as the A-Lab chose them, and their truth (the full search, stored) ----------
    world = retarget_world(world, name=doc["name"], max_e_hull=max_e_hull, min_e_hull=MIN_CREDIBLE_E_HULL,
                           holdout_fraction=holdout_fraction, energy_noise_ev=None if not holdout_fraction
                           else energy_noise_ev, seed=seed, computed_structures=relaxed_known, log=say)
    doc = world.to_dict()
    truths = {t["formula"]: t["truth"] for t in doc["targets"]}
    grand = doc["provenance"]["computed_grand_e_above_hull_air"]
    candidates = sorted(truths, key=lambda f: (grand.get(f, 0.0), f))
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
    doc["targets"] = [{"formula": f, "truth": truths[f]} for f in sorted(chosen)]
    frac = sum(truths[f]["makeable"] for f in chosen) / max(1, len(chosen))
    doc["provenance"]["targets"] = {
        **doc["provenance"]["targets"],
        "candidates": len(candidates),
        "candidates_makeable": len(makeable),
        "chosen": len(chosen),
        "makeable_fraction": round(frac, 3),
        "truth_search": f"single-cation shelf precursor sets (<= {MAX_SETS_PER_TARGET}) x "
        f"{list(TRUTH_TEMPERATURES_C)} C, {TRUTH_DWELL_MIN} min dwell, 5 C/min (all recipes)",
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


def _truth_of(world: World, formula: str) -> dict[str, Any]:
    """The full truth search of one target as a ``TargetTruth`` document (outcomes stored)."""
    from .stats import MADE, target_outcomes

    o = target_outcomes(world, formula)
    best_y, best_recipe, tried = 0.0, None, 0
    for row in o["sets"]:
        for temp, y in zip(o["temperatures_c"], row["yields"], strict=True):
            tried += 1
            if y > best_y:
                best_y = y
                best_recipe = {
                    "precursors": {k: round(v, 4) for k, v in precursor_masses(formula, row["precursors"]).items()},
                    "profile": [{"ramp_c_per_min": 5.0, "setpoint_c": float(temp), "dwell_min": TRUTH_DWELL_MIN}],
                }
    return {"makeable": best_y >= MADE, "best_yield": round(best_y, 4), "best_recipe": best_recipe,
            "recipes_tried": tried, "outcomes": {k: v for k, v in o.items() if k != "formula"}}


def recalibrate_world(world: World, *, name: str, kinetics: dict[str, Any] | None = None,
                      description: str = "", log: Callable[[str], None] | None = None) -> World:
    """The same world with reaction-model parameters ``kinetics`` changed and every target's truth
    searched again (stored outcomes). Why: calibrating the reaction model against the A-Lab's
    figures (``sim-lab stats``) needs no new CHGNet work, only the truth search."""
    say = log or (lambda _msg: None)
    doc = world.to_dict()
    doc["kinetics"] = {**doc.get("kinetics", {}), **(kinetics or {})}
    doc["name"] = name
    if description:
        doc["description"] = description
    doc["targets"] = []
    bare = parse_world(doc, "<recalibrate>")
    targets = []
    for i, f in enumerate(world.target_formulas()):
        targets.append({"formula": f, "truth": _truth_of(bare, f)})
        if (i + 1) % 10 == 0:
            say(f"  truth search: {i + 1}/{len(world.target_formulas())}")
    doc["targets"] = targets
    doc.setdefault("provenance", {})["recalibrated"] = {"from": world.name, "kinetics": kinetics or {}}
    n_make = sum(t["truth"]["makeable"] for t in targets)
    doc["provenance"].setdefault("targets", {})["makeable_fraction"] = round(n_make / max(1, len(targets)), 3)
    return parse_world(doc, "<recalibrate_world>")


def retarget_world(
    world: World,
    *,
    name: str,
    max_e_hull: float = 0.0,
    min_e_hull: float = -1.0,
    energy_noise_ev: float | None = None,
    n_targets: int | None = None,
    kinetics: dict[str, Any] | None = None,
    seed: int | None = None,
    holdout_fraction: float = 0.0,
    computed_structures: dict[str, Structure] | None = None,
    description: str = "",
    log: Callable[[str], None] | None = None,
) -> World:
    """Choose a built world's targets again, as the A-Lab chose its own: hypotheticals whose
    *computed* energy puts them within ``[min_e_hull, max_e_hull]`` eV/atom of the hull with oxygen
    open in air at a furnace temperature (``stats.grand_e_above_hull`` on the computed energies).

    ``energy_noise_ev`` redraws the true energies (computed + seeded N(0, sd)); ``kinetics``
    overrides reaction-model parameters; ``n_targets`` keeps the most stable that many. Every
    target's truth is searched again. Needs ``computed_e_form_ev_per_atom`` (worlds built since
    the computed-structure change). Why: selection and calibration need no new CHGNet work.

    ``holdout_fraction``: that share (seeded) of the known multi-cation phases without an
    experimental CIF (not on the shelf, not a precursor's decomposition product) become
    hypothetical: computed energy = MP's, true = MP + noise, computed structure = the CHGNet-relaxed
    one from ``computed_structures`` (the builder passes its relaxations) else their templated one,
    true structure = that made experimental. Why: the A-Lab's targets were phases on the
    Materials Project hull that no experiment had reported; a world whose every hull phase is
    public has only off-hull compositions left to aim at.
    """
    from .stats import grand_e_above_hull

    say = log or (lambda _msg: None)
    seed = world.model.seed if seed is None else seed
    doc = world.to_dict()
    doc["name"] = name
    if description:
        doc["description"] = description
    if kinetics:
        doc["kinetics"] = {**doc.get("kinetics", {}), **kinetics}
    if holdout_fraction > 0:
        shelf = {Composition(p["formula"]).reduced_formula for p in doc["precursors"]}
        for p in doc["precursors"]:
            for prod in (p.get("decomposition") or {}).get("products", {}):
                shelf.add(Composition(prod).reduced_formula)
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 5])
        for p in doc["phases"]:
            f = Composition(p["formula"]).reduced_formula
            cations = {el.symbol for el in Composition(f)} - {"O"}
            if (p["kind"] != "known" or f in shelf or len(cations) < 2 or cations & {"C", "H", "N"}
                    or p["source"]["structure"].startswith("reference CIF")
                    or p["source"]["structure"].startswith("random")):
                continue
            if rng.random() >= holdout_fraction:
                continue
            relaxed = (computed_structures or {}).get(f)
            ok = relaxed is not None and relaxed.composition.reduced_formula == f
            computed = relaxed if ok else world.structure(f)
            true_s, change = experimental_structure(computed, seed)
            p["kind"] = "hypothetical"
            p["computed_e_form_ev_per_atom"] = p["e_form_ev_per_atom"]
            p["computed_structure"] = {"cif": computed.to(fmt="cif")}
            p["structure"] = {"cif": true_s.to(fmt="cif")}
            p["source"] = {"energy": p["source"]["energy"] + " (computed; held out: no experiment reported here)",
                           "structure": f"computed = {'CHGNet-relaxed ' if ok else ''}"
                           f"{p['source']['structure'][:120]}; lab = computed made "
                           f"experimental, volume {change['volume_change']:+.3f}"
                           + (f", {change['reordered']}" if change["reordered"] else "")}
            if energy_noise_ev is None:
                energy_noise_ev = 0.02
    hyp = [p for p in doc["phases"] if p["kind"] == "hypothetical" and p.get("computed_e_form_ev_per_atom") is not None]
    if not hyp:
        raise WorldError(f"world {world.name!r} stores no computed energies: rebuild it")
    offsets: dict[str, float] = {}
    for p in hyp:
        f = Composition(p["formula"]).reduced_formula
        if energy_noise_ev is not None:
            p["e_form_ev_per_atom"] = round(p["computed_e_form_ev_per_atom"] + _noise(seed, f, energy_noise_ev), 5)
        offsets[f] = round(p["e_form_ev_per_atom"] - p["computed_e_form_ev_per_atom"], 4)
    # computed view: every hypothetical at its computed energy
    comp_doc = {**doc, "targets": [], "phases": [
        {**p, "e_form_ev_per_atom": p["computed_e_form_ev_per_atom"]} if p in hyp else p for p in doc["phases"]]}
    computed_world = parse_world(comp_doc, "<computed view>")
    grand = {Composition(p["formula"]).reduced_formula: grand_e_above_hull(computed_world, p["formula"]) for p in hyp}
    chosen = sorted((f for f, e in grand.items() if min_e_hull <= e <= max_e_hull), key=lambda f: (grand[f], f))
    if n_targets is not None:
        chosen = chosen[:n_targets]
    doc["targets"] = []
    bare = parse_world(doc, "<retarget>")
    targets = []
    for i, f in enumerate(sorted(chosen)):
        targets.append({"formula": f, "truth": _truth_of(bare, f)})
        if (i + 1) % 10 == 0:
            say(f"  truth search: {i + 1}/{len(chosen)}")
    doc["targets"] = targets
    prov = doc.setdefault("provenance", {})
    prov["computed_grand_e_above_hull_air"] = {f: round(e, 4) for f, e in sorted(grand.items())}
    prov["true_e_above_hull_offset"] = offsets
    n_make = sum(t["truth"]["makeable"] for t in targets)
    prov["targets"] = {
        **prov.get("targets", {}),
        "retargeted_from": world.name,
        "selection": f"computed e_above_hull with O open in air at {list(TRUTH_TEMPERATURES_C)} C "
                     f"in [{min_e_hull}, {max_e_hull}] eV/atom" + (f", the {n_targets} most stable" if n_targets else ""),
        "energy_noise_ev": energy_noise_ev,
        "held_out_known": sorted(Composition(p["formula"]).reduced_formula for p in doc["phases"]
                                 if "held out" in p["source"]["energy"]),
        "kinetics": kinetics or {},
        "chosen": len(targets),
        "makeable_fraction": round(n_make / max(1, len(targets)), 3),
    }
    say(f"{name}: {len(targets)} targets, {n_make} makeable")
    return parse_world(doc, "<retarget_world>")
