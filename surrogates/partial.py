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
import math
import warnings
from collections.abc import Collection, Sequence
from fractions import Fraction

import numpy as np
from pymatgen.core import Composition, Element, Species, Structure

from .candidates import Candidate, _scaled, is_known, reduced_set
from .plausibility import SITE_TOLERANCE
from .thermo import known_phases

FRACTIONS = (Fraction(1, 4), Fraction(1, 3), Fraction(1, 2), Fraction(2, 3), Fraction(3, 4))
#: the fractions of the candidate pool's isovalent step: eighths, quarters, thirds, halves
FINE_FRACTIONS = tuple(sorted({Fraction(k, d) for d in (2, 3, 4, 8) for k in range(1, d)}))


def _oxidation(site_specie) -> int | None:
    ox = getattr(site_specie, "oxi_state", None)
    return None if ox is None else int(round(ox))


def _states(symbol: str) -> set[int]:
    """Oxidation states seen in ICSD compounds plus pymatgen's common ones (Ni: 2, 3)."""
    el = Element(symbol)
    return {int(o) for o in (el.icsd_oxidation_states or ())} | {
        int(o) for o in (el.common_oxidation_states or ())}


def partial_substitutions(
    parents: Sequence[Candidate],
    systems: Sequence[str],
    *,
    max_per_parent: int = 12,
    max_orderings: int = 24,
    max_atoms: int = 40,
    novel_only: bool = True,
    seed: int = 0,
    holdout: Collection[str] = (),
    fractions: Sequence[Fraction] = FRACTIONS,
    max_cells: int | None = None,
    tolerance: float | None = None,
) -> list[Candidate]:
    """Mixed-site candidates derived from ``parents`` inside ``systems`` (e.g. ``"Li-Mn-Ni-O"``).

    For each parent, element X (oxidation state q, n sites) and element Y of the parent's
    system (Y ≠ X, q among Y's ICSD or common oxidation states), k of the n sites
    for k/n in ``FRACTIONS``; at most ``max_orderings`` site subsets are tried per (X, Y, k)
    (seeded order) and symmetry-equivalent results are merged. At most ``max_per_parent``
    per parent. Parents need oxidation-state decorated structures (as from
    ``generate_candidates``); undecorated ones are skipped. ``holdout``: compositions treated as
    unknown (a recall test). ``max_cells`` (1-8): each (X, Y, fraction) takes the smallest
    supercell of 1, 2, 3, 4, 6 or 8 parent cells (≤ max_cells and ``max_atoms``) in which the
    fraction is a whole number of sites (``FINE_FRACTIONS`` with 8 give Ba0.125Sr0.875TiO3-like
    solid solutions); None keeps the original rule (one cell, doubled when X has one site).
    ``tolerance``: Y must pass the radius rule of :mod:`plausibility` on X's sites (None: no
    check, the original behaviour, which lets Ti²⁺ onto a Sr²⁺ site).
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from .plausibility import coordination_numbers, site_radius_ok

    if max_cells is not None and not 1 <= max_cells <= 8:
        raise ValueError(f"max_cells must be 1-8 or None, got {max_cells}")
    if max_per_parent < 1 or max_orderings < 1:
        raise ValueError("max_per_parent and max_orderings must be >= 1")
    sys_elements = _system_elements(systems)
    kp = known_phases()
    held = reduced_set(holdout)
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
            ys = sorted({y for els in systems_here for y in els if y != x and q in _states(y)})
            if tolerance is not None:
                anions = {s.specie.symbol for s in base if (_oxidation(s.specie) or 0) < 0}
                cns = set(coordination_numbers(base, idx, anions))
                ys = [y for y in ys if all(site_radius_ok((x, q), (y, q), c, tolerance) for c in cns)]
            cells: dict[int, tuple[Structure, list[int]]] = {}
            for y, frac in itertools.product(ys, fractions):
                if max_cells is None:
                    m = 2 if len(idx) == 1 else 1
                    if m * len(base) > max_atoms:
                        continue
                else:
                    m = next((m for m in (1, 2, 3, 4, 6, 8) if m <= max_cells and len(base) * m <= max_atoms
                              and (frac * len(idx) * m).denominator == 1), 0)
                    if not m:
                        continue
                if m not in cells:
                    struct = base if m == 1 else _supercell(base, m)
                    cells[m] = (struct, [i for i, st in enumerate(struct) if st.specie.symbol == x])
                struct, sites = cells[m]
                n = len(sites)
                k = frac * n
                if k.denominator != 1 or not 0 < k < n:
                    continue
                if math.comb(n, int(k)) <= 5000:
                    combos = list(itertools.combinations(sites, int(k)))
                    if len(combos) > max_orderings:
                        pick = rng.choice(len(combos), size=max_orderings, replace=False)
                        combos = [combos[j] for j in sorted(pick)]
                else:  # too many to list: draw site subsets directly
                    combos = [tuple(sorted(int(i) for i in rng.choice(sites, size=int(k), replace=False)))
                              for _ in range(max_orderings)]
                for combo in combos:
                    new = struct.copy()
                    for i in combo:
                        new.replace(i, Species(y, q), properties=None)
                    formula = new.composition.reduced_formula
                    if novel_only and is_known(formula, held, kp):
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
                                    "novel": not is_known(formula, held, kp)}))
                    made += 1
                    break  # one ordering per (x, y, fraction): the first that is new
                if made >= max_per_parent:
                    break
            if made >= max_per_parent:
                break
    return out


def _supercell(base: Structure, m: int) -> Structure:
    """``base`` repeated ``m`` times (1-4, 6, 8), as squarely as the axes allow: 2 and 3 along
    the shortest axis, 4 as 2 × 2 on the two shortest, 6 as 3 × 2, 8 as 2 × 2 × 2."""
    order = [int(i) for i in np.argsort(base.lattice.abc, kind="stable")]
    factors = {1: (1,), 2: (2,), 3: (3,), 4: (2, 2), 6: (3, 2), 8: (2, 2, 2)}.get(m)
    if factors is None:
        raise ValueError(f"supercell multiplier must be one of 1, 2, 3, 4, 6, 8; got {m}")
    reps = [1, 1, 1]
    for axis, f in zip(order, factors, strict=False):
        reps[axis] = f
    return base * reps


def aliovalent_substitutions(
    parents: Sequence[Candidate],
    systems: Sequence[str],
    *,
    tolerance: float = SITE_TOLERANCE,
    max_candidates: int = 2000,
    max_atoms: int = 40,
    max_repeats: int = 1,
    max_vacancy_fraction: float = 1 / 6,
    novel_only: bool = True,
    seed: int = 0,
    holdout: Collection[str] = (),
) -> list[Candidate]:
    """Aliovalent partial substitution with charge compensation on a second site.

    In a parent, k1 sites of cation X^q become Y^a (Y another element of the system, a ≠ q) and
    k2 sites of a second sublattice Z^p (the rest of X's sublattice or another cation's)
    compensate: either Z changes valence (redox: Mn³⁺ → Mn⁴⁺ as Li⁺ enters, LiMnO2 → Li2MnO3)
    or Z^p becomes W^b (a coupled pair: Ni²⁺/Mn⁴⁺ for 2 Co³⁺), with k1(a − q) + k2(b − p) = 0;
    or, for a lower-valent Y, k2 anion sites are left empty (Sr²⁺ for La³⁺ in LaFeO3 with oxygen
    vacancies, at most ``max_vacancy_fraction`` of the anion sites: brownmillerite's 1/6).
    k1, k2 are the smallest integers of that ratio times 1..``max_repeats``, in each of 1-4
    parent cells (≤ ``max_atoms``) where both fit (a different dilution each; Y never takes all
    of X's sites; Li⁺ + 2 Mn⁴⁺ may use up a Mn³⁺ sublattice).
    Every replaced site passes the radius rule against the ion it replaces at its coordination
    (``tolerance``, :mod:`plausibility`).

    One structure per composition: over all parents, the move that changes the smallest share
    of the cell (then the smallest valence changes, then the parents' order) is built, with a seeded choice of sites — so the
    work is one structure per new formula, not per move. Compositions known to the Materials
    Project table are dropped with ``novel_only`` (``holdout`` treated as unknown). The
    odd-chemistry rules and the de-duplication across sources are :mod:`candidate_pool`'s.
    """
    from math import gcd

    from .plausibility import cation_states, coordination_numbers, site_radius_ok

    if max_candidates < 1 or max_repeats < 1:
        raise ValueError("max_candidates and max_repeats must be >= 1")
    sys_elements = _system_elements(systems)
    kp = known_phases()
    held = reduced_set(holdout)
    rng = np.random.default_rng(seed)
    best: dict[str, tuple[tuple, tuple]] = {}
    known_cache: dict[str, bool] = {}
    for pi, parent in enumerate(parents):
        base = parent.structure
        parent_els = {site.specie.symbol for site in base}
        systems_here = [els for els in sys_elements if parent_els <= els]
        if not systems_here or any(_oxidation(s.specie) is None for s in base):
            continue
        anions = {s.specie.symbol for s in base if (_oxidation(s.specie) or 0) < 0}
        subl: dict[tuple[str, int], list[int]] = {}
        for i, site in enumerate(base):
            q = _oxidation(site.specie) or 0
            if q > 0:
                subl.setdefault((site.specie.symbol, q), []).append(i)
        all_cat = [i for idx in subl.values() for i in idx]
        cn = dict(zip(all_cat, coordination_numbers(base, all_cat, anions), strict=True))
        cns_of = {key: {cn[i] for i in idx} for key, idx in subl.items()}
        anion_subl: dict[tuple[str, int], list[int]] = {}
        for i, site in enumerate(base):
            if (_oxidation(site.specie) or 0) < 0:
                anion_subl.setdefault((site.specie.symbol, _oxidation(site.specie) or 0), []).append(i)
        elements = sorted({y for els in systems_here for y in els} - anions)
        base_counts: dict[str, int] = {}
        for site in base:
            base_counts[site.specie.symbol] = base_counts.get(site.specie.symbol, 0) + 1

        def fits(old: tuple[str, int], new: tuple[str, int], cns: set[int]) -> bool:
            return all(site_radius_ok(old, new, c, tolerance) for c in cns)

        pformula = base.composition.reduced_formula
        offer = {"best": best, "known_cache": known_cache, "base_counts": base_counts,
                 "parent_formula": pformula, "novel_only": novel_only, "held": held, "kp": kp}
        for (x, q), idx1 in sorted(subl.items()):
            for y in elements:
                for a in cation_states(y):
                    if y == x or a == q or not fits((x, q), (y, a), cns_of[(x, q)]):
                        continue
                    d1 = a - q
                    for (z, p), idx2 in sorted(subl.items()):
                        same = (z, p) == (x, q)
                        # redox of Z itself (w == z), or a coupled substitution by W
                        for w in elements:
                            for b in cation_states(w):
                                if (b - p) * d1 >= 0 or (w != z and not fits((z, p), (w, b), cns_of[(z, p)])):
                                    continue
                                g = gcd(abs(d1), abs(b - p))
                                for t, m in itertools.product(range(1, max_repeats + 1), (1, 2, 3, 4)):
                                    k1, k2 = t * abs(b - p) // g, t * abs(d1) // g
                                    if len(base) * m > max_atoms or not (
                                            k1 + k2 <= len(idx1) * m if same
                                            else k1 < len(idx1) * m and k2 <= len(idx2) * m):
                                        continue
                                    # the smallest change of the cell, then the smallest valence jumps
                                    _offer(**offer, m=m, deltas=((x, -k1), (y, k1), (z, -k2), (w, k2)),
                                           key=((k1 + k2) / (len(base) * m), abs(d1) + abs(b - p), m, pi),
                                           move=(pi, ((x, q), (y, a), k1, (z, p), (w, b), k2, m)))
                    # or anion vacancies for a lower-valent Y (Sr2+ for La3+: LaFeO3 -> La1-xSrxFeO3-x/2)
                    for (o, c), idx2 in sorted(anion_subl.items()) if d1 < 0 else ():
                        g = gcd(abs(d1), abs(c))
                        for t, m in itertools.product(range(1, max_repeats + 1), (1, 2, 3, 4)):
                            k1, k2 = t * abs(c) // g, t * abs(d1) // g
                            if len(base) * m > max_atoms or not (
                                    k1 < len(idx1) * m and k2 <= max_vacancy_fraction * len(idx2) * m):
                                continue
                            _offer(**offer, m=m, deltas=((x, -k1), (y, k1), (o, -k2)),
                                   key=((k1 + k2) / (len(base) * m), abs(d1) + abs(c), m, pi),
                                   move=(pi, ((x, q), (y, a), k1, (o, c), ("", 0), k2, m)))
    out: list[Candidate] = []
    for formula, (_, (pi, move)) in sorted(best.items(), key=lambda kv: (kv[1][0], kv[0]))[:max_candidates]:
        parent = parents[pi]
        (x, q), (y, a), k1, (z, p), (w, b), k2, m = move
        sup = _supercell(parent.structure, m)
        sites1 = [i for i, s in enumerate(sup) if s.specie == Species(x, q)]
        pick1 = [int(i) for i in rng.choice(sites1, size=k1, replace=False)]
        sites2 = [i for i, s in enumerate(sup) if s.specie == Species(z, p) and i not in pick1]
        pick2 = [int(i) for i in rng.choice(sites2, size=k2, replace=False)]
        new = sup.copy()
        for i in pick1:
            new.replace(i, Species(y, a), properties=None)
        if w:
            for i in pick2:
                new.replace(i, Species(w, b), properties=None)
        else:  # anion vacancies
            new.remove_sites(pick2)
        new = _scaled(sup, new)
        digest = hashlib.blake2b(f"{parent.id}|{x}{q}>{y}{a}x{k1}|{z}{p}>{w}{b}x{k2}|{m}".encode(),
                                 digest_size=4).hexdigest()
        out.append(Candidate(
            id=f"asub-{formula}-{digest}", formula=formula, structure=new,
            source="aliovalent_substitution",
            provenance={"parent": parent.id, "replaced": f"{x}{q:+d}", "by": f"{y}{a:+d}",
                        "count": k1, "compensated": f"{z}{p:+d}",
                        "compensated_by": f"{w}{b:+d}" if w else "vacancy",
                        "compensation_count": k2, "cells": m,
                        "novel": not is_known(formula, held, kp)}))
    return out


def _offer(*, best: dict, known_cache: dict[str, bool], base_counts: dict[str, int], parent_formula: str,
           novel_only: bool, held: frozenset[str], kp, m: int, deltas: tuple, key: tuple, move: tuple) -> None:
    """Record ``move`` for its composition (``m`` parent cells changed by ``deltas``) if that
    composition is new (not the parent's, not known with ``novel_only``) and ``key`` beats the
    move recorded so far."""
    counts = {k: v * m for k, v in base_counts.items()}
    for el, dk in deltas:
        counts[el] = counts.get(el, 0) + dk
    formula = Composition({k: v for k, v in counts.items() if v > 0}).reduced_formula
    if formula == parent_formula:
        return  # an anti-site pair, not a new composition
    if novel_only:
        if formula not in known_cache:
            known_cache[formula] = is_known(formula, held, kp)
        if known_cache[formula]:
            return
    if formula not in best or key < best[formula][0]:
        best[formula] = (key, move)


def _system_elements(systems: Sequence[str]) -> list[set[str]]:
    out = []
    for system in systems:
        els = {s.strip() for s in system.split("-") if s.strip()}
        for el in els:
            if not Element.is_valid_symbol(el):
                raise ValueError(f"unknown element {el!r} in system {system!r}")
        out.append(els)
    return out
