"""Chemical plausibility of a decorated ionic structure: oxidation states, ionic radii per site,
and the documented rules that call a charge-balanced composition chemically odd.

Why a module of its own: every candidate generator (whole-site substitution, partial and
aliovalent substitution, prototype enumeration) makes charge-balanced compositions that a chemist
would strike out at a glance — BaTiO2 (Ti²⁺ next to nothing that could hold it there),
Ti³⁺ beside Fe³⁺ (they exchange an electron), Ba²⁺ on an octahedral site. One set of rules, with
their sources, judges all of them, and says *why* (a :class:`Oddity` is data, not a log line).

Rules (each can be switched off by its threshold). The site tolerance and the redox margin were
chosen on the tune systems of ``benchmarks/candidates.py`` (re-discovery of held-out Materials
Project compositions, Fowlkes-Mallows index), never on the systems it reports; the rare-valence
rule is kept on by design although on that measure it costs recall (the MP table holds many
computed Co⁴⁺/Ni⁴⁺ compositions, e.g. delithiated battery phases, that a firing in air does not
make), so its 5 % is a judgment, not a fit:

``rare_valence``
    A cation's oxidation state must account for at least ``MIN_VALENCE_SHARE`` (5 %) of its
    element's cationic occurrences in the ICSD bond-valence statistics that pymatgen ships
    (``pymatgen/core/icsd_bv.yaml``, the prior of ``Composition.oxi_state_guesses``). Removes
    Ti²⁺ (4.7 %), V²⁺, Fe⁴⁺, Co⁴⁺, Ni⁴⁺, Cu³⁺, Mn⁵⁺; keeps Ti³⁺ (14 %), Ni³⁺ (12 %), Mn³⁺.
``redox_pair``
    A reductant and an oxidant cannot share one oxide: if cation A^a could be oxidised at a
    potential E_ox (the lowest standard potential of a couple A^(a+k)/A^a) and cation B^b reduced
    at E_red (the highest of B^b/B^(b-k), metal included) with E_red − E_ox > ``REDOX_MARGIN_V``
    (0.5 V), the pair would exchange electrons during a firing (Ti³⁺ + Fe³⁺ → Ti⁴⁺ + Fe²⁺, as
    ilmenite is Fe²⁺Ti⁴⁺O3). Potentials: aqueous standard reduction potentials (acid) from the
    CRC Handbook of Chemistry and Physics, "Electrochemical Series"; a proxy for solid oxides.
    Ni²⁺/Mn⁴⁺ (LiNi0.5Mn1.5O4) and Fe²⁺/Mn⁴⁺ (0.45 V) pass, Ti³⁺/Mn⁴⁺ (1.1 V) does not.
``site_radius`` (used by the generators per site, not by :func:`oddities`)
    An ion replaces a template's ion on a site only if its Shannon radius *for that site's
    coordination number* differs by at most ``tolerance`` (relative, ``SITE_TOLERANCE`` = 20 %)
    from the original ion's: Goldschmidt's substitution rule, a little looser than his 15 %. Ba²⁺ (1.35 Å, CN 6) does not go on ilmenite's Fe²⁺ site (0.78 Å).
``tolerance_factor`` (perovskite templates)
    Goldschmidt's t = (r_A + r_O) / (√2 (r_B + r_O)) within ``PEROVSKITE_T`` (0.75-1.10; BaTiO3 is 1.06).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pymatgen.core import Element, Species, Structure

#: minimum share of an oxidation state among its element's cationic ICSD occurrences
MIN_VALENCE_SHARE = 0.05
#: E_red(oxidant) − E_ox(reductant) above which a cation pair is called a redox pair (V)
REDOX_MARGIN_V = 0.5
#: relative ionic-radius mismatch allowed per site (Goldschmidt's rule, loosened)
SITE_TOLERANCE = 0.2
#: Goldschmidt tolerance-factor window for a perovskite (ABX3, A 12-fold, B 6-fold)
PEROVSKITE_T = (0.75, 1.10)

#: standard reduction potentials (V, acid) of couples (element, higher state, lower state);
#: CRC Handbook, "Electrochemical Series" (solid oxides where the table lists them: MnO2, PbO2,
#: NiO2, CoO2, Bi2O4). A couple's absence means "no known couple", not "zero".
REDOX_COUPLES: dict[tuple[str, int, int], float] = {
    ("Li", 1, 0): -3.04, ("Na", 1, 0): -2.71, ("K", 1, 0): -2.93, ("Rb", 1, 0): -2.98,
    ("Cs", 1, 0): -3.03, ("Mg", 2, 0): -2.37, ("Ca", 2, 0): -2.87, ("Sr", 2, 0): -2.90,
    ("Ba", 2, 0): -2.91, ("Al", 3, 0): -1.66, ("Zn", 2, 0): -0.76, ("La", 3, 0): -2.38,
    ("Y", 3, 0): -2.37, ("Sc", 3, 0): -2.08, ("Zr", 4, 0): -1.45,
    ("Ti", 4, 3): 0.10, ("Ti", 3, 2): -0.90, ("Ti", 2, 0): -1.63,
    ("V", 5, 4): 0.99, ("V", 4, 3): 0.34, ("V", 3, 2): -0.26, ("V", 2, 0): -1.18,
    ("Cr", 6, 3): 1.36, ("Cr", 3, 2): -0.41, ("Cr", 2, 0): -0.91,
    ("Mn", 7, 6): 0.56, ("Mn", 4, 3): 0.95, ("Mn", 4, 2): 1.22, ("Mn", 3, 2): 1.54,
    ("Mn", 2, 0): -1.18,
    ("Fe", 6, 3): 2.20, ("Fe", 3, 2): 0.77, ("Fe", 2, 0): -0.45,
    ("Co", 4, 3): 1.42, ("Co", 3, 2): 1.92, ("Co", 2, 0): -0.28,
    ("Ni", 4, 2): 1.68, ("Ni", 3, 2): 1.68, ("Ni", 2, 0): -0.26,
    ("Cu", 3, 2): 2.00, ("Cu", 2, 1): 0.15, ("Cu", 1, 0): 0.52, ("Cu", 2, 0): 0.34,
    ("Ag", 2, 1): 1.98, ("Ag", 1, 0): 0.80,
    ("Ce", 4, 3): 1.72, ("Pr", 4, 3): 3.20, ("Tb", 4, 3): 3.10, ("Eu", 3, 2): -0.35,
    ("Yb", 3, 2): -1.05, ("Sm", 3, 2): -1.55,
    ("Sn", 4, 2): 0.15, ("Sn", 2, 0): -0.14, ("Pb", 4, 2): 1.46, ("Pb", 2, 0): -0.13,
    ("Bi", 5, 3): 1.59, ("Bi", 3, 0): 0.31, ("Sb", 5, 3): 0.58, ("Tl", 3, 1): 1.25,
    ("Nb", 5, 3): -0.10, ("Mo", 6, 4): 0.65, ("W", 6, 4): 0.04,
}

_ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII", 9: "IX",
          10: "X", 11: "XI", 12: "XII", 14: "XIV"}
_ARABIC = {v: k for k, v in _ROMAN.items()}


@dataclass(frozen=True)
class Oddity:
    """Why a composition's oxidation-state assignment is chemically odd (one rule, one reason)."""

    rule: str  # "rare_valence" | "redox_pair"
    detail: str  # e.g. "Ti2+ is 4.7 % of Ti's cationic ICSD occurrences"


@lru_cache(maxsize=1)
def _icsd_occurrence() -> dict[tuple[str, int], int]:
    import pymatgen.core as core
    from monty.serialization import loadfn

    data = loadfn(str(Path(core.__file__).resolve().parent / "icsd_bv.yaml"))["occurrence"]
    out: dict[tuple[str, int], int] = {}
    for text, count in data.items():
        try:
            sp = Species.from_str(text)
        except ValueError:
            continue
        ox = sp.oxi_state
        if ox is not None and ox == int(ox):
            out[(sp.symbol, int(ox))] = int(count)
    return out


def valence_share(symbol: str, ox: int) -> float:
    """Share of ``symbol`` in state ``ox`` among its occurrences with the same sign of charge
    in pymatgen's ICSD statistics (0.0 when never seen)."""
    occ = _icsd_occurrence()
    same_sign = sum(c for (el, o), c in occ.items() if el == symbol and o * ox > 0)
    return occ.get((symbol, ox), 0) / same_sign if same_sign else 0.0


@lru_cache(maxsize=512)
def cation_states(symbol: str) -> tuple[int, ...]:
    """Positive oxidation states a generator may try: pymatgen's common ∪ ICSD states, sorted."""
    el = Element(symbol)
    states = {int(o) for o in (el.common_oxidation_states or ())} | {
        int(o) for o in (el.icsd_oxidation_states or ())}
    return tuple(sorted(o for o in states if o > 0))


#: elements treated as anions in ionic solids, with their charge
ANIONS: dict[str, int] = {"O": -2, "S": -2, "Se": -2, "Te": -2, "F": -1, "Cl": -1, "Br": -1,
                          "I": -1, "N": -3}


def _shannon_table(symbol: str, ox: int) -> dict[int, float]:
    """Coordination number -> Shannon ionic radius (high spin when both are listed)."""
    radii = Element(symbol).data.get("Shannon radii", {}).get(str(ox), {})
    out: dict[int, float] = {}
    for cn_text, spins in radii.items():
        cn = _ARABIC.get(cn_text.rstrip("SQPY").rstrip()) or _ARABIC.get(cn_text)
        if cn is None:
            continue
        entry = spins.get("High Spin") or spins.get("") or next(iter(spins.values()))
        out.setdefault(cn, float(entry["ionic_radius"]))
    return out


@lru_cache(maxsize=4096)
def shannon_radius(symbol: str, ox: int, cn: int) -> float | None:
    """Shannon ionic radius (Å) of ``symbol``^``ox`` at coordination ``cn``; the nearest listed
    coordination when ``cn`` is not tabulated (linearly extrapolated by 0.03 Å per step, the
    typical CN dependence), pymatgen's default ionic radius when no Shannon entry exists,
    None when the ion is unknown."""
    table = _shannon_table(symbol, ox)
    if table:
        if cn in table:
            return table[cn]
        nearest = min(table, key=lambda c: (abs(c - cn), -c))
        return table[nearest] + 0.03 * (cn - nearest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = Species(symbol, ox).ionic_radius
        except (ValueError, KeyError):
            r = None
    return None if r is None else float(r)


def site_radius_ok(old: tuple[str, int], new: tuple[str, int], cn: int, tolerance: float) -> bool:
    """Goldschmidt's rule on one site of coordination ``cn``: |r_new − r_old| ≤ tolerance × r_old."""
    r_old = shannon_radius(old[0], old[1], cn)
    r_new = shannon_radius(new[0], new[1], cn)
    if r_old is None or r_new is None or r_old <= 0:
        return False
    return abs(r_new - r_old) <= tolerance * r_old


def tolerance_factor(a: tuple[str, int], b: tuple[str, int], anion: tuple[str, int] = ("O", -2)) -> float | None:
    """Goldschmidt's perovskite tolerance factor with Shannon radii (A 12-fold, B and X 6-fold)."""
    ra = shannon_radius(*a, 12)
    rb = shannon_radius(*b, 6)
    rx = shannon_radius(*anion, 6)
    if ra is None or rb is None or rx is None:
        return None
    return (ra + rx) / (math.sqrt(2.0) * (rb + rx))


def _oxidation_potential(symbol: str, ox: int) -> float | None:
    """Lowest potential of a couple that oxidises ``symbol``^``ox`` (None: not oxidisable)."""
    vals = [e for (el, hi, lo), e in REDOX_COUPLES.items() if el == symbol and lo == ox]
    return min(vals) if vals else None


def _reduction_potential(symbol: str, ox: int) -> float | None:
    """Highest potential of a couple that reduces ``symbol``^``ox`` (None: not reducible)."""
    vals = [e for (el, hi, lo), e in REDOX_COUPLES.items() if el == symbol and hi == ox]
    return max(vals) if vals else None


def oddities(species: dict[tuple[str, int], float], *, min_share: float = MIN_VALENCE_SHARE,
             redox_margin: float = REDOX_MARGIN_V) -> list[Oddity]:
    """The documented rules a composition with these (element, oxidation state) -> amount
    breaks; empty when it is not odd. Anions are not judged."""
    out: list[Oddity] = []
    cations = sorted(k for k, n in species.items() if k[1] > 0 and n > 0)
    for el, ox in cations:
        share = valence_share(el, ox)
        if share < min_share:
            out.append(Oddity("rare_valence", f"{el}{ox}+ is {share:.1%} of {el}'s cationic ICSD occurrences"))
    for red in cations:
        e_ox = _oxidation_potential(*red)
        if e_ox is None:
            continue
        for oxd in cations:
            if oxd[0] == red[0]:
                continue  # mixed valence of one element is comproportionation, not a pair
            e_red = _reduction_potential(*oxd)
            if e_red is not None and e_red - e_ox > redox_margin:
                out.append(Oddity("redox_pair", f"{red[0]}{red[1]}+ (E_ox {e_ox:+.2f} V) with "
                                                f"{oxd[0]}{oxd[1]}+ (E_red {e_red:+.2f} V)"))
    return out


def species_amounts(structure) -> dict[tuple[str, int], float]:
    """(element, integer oxidation state) -> number of sites of a decorated structure."""
    out: dict[tuple[str, int], float] = {}
    for sp, n in structure.composition.items():
        ox = getattr(sp, "oxi_state", None)
        if ox is None:
            raise ValueError(f"{sp} has no oxidation state")
        key = (sp.symbol, int(round(ox)))
        out[key] = out.get(key, 0.0) + float(n)
    return out


def coordination_numbers(structure: Structure, cation_idx: Sequence[int], anions: Collection[str],
                         *, stretch: float = 1.25) -> list[int]:
    """Anion neighbours of each cation site within ``stretch`` × its shortest cation-anion
    distance (the effective coordination a chemist counts; 0 when no anion lies within 4 Å)."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in cation_idx:
            neigh = [n.nn_distance for n in structure.get_neighbors(structure[i], 4.0)
                     if n.specie.symbol in anions]
            if not neigh:
                out.append(0)
                continue
            d0 = min(neigh)
            out.append(sum(1 for d in neigh if d <= stretch * d0 + 1e-6))
    return out


#: Pauling's radius-ratio bounds r_cation / r_anion: 8-fold needs at least 0.732; 6-fold lies in
#: 0.414-0.732, 4-fold in 0.225-0.414 (Pauling's first rule)
PAULING_CN8_MIN = 0.732
PAULING_RANGES = {4: (0.225, 0.414), 6: (0.414, 0.732)}


#: which Pauling bounds of :func:`perovskite_role_ok` the site tolerance widens
WIDEN_CHOICES = ("B", "B_lower", "all")


def perovskite_role_ok(role: str, ion: tuple[str, int], cn: int, anion: tuple[str, int] = ("O", -2),
                       tolerance: float = SITE_TOLERANCE, widen: str = "B") -> bool:
    """Whether ``ion`` may take a site of ``role`` in a perovskite-family cell (used by
    :mod:`perovskite_families`, whose placeholder ions carry no chemistry):

    * ``"A"`` (perovskite cavity) and ``"A'"`` (interlayer): large enough for 8-fold
      coordination, Shannon r(CN 8) / r_anion ≥ 0.732 (Pauling; excludes Li⁺, Mg²⁺, Mn²⁺, Fe²⁺,
      keeps Na⁺, Ca²⁺, La³⁺);
    * ``"B"``: r(CN ``cn``) / r_anion inside Pauling's range for the site's coordination (4-fold
      for tetrahedra, 6-fold for octahedra and the 5-fold pyramids), both ends widened by
      ``tolerance`` as Goldschmidt's rule is (Mn⁴⁺ octahedra sit at 0.38; Ba²⁺ at 0.96 is out).

    ``widen``: ``"B"`` (both B bounds, as above), ``"B_lower"`` (only the lower: Sr²⁺ at 0.84
    stays off octahedra) or ``"all"`` (also the A bound: Li⁺, Mg²⁺ may take A sites).
    """
    if widen not in WIDEN_CHOICES:
        raise ValueError(f"widen must be one of {WIDEN_CHOICES}, got {widen!r}")
    r_x = shannon_radius(anion[0], anion[1], 6)
    if not r_x:
        return False
    if role in ("A", "A'"):
        r = shannon_radius(ion[0], ion[1], 8)
        return r is not None and r / r_x >= PAULING_CN8_MIN * (1 - tolerance if widen == "all" else 1)
    if role != "B":
        raise ValueError(f"unknown perovskite site role {role!r}")
    r = shannon_radius(ion[0], ion[1], cn)
    lo, hi = PAULING_RANGES[4 if cn <= 4 else 6]
    return r is not None and lo * (1 - tolerance) <= r / r_x <= hi * (1 if widen == "B_lower" else 1 + tolerance)


def perovskite_tolerance_factor(a_sites: Sequence[tuple[tuple[str, int], float]],
                                b_sites: Sequence[tuple[tuple[str, int], float]],
                                anion: tuple[str, int] = ("O", -2)) -> float | None:
    """Goldschmidt's t of a cell with several A and B ions: the site-weighted mean Shannon radius
    of the A ions (12-fold) and of the B ions (6-fold), ``[((element, ox), sites), ...]``."""
    rx = shannon_radius(anion[0], anion[1], 6)

    def mean(sites: Sequence[tuple[tuple[str, int], float]], cn: int) -> float | None:
        total = sum(n for _, n in sites)
        radii = [shannon_radius(el, ox, cn) for (el, ox), _ in sites]
        if not total or rx is None or any(r is None for r in radii):
            return None
        return sum(r * n for r, (_, n) in zip(radii, sites, strict=True)) / total

    ra, rb = mean(a_sites, 12), mean(b_sites, 6)
    if ra is None or rb is None:
        return None
    return (ra + rx) / (math.sqrt(2.0) * (rb + rx))
