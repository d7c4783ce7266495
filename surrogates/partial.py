"""Partial substitution: mixed-cation candidates from whole-site substitution candidates.

Why: whole-site substitution maps every site of one species to one new species, so a
chemical system gets only the compositions of its seeds' formulas (a handful per system).
Real solid-state targets are often mixed-site compounds (LiMn0.5Ni0.5O2-like, doped
perovskites). Here, in each parent candidate, a fraction of the sites of one element is
replaced by another element of the same system with the same oxidation state (so the cell
stays charge balanced without guessing compensation); a parent whose element sits on one site
only is first doubled along its shortest axis. Orderings are enumerated up to a cap and
de-duplicated with ``StructureMatcher``; compositions in the Materials Project table are
dropped (``novel_only``). Volumes are rescaled by ionic radii: a first guess, not a relaxation.
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from pymatgen.core import Element, Species, Structure

from .candidates import Candidate, _radius
from .thermo import known_phases

FRACTIONS = (Fraction(1, 4), Fraction(1, 3), Fraction(1, 2), Fraction(2, 3), Fraction(3, 4))


def _oxidation(site_specie) -> int | None:
    ox = getattr(site_specie, "oxi_state", None)
    return None if ox is None else int(round(ox))


def _states(symbol: str) -> set[int]:
    """Oxidation states seen in ICSD compounds plus pymatgen's common ones (Ni: 2, 3)."""
    el = Element(symbol)
    return {int(o) for o in (el.icsd_oxidation_states or ())} | {
        int(o) for o in (el.common_oxidation_states or ())}


def _scaled(parent: Structure, new: Structure) -> Structure:
    old_vol = sum(_radius(s.specie) ** 3 for s in parent)
    new_vol = sum(_radius(s.specie) ** 3 for s in new)
    if old_vol > 0 and new_vol > 0:
        new.scale_lattice(parent.volume * new_vol / old_vol)
    return new


def partial_substitutions(
    parents: Sequence[Candidate],
    systems: Sequence[str],
    *,
    max_per_parent: int = 12,
    max_orderings: int = 24,
    max_atoms: int = 40,
    novel_only: bool = True,
    seed: int = 0,
) -> list[Candidate]:
    """Mixed-site candidates derived from ``parents`` inside ``systems`` (e.g. ``"Li-Mn-Ni-O"``).

    For each parent, element X (oxidation state q, n sites) and element Y of the parent's
    system (Y ≠ X, q among Y's ICSD or common oxidation states), k of the n sites
    for k/n in ``FRACTIONS``; at most ``max_orderings`` site subsets are tried per (X, Y, k)
    (seeded order) and symmetry-equivalent results are merged. At most ``max_per_parent``
    per parent. Parents need oxidation-state decorated structures (as from
    ``generate_candidates``); undecorated ones are skipped.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    if max_per_parent < 1 or max_orderings < 1:
        raise ValueError("max_per_parent and max_orderings must be >= 1")
    sys_elements: list[set[str]] = []
    for system in systems:
        els = {s.strip() for s in system.split("-") if s.strip()}
        for el in els:
            if not Element.is_valid_symbol(el):
                raise ValueError(f"unknown element {el!r} in system {system!r}")
        sys_elements.append(els)
    kp = known_phases()
    matcher = StructureMatcher()
    rng = np.random.default_rng(seed)
    kept: dict[str, list[Structure]] = {}
    out: list[Candidate] = []
    for parent in parents:
        base = parent.structure
        parent_els = {site.specie.symbol for site in base}
        systems_here = [els for els in sys_elements if parent_els <= els]
        if not systems_here or any(_oxidation(s.specie) is None for s in base):
            continue
        made = 0
        by_symbol: dict[str, list[int]] = {}
        for i, site in enumerate(base):
            by_symbol.setdefault(site.specie.symbol, []).append(i)
        for x, idx in sorted(by_symbol.items()):
            q = _oxidation(base[idx[0]].specie)
            if q is None or q <= 0 or len({_oxidation(base[i].specie) for i in idx}) != 1:
                continue  # cations only, one oxidation state on the sublattice
            struct, sites = base, idx
            if len(idx) == 1:  # one site: double the cell along its shortest axis first
                reps = [1, 1, 1]
                reps[int(np.argmin(base.lattice.abc))] = 2
                if len(base) * 2 > max_atoms:
                    continue
                struct = base * reps
                sites = [i for i, s in enumerate(struct) if s.specie.symbol == x]
            n = len(sites)
            ys = sorted({y for els in systems_here for y in els if y != x and q in _states(y)})
            for y, frac in itertools.product(ys, FRACTIONS):
                k = frac * n
                if k.denominator != 1 or not 0 < k < n:
                    continue
                combos = list(itertools.combinations(sites, int(k)))
                if len(combos) > max_orderings:
                    pick = rng.choice(len(combos), size=max_orderings, replace=False)
                    combos = [combos[j] for j in sorted(pick)]
                for combo in combos:
                    new = struct.copy()
                    for i in combo:
                        new.replace(i, Species(y, q), properties=None)
                    formula = new.composition.reduced_formula
                    if novel_only and kp.formation_energy(formula) is not None:
                        break  # same composition for every ordering of this (y, k)
                    new = _scaled(struct, new)
                    group = kept.setdefault(formula, [])
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        if any(matcher.fit(new, other) for other in group):
                            continue
                    group.append(new)
                    digest = hashlib.blake2b(f"{parent.id}|{x}|{y}|{combo}".encode(),
                                             digest_size=4).hexdigest()
                    out.append(Candidate(
                        id=f"psub-{formula}-{digest}", formula=formula, structure=new,
                        source="partial_substitution",
                        provenance={"parent": parent.id, "replaced": x, "by": y,
                                    "fraction": str(frac), "sites": [int(i) for i in combo],
                                    "novel": kp.formation_energy(formula) is None}))
                    made += 1
                    break  # one ordering per (x, y, fraction): the first that is new
                if made >= max_per_parent:
                    break
            if made >= max_per_parent:
                break
    return out
