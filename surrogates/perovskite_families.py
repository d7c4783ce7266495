"""Perovskite-related structure families built from their stacking rules, decorated by site role.

Why: the shipped templates hold one cubic perovskite and one K2NiF4 cell, and decorating a
template keeps only ions within 20 % of the template's own ion on each site. Large-cation
systems (Ba-Sr-Ti-O, La-Sr-Fe-O) then get few compositions, although their chemistry is that of
a whole family of layered, ordered and oxygen-deficient perovskites. Here each family member is
built with pymatgen from its structural rule (no downloaded structure):

* Ruddlesden-Popper A_{n+1}B_nO_{3n+1}, n = 1-3: n-layer perovskite blocks, each shifted by
  (½, ½) across a rock-salt AO double layer (A 12-fold inside a block, 9-fold at its edge);
* Dion-Jacobson A'A_{n-1}B_nO_{3n+1}, n = 2, 3: eclipsed blocks, one A' (8-fold) between them;
* B-site ordered double perovskites: rock-salt A2BB'O6 (1:1) and [111]-layered A3BB'2O9 (1:2);
* A-site layered AA'B2O6, its oxygen-deficient AA'B2O5 (the smaller A layer empties, B 5-fold,
  as in YBaCo2O5) and the A-layered, B-rock-salt AA'BB'O6;
* brownmillerite A2B2O5: every second BO2 layer loses alternate [110] rows of oxygen (B 4-fold).

Geometry is idealised (no tilts, cubic-perovskite distances); volumes are rescaled by Σ r³.

The template's placeholder ions (Sr, Ba on A sites; Ti, Zr on B sites; K on A') carry no
chemistry: a site takes an ion by its *role*, not by likeness to the placeholder
(:func:`plausibility.perovskite_role_ok`), and the whole cell must have Goldschmidt's tolerance
factor in the perovskite window (mean A and B radii). Distinct placeholders take distinct ions
(A ≠ A', B ≠ B'), so an ordered member never repeats the simple perovskite; two orbits of one
placeholder (RP's 12- and 9-fold A; brownmillerite's octahedral and tetrahedral B) may take one
ion or two. Because no known compound's data enters, a hold-out experiment may use these
families for every system (their ``formula`` is the family's name, never a composition).
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from pymatgen.core import Lattice, Structure

from .candidates import Candidate
from .enumeration import IonicTemplate, Sublattice, _system_species, decorate
from .plausibility import (
    PEROVSKITE_T,
    SITE_TOLERANCE,
    coordination_numbers,
    perovskite_role_ok,
    perovskite_tolerance_factor,
)

#: the pseudo-cubic B-O-B distance of the idealised cells (SrTiO3, Å)
D = 3.905
#: placeholder ion -> (oxidation state, role); roles: "A" perovskite cavity, "A'" interlayer, "B"
PLACEHOLDERS = {"Sr": (2, "A"), "Ba": (2, "A"), "K": (1, "A'"), "Ti": (4, "B"), "Zr": (4, "B")}
FAMILIES = ("RP1", "RP2", "RP3", "DJ2", "DJ3", "double_rocksalt", "double_111", "A_layered",
            "A_layered_O5", "A_layered_B_rocksalt", "brownmillerite")


def _layered(n: int, kind: str) -> Structure:
    """Ruddlesden-Popper (``kind="RP"``, body-centred, conventional cell of two blocks) or
    Dion-Jacobson (``"DJ"``, primitive, one block) with ``n`` BO2 layers per block."""
    d = D
    species: list[str] = []
    coords: list[list[float]] = []  # in-plane fractional, z in Å

    def add(el: str, x: float, y: float, z: float) -> None:
        species.append(el)
        coords.append([x % 1.0, y % 1.0, z])

    def block(z0: float, s: float, terminal_a: bool) -> None:
        for k in range(n):
            z = z0 + k * d
            add("Ti", s, s, z)
            add("O", s + 0.5, s, z)
            add("O", s, s + 0.5, z)
        for k in range(n - 1):
            add("Sr", s + 0.5, s + 0.5, z0 + (k + 0.5) * d)
            add("O", s, s, z0 + (k + 0.5) * d)
        add("O", s, s, z0 - d / 2)  # apical oxygens of the block's two faces
        add("O", s, s, z0 + (n - 0.5) * d)
        if terminal_a:
            add("Sr", s + 0.5, s + 0.5, z0 - d / 2)
            add("Sr", s + 0.5, s + 0.5, z0 + (n - 0.5) * d)

    if kind == "RP":
        half = n * d + 0.62 * d  # a block plus the rock-salt gap between its AO faces
        c = 2 * half
        block(0.0, 0.0, True)
        block(half, 0.5, True)
    elif kind == "DJ":
        gap = 2.8  # apical O to apical O across the A' layer
        c = n * d + gap
        block(0.0, 0.0, False)
        add("K", 0.5, 0.5, (n - 0.5) * d + gap / 2)
    else:
        raise ValueError(kind)
    frac = [[x, y, (z / c) % 1.0] for x, y, z in coords]
    s = Structure(Lattice.tetragonal(d, c), species, frac)
    s.merge_sites(tol=0.01, mode="delete")
    return s


def _cubic_supercell(matrix, a_label=None, b_label=None, drop_o=None) -> Structure:
    """SrTiO3 in the supercell ``matrix`` (rows: cubic lattice vectors); ``a_label`` /
    ``b_label`` map a site's cubic coordinates to its placeholder, ``drop_o`` says which
    oxygens leave (cubic coordinates in units of the cubic cell)."""
    cubic = Structure(Lattice.cubic(D), ["Sr", "Ti", "O", "O", "O"],
                      [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]])
    sup = cubic * matrix
    species, frac = [], []
    for site in sup:
        cart = site.coords / D  # cubic coordinates
        el = site.specie.symbol
        if el == "Sr" and a_label:
            el = a_label(cart)
        elif el == "Ti" and b_label:
            el = b_label(cart)
        elif el == "O" and drop_o and drop_o(cart):
            continue
        species.append(el)
        frac.append(site.frac_coords)
    return Structure(sup.lattice, species, frac)


def _on(value: float, period: float, at: float) -> bool:
    """Whether ``value`` ≡ ``at`` (mod ``period``), to rounding."""
    r = (value - at) % period
    return min(r, period - r) < 1e-3


def _parity(v) -> int:
    """(x + y + z) mod 2 of a B site (integer cubic coordinates): the rock-salt ordering."""
    return int(np.rint(v).sum()) % 2


def family_structures() -> dict[str, Structure]:
    """The idealised cells of :data:`FAMILIES` with placeholder ions."""
    out = {f"RP{n}": _layered(n, "RP") for n in (1, 2, 3)}
    out |= {f"DJ{n}": _layered(n, "DJ") for n in (2, 3)}
    fcc = [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    out["double_rocksalt"] = _cubic_supercell(fcc, b_label=lambda v: "Zr" if _parity(v) else "Ti")
    out["double_111"] = _cubic_supercell(
        [[1, -1, 0], [0, 1, -1], [1, 1, 1]],
        b_label=lambda v: "Zr" if int(np.rint(v).sum()) % 3 == 0 else "Ti")
    tall = [[1, 0, 0], [0, 1, 0], [0, 0, 2]]
    a_layer = lambda v: "Ba" if int(np.floor(v[2] + 1e-6)) % 2 else "Sr"  # noqa: E731
    out["A_layered"] = _cubic_supercell(tall, a_label=a_layer)
    # the Sr (smaller A) layer at cubic z = 1/2 loses its oxygen: B square pyramids
    out["A_layered_O5"] = _cubic_supercell(
        tall, a_label=a_layer,
        drop_o=lambda v: _on(v[0], 1, 0) and _on(v[1], 1, 0) and _on(v[2], 2, 0.5))
    rot = [[1, 1, 0], [-1, 1, 0], [0, 0, 2]]
    out["A_layered_B_rocksalt"] = _cubic_supercell(rot, a_label=a_layer,
                                                   b_label=lambda v: "Zr" if _parity(v) else "Ti")

    def brown(v) -> bool:  # BO2 layer at cubic z = 1: the oxygen rows with x - y = 1/2 (mod 2)
        return _on(v[2], 2, 1.0) and _on(v[0] - v[1], 2, 0.5)
    out["brownmillerite"] = _cubic_supercell(rot, drop_o=brown)
    return out


def _orbits(s: Structure) -> list[list[int]]:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sym = SpacegroupAnalyzer(s, symprec=0.01).get_symmetrized_structure()
    return [sorted(eq) for eq in sym.equivalent_indices]


@lru_cache(maxsize=1)
def family_templates() -> tuple[IonicTemplate, ...]:
    """:data:`FAMILIES` as :class:`enumeration.IonicTemplate` (primitive cells; one sublattice
    per placeholder orbit, its coordination counted from the geometry)."""
    out = []
    for name, s in family_structures().items():
        prim = s.get_primitive_structure(tolerance=0.01)
        if len(prim) < len(s):
            s = prim
        subs = []
        for orbit in _orbits(s):
            el = s[orbit[0]].specie.symbol
            if el == "O":
                continue
            cns = coordination_numbers(s, orbit, {"O"})
            subs.append(Sublattice(el, PLACEHOLDERS[el][0], tuple(orbit), tuple(cns)))
        subs.sort(key=lambda sub: (PLACEHOLDERS[sub.symbol][1], sub.symbol, sub.indices))
        out.append(IonicTemplate(name, "family", name, s, "O", -2, tuple(subs)))
    return tuple(out)


def role(sub: Sublattice) -> str:
    return PLACEHOLDERS[sub.symbol][1]


def enumerate_families(
    system: str,
    *,
    tolerance: float = SITE_TOLERANCE,
    max_atoms: int = 40,
    families: Sequence[str] = FAMILIES,
    widen: str = "B",
) -> list[Candidate]:
    """Every charge-balanced decoration of the family cells with ``system``'s ions (one
    anion) whose sites pass their role's radius rule and whose tolerance factor (mean A, mean
    B radius) lies in ``PEROVSKITE_T``; ``widen``: which role bounds ``tolerance`` widens
    (:func:`plausibility.perovskite_role_ok`). One candidate per (family, assignment), best
    tolerance factor (nearest 1) first; novelty and de-duplication are :mod:`candidate_pool`'s."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown perovskite famil(y/ies) {unknown}; choose from {list(FAMILIES)}")
    anion, charge, species = _system_species(system)
    made: list[tuple[float, str, Candidate]] = []
    for tpl in family_templates():
        if tpl.id not in families or len(tpl.structure) > max_atoms:
            continue
        options = [[sp for sp in species
                    if all(perovskite_role_ok(role(sub), sp, cn, (anion, charge), tolerance, widen)
                           for cn in set(sub.cns))]
                   for sub in tpl.sublattices]
        if any(not o for o in options):
            continue
        counts = [len(sub.indices) for sub in tpl.sublattices]
        n_anion = tpl.n_anion
        for sps in itertools.product(*options):
            owner: dict[tuple[str, int], str] = {}
            if any(owner.setdefault(sp, sub.symbol) != sub.symbol
                   for sp, sub in zip(sps, tpl.sublattices, strict=True)):
                continue  # distinct placeholders take distinct ions
            if sum(n * ox for n, (_, ox) in zip(counts, sps, strict=True)) + n_anion * charge != 0:
                continue
            a_sites = [(sp, n) for sp, n, sub in zip(sps, counts, tpl.sublattices, strict=True)
                       if role(sub) == "A"]
            b_sites = [(sp, n) for sp, n, sub in zip(sps, counts, tpl.sublattices, strict=True)
                       if role(sub) == "B"]
            t = perovskite_tolerance_factor(a_sites, b_sites, (anion, charge))
            if t is None or not PEROVSKITE_T[0] <= t <= PEROVSKITE_T[1]:
                continue
            assign = dict(zip(tpl.sublattices, sps, strict=True))
            structure = decorate(tpl, assign, (anion, charge))
            formula = structure.composition.reduced_formula
            tag = "|".join(f"{k.symbol}{k.indices[0]}>{v[0]}{v[1]}" for k, v in assign.items())
            digest = hashlib.blake2b(f"{tpl.id}|{tag}".encode(), digest_size=4).hexdigest()
            cand = Candidate(
                id=f"family-{formula}-{digest}", formula=formula, structure=structure,
                source="perovskite_family",
                provenance={"template": tpl.id, "template_kind": "family",
                            "assignment": {f"{role(k)}:{k.symbol}{k.indices[0]}(CN{k.cns[0]})":
                                           f"{v[0]}{v[1]:+d}" for k, v in assign.items()},
                            "tolerance_factor": round(float(t), 4)})
            made.append((round(abs(1.0 - t), 4), cand.id, cand))
    made.sort(key=lambda m: m[:2])
    return [m[2] for m in made]
