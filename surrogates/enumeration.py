"""Prototype enumeration: the shipped structure-type templates decorated with a chemical system's
ions in every charge-balanced, size-plausible assignment of oxidation states.

Why: whole-site substitution only reaches the formulas of a few seed structures. The template
library (``data/templates.json.bz2``: textbook prototypes, reference CIFs, an Alexandria sample)
holds a hundred-odd ionic structure types; re-decorating each with the system's cations gives
compositions no seed has (Li-Mn-Ni-O on a spinel, an olivine, a K2NiF4 cell ...). Each template
cation element is one sublattice; it takes one species (element, oxidation state) of the system,
distinct sublattices distinct species, so Mn²⁺/Mn³⁺ on spinel's two sites gives Mn3O4.

An assignment is kept when (rules in :mod:`plausibility`):

* the cell is charge balanced with the system's anion on the template's anion sites;
* every site passes Goldschmidt's radius rule against the template's own ion at that site's
  coordination number (``tolerance``, relative; the CN counted from the template's geometry);
* a perovskite-like ABX3 template (A 8-12-fold, B 6-fold) has a tolerance factor in the window.

Volumes are rescaled by the cube of the Shannon radii at each site's coordination: a first guess,
not a relaxation. Compositions are de-duplicated by reduced formula and ``StructureMatcher`` in
:mod:`candidate_pool`, where novelty and the odd-chemistry rules are applied.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pymatgen.core import Composition, Element, Species, Structure

from .candidates import Candidate
from .plausibility import (
    ANIONS,
    PEROVSKITE_T,
    SITE_TOLERANCE,
    cation_states,
    coordination_numbers,
    shannon_radius,
    tolerance_factor,
)
from .prototypes import TEMPLATE_KINDS, template_library

#: default relative radius tolerance per site (chosen on the tune systems, benchmarks/candidates.py)
DEFAULT_TOLERANCE = SITE_TOLERANCE


@dataclass(frozen=True)
class Sublattice:
    """The sites of one template element: its guessed oxidation state and coordination numbers."""

    symbol: str
    ox: int
    indices: tuple[int, ...]
    cns: tuple[int, ...]  # the coordination number of each site, in ``indices`` order


@dataclass(frozen=True)
class IonicTemplate:
    """A template read as an ionic structure: cation sublattices around one anion."""

    id: str
    kind: str
    formula: str
    structure: Structure
    anion: str
    anion_charge: int
    sublattices: tuple[Sublattice, ...]

    @property
    def n_anion(self) -> int:
        return sum(1 for s in self.structure if s.specie.symbol == self.anion)


def ionic_template(tpl: dict, anions: Collection[str]) -> IonicTemplate | None:
    """The template (its primitive cell) as cation sublattices around one anion of ``anions``,
    or None when it is not such a structure (intermetallic, two anions, no charge-balanced
    oxidation states)."""
    comp = Composition(tpl["formula"])
    present = [el.symbol for el in comp.elements if el.symbol in ANIONS]
    if len(present) != 1 or present[0] not in anions or len(comp.elements) < 2:
        return None
    anion = present[0]
    charge = ANIONS[anion]
    cations = [el.symbol for el in comp.elements if el.symbol != anion]
    if any(Element(c).is_noble_gas or c == "H" for c in cations):
        return None
    override = {anion: [charge]} | {c: list(cation_states(c)) for c in cations}
    if any(not v for v in override.values()):
        return None
    try:
        guesses = comp.oxi_state_guesses(oxi_states_override=override, max_sites=-20)
    except ValueError:
        return None
    if not guesses:
        return None
    # the reference state only sizes the template's own ions, so a mixed-valence average
    # (Mn 2.67 in Mn3O4) is rounded to the nearest state the element takes
    ref = {c: min(cation_states(c), key=lambda o: (abs(o - float(guesses[0][c])), -o)) for c in cations}
    s = Structure.from_dict(tpl["structure"])
    if len(s) > 8:  # conventional cells (spinel: 56 atoms) to primitive ones (14)
        prim = s.get_primitive_structure(tolerance=0.05)
        if len(prim) < len(s):
            s = prim
    subs = []
    for c in sorted(cations):
        idx = [i for i, site in enumerate(s) if site.specie.symbol == c]
        cns = coordination_numbers(s, idx, {anion})
        if min(cns) == 0:
            return None
        for cn in sorted(set(cns)):  # one sublattice per coordination: spinel's A and B sites
            here = tuple(i for i, k in zip(idx, cns, strict=True) if k == cn)
            subs.append(Sublattice(c, ref[c], here, (cn,) * len(here)))
    return IonicTemplate(tpl["id"], tpl["kind"], tpl["formula"], s, anion, charge, tuple(subs))


@lru_cache(maxsize=4)
def ionic_templates(anions: tuple[str, ...] = ("O",), max_atoms: int = 40) -> tuple[IonicTemplate, ...]:
    """Every shipped template that reads as an ionic structure around one of ``anions``."""
    out = []
    for tpl in template_library():
        it = ionic_template(tpl, anions)
        if it is not None and len(it.structure) <= max_atoms:
            out.append(it)
    return tuple(out)


def _system_species(system: str) -> tuple[str, int, list[tuple[str, int]]]:
    els = sorted({e.strip() for e in system.split("-") if e.strip()})
    for el in els:
        if not Element.is_valid_symbol(el):
            raise ValueError(f"unknown element {el!r} in system {system!r}")
    anions = [el for el in els if el in ANIONS]
    if len(anions) != 1:
        raise ValueError(f"prototype enumeration needs exactly one anion in {system!r}, got {anions}")
    cations = [(el, ox) for el in els if el not in ANIONS for ox in cation_states(el)]
    return anions[0], ANIONS[anions[0]], cations


def _site_ok(sub: Sublattice, new: tuple[str, int], tolerance: float) -> tuple[bool, float]:
    """Radius rule on every distinct CN of the sublattice; (ok, worst relative mismatch)."""
    worst = 0.0
    for cn in sorted(set(sub.cns)):
        r_old = shannon_radius(sub.symbol, sub.ox, cn)
        r_new = shannon_radius(new[0], new[1], cn)
        if r_old is None or r_new is None or r_old <= 0:
            return False, float("inf")
        mismatch = abs(r_new - r_old) / r_old
        worst = max(worst, mismatch)
        if mismatch > tolerance:
            return False, mismatch
    return True, worst


def _perovskite_ok(tpl: IonicTemplate, assign: dict[Sublattice, tuple[str, int]]) -> bool:
    """Goldschmidt's window on an ABX3 template whose A site is 8-12-fold and B site 6-fold."""
    comp = Composition(tpl.formula)
    if len(tpl.sublattices) != 2 or comp.anonymized_formula != "ABC3":
        return True
    a_sub, b_sub = sorted(tpl.sublattices, key=lambda s: -min(s.cns))
    if min(a_sub.cns) < 8 or set(b_sub.cns) != {6} or comp[tpl.anion] != 3 * comp[a_sub.symbol]:
        return True
    t = tolerance_factor(assign[a_sub], assign[b_sub], (tpl.anion, tpl.anion_charge))
    return t is not None and PEROVSKITE_T[0] <= t <= PEROVSKITE_T[1]


def decorate(tpl: IonicTemplate, assign: dict[Sublattice, tuple[str, int]], anion: tuple[str, int]) -> Structure:
    """The template with each sublattice's sites replaced, volume scaled by Σ r³ at each
    site's coordination (the anion at 6-fold)."""
    species: list[Species] = []
    old = new = 0.0
    where = {i: (sub, cn) for sub in tpl.sublattices for i, cn in zip(sub.indices, sub.cns, strict=True)}
    for i, site in enumerate(tpl.structure):
        if i not in where:  # an anion site
            old += (shannon_radius(site.specie.symbol, tpl.anion_charge, 6) or 1.4) ** 3
            new += (shannon_radius(anion[0], anion[1], 6) or 1.4) ** 3
            species.append(Species(*anion))
            continue
        sub, cn = where[i]
        old += (shannon_radius(sub.symbol, sub.ox, cn) or 1.0) ** 3
        new += (shannon_radius(*assign[sub], cn) or 1.0) ** 3
        species.append(Species(*assign[sub]))
    s = Structure(tpl.structure.lattice, species, tpl.structure.frac_coords)
    if old > 0 and new > 0:
        s.scale_lattice(tpl.structure.volume * new / old)
    return s


def enumerate_prototypes(
    system: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_atoms: int = 40,
    template_anions: tuple[str, ...] = ("O",),
    exclude_formulas: Collection[str] = (),
    templates: Sequence[IonicTemplate] | None = None,
) -> list[Candidate]:
    """Every plausible decoration of the ionic templates with ``system``'s ions (one anion).

    One candidate per (template, assignment), not yet de-duplicated or checked for novelty;
    ``provenance`` has the template, the assignment and the worst radius mismatch (also the
    sort key, best first, then template kind). Templates whose own composition is in
    ``exclude_formulas`` are not used (a hold-out experiment must not see its answers).
    ``templates``: default every shipped template read by :func:`ionic_templates`.
    """
    if not 0 < tolerance < 5:
        raise ValueError(f"tolerance must be in (0, 5), got {tolerance}")
    anion, charge, species = _system_species(system)
    excluded = {Composition(f).reduced_formula for f in exclude_formulas}
    made: list[tuple[float, int, str, Candidate]] = []
    library = ionic_templates(tuple(sorted(template_anions)), max_atoms) if templates is None else templates
    for tpl in library:
        n_elements = len({sub.symbol for sub in tpl.sublattices})
        if tpl.formula in excluded or n_elements > len(species):
            continue
        options: list[list[tuple[tuple[str, int], float]]] = []
        for sub in tpl.sublattices:
            allowed = []
            for sp in species:
                ok, mismatch = _site_ok(sub, sp, tolerance)
                if ok:
                    allowed.append((sp, mismatch))
            options.append(allowed)
        if any(not o for o in options):
            continue
        n_anion = tpl.n_anion
        counts = [len(sub.indices) for sub in tpl.sublattices]
        for combo in itertools.product(*options):
            sps = [c[0] for c in combo]
            owner: dict[tuple[str, int], str] = {}
            if any(owner.setdefault(sp, sub.symbol) != sub.symbol
                   for sp, sub in zip(sps, tpl.sublattices, strict=True)):
                continue  # two template elements on one species: a smaller template's job
            if sum(n * ox for n, (_, ox) in zip(counts, sps, strict=True)) + n_anion * charge != 0:
                continue
            assign = dict(zip(tpl.sublattices, sps, strict=True))
            if not _perovskite_ok(tpl, assign):
                continue
            structure = decorate(tpl, assign, (anion, charge))
            if len(structure) > max_atoms:
                continue
            formula = structure.composition.reduced_formula
            worst = max(c[1] for c in combo)
            tag = "|".join(f"{k.symbol}{k.cns[0]}>{v[0]}{v[1]}" for k, v in assign.items())
            digest = hashlib.blake2b(f"{tpl.id}|{tag}".encode(), digest_size=4).hexdigest()
            cand = Candidate(
                id=f"proto-{formula}-{digest}", formula=formula, structure=structure,
                source="prototype_enumeration",
                provenance={"template": tpl.id, "template_kind": tpl.kind,
                            "template_formula": tpl.formula,
                            "assignment": {f"{k.symbol}(CN{k.cns[0]})": f"{v[0]}{v[1]:+d}"
                                           for k, v in assign.items()},
                            "radius_mismatch": round(float(worst), 4)})
            kind_rank = TEMPLATE_KINDS.index(tpl.kind) if tpl.kind in TEMPLATE_KINDS else len(TEMPLATE_KINDS)
            made.append((round(float(worst), 4), kind_rank, cand.id, cand))
    made.sort(key=lambda m: m[:3])
    return [m[3] for m in made]
