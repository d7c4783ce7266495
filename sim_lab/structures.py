"""Crystal structures for world phases: real CIFs first, else prototype decoration + volume scaling.

Why decoration: the XRD station needs *a* structure for every phase, and the controller's XRD
analysis needs the same public structure for known phases. Where no real CIF ships, a template
with the same anonymised formula (Alexandria sample or a textbook prototype) is decorated with the
phase's elements (matched by amount, then electronegativity) and its volume scaled by the ratio
of summed cubed ionic radii. Every structure records how it was made.
"""

from __future__ import annotations

import warnings
import zlib
from functools import lru_cache

import numpy as np
from pymatgen.core import Composition, Element, Structure

from .chemistry import ionic_radius, reference_cifs, templates


def _ordered_species(comp: Composition) -> list[str]:
    """Species ordered by (amount in the reduced formula, electronegativity)."""
    red = comp.element_composition.reduced_composition
    return [
        el.symbol
        for el, _ in sorted(red.items(), key=lambda kv: (kv[1], kv[0].X if kv[0].X == kv[0].X else 0))
    ]


def _volume_factor(src: Composition, dst: Composition) -> float:
    def size(c: Composition) -> float:
        return sum(amt * ionic_radius(el.symbol) ** 3 for el, amt in c.items())

    return size(dst.reduced_composition) / size(src.reduced_composition)


def decorate(template: Structure, formula: str) -> tuple[Structure, dict[str, str]]:
    """Replace the template's species by ``formula``'s (same anonymised formula) and scale volume."""
    src = template.composition
    dst = Composition(formula)
    if src.reduced_composition.anonymized_formula != dst.reduced_composition.anonymized_formula:
        raise ValueError(f"template {src.reduced_formula} cannot carry {formula}")
    mapping = dict(zip(_ordered_species(src), _ordered_species(dst), strict=True))
    s = template.copy()
    s.replace_species({Element(a): Element(b) for a, b in mapping.items()})
    s.scale_lattice(packed_volume(s.composition))
    return s, mapping


@lru_cache(maxsize=4096)
def _parsed(text: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = Structure.from_str(text, fmt="cif")
    s.remove_oxidation_states()
    return s


def _quiet_cif(text: str) -> Structure:
    return _parsed(text).copy()


def known_structure(formula: str, spg: int | None = None) -> tuple[Structure, str] | None:
    """Structure and provenance for a known phase, or None when no CIF or template fits."""
    key = Composition(formula).reduced_formula
    cifs = reference_cifs().get(key, [])
    if cifs:
        pick = next((c for c in cifs if spg and c[0] == spg), cifs[0])
        s = _quiet_cif(pick[2])
        if s.composition.reduced_formula == key:
            return s, f"reference CIF {pick[1]} (XRD-AutoAnalyzer / Dara examples, MIT)"
    return templated_structure(key) or random_packing(key)


MAX_RANDOM_ATOMS = 24


def random_packing(formula: str, seed: int = 0) -> tuple[Structure, str] | None:
    """Last resort for a phase no CIF or template fits: a seeded P-1 packing (Z=2).

    Why: a phase missing from the world would change its thermodynamics; a plausible cell with
    sensible interatomic distances and density gives it a distinct, stable XRD signature.
    Formulas over ``MAX_RANDOM_ATOMS`` atoms are not built (the caller omits the phase).
    """
    comp = Composition(formula).reduced_composition
    if comp.num_atoms > MAX_RANDOM_ATOMS or any(abs(a - round(a)) > 1e-6 for a in comp.values()):
        return None
    from pymatgen.core import Lattice

    rng = np.random.default_rng([seed, zlib.crc32(comp.reduced_formula.encode())])
    volume = 2 * packed_volume(comp)
    species = [el.symbol for el, amt in sorted(comp.items(), key=lambda kv: -ionic_radius(kv[0].symbol))
               for _ in range(int(round(amt)))]
    for _attempt in range(60):
        angles = rng.uniform(80, 100, size=3)
        ratios = rng.uniform(0.85, 1.15, size=3)
        lat = Lattice.from_parameters(*(ratios / np.prod(ratios) ** (1 / 3)), *angles)
        lat = lat.scale(volume)
        coords: list[np.ndarray] = []
        placed: list[str] = []
        ok = True
        for sp in species:
            for _try in range(400):
                x = rng.random(3)
                trial = coords + [x, -x]
                s = Structure(lat, placed + [sp, sp], [c % 1 for c in trial])
                d = s.distance_matrix
                n = len(s)
                radii = np.array([ionic_radius(e.specie.symbol) for e in s])
                need = 0.8 * (radii[:, None] + radii[None, :])
                np.fill_diagonal(d, 99.0)
                if (d[n - 2 :, :] >= need[n - 2 :, :]).all():
                    coords, placed = trial, placed + [sp, sp]
                    break
            else:
                ok = False
                break
        if ok:
            s = Structure(lat, placed, [c % 1 for c in coords])
            return s, "random P-1 packing (Z=2) at ionic-volume density: no CIF or template fits"
    return None


def templated_structure(formula: str) -> tuple[Structure, str] | None:
    """Decorate the best template with the same anonymised formula (deterministic choice).

    Preference: a textbook prototype, then a real CIF of another chemistry, then an Alexandria
    structure; within each, the one whose sites' sizes best match (smallest radius mismatch).
    """
    comp = Composition(formula)
    anon = comp.reduced_composition.anonymized_formula
    options: list[tuple[float, Structure, str]] = []
    for red, entries in reference_cifs().items():
        if Composition(red).anonymized_formula == anon and red != comp.reduced_formula:
            s = _quiet_cif(entries[0][2])
            options.append((_mismatch(s.composition, comp), s, f"reference CIF {entries[0][1]}"))
    for t in templates().get(anon, []):
        s = _quiet_cif(t["cif"])
        bonus = -5.0 if t["id"].startswith("prototype:") else 1.0
        options.append((_mismatch(s.composition, comp) + bonus, s, f"template {t['id']}"))
    if not options:
        return None
    options.sort(key=lambda o: o[0])
    _, tmpl, label = options[0]
    s, mapping = decorate(tmpl, formula)
    how = (
        f"prototype decoration of {label} ({tmpl.composition.reduced_formula}, anonymised {anon}); "
        f"species {mapping}; volume set to summed ionic volumes / packing 0.59"
    )
    return s, how


def _mismatch(src: Composition, dst: Composition) -> float:
    a = [ionic_radius(e) for e in _ordered_species(src)]
    b = [ionic_radius(e) for e in _ordered_species(dst)]
    return float(sum(abs(x - y) for x, y in zip(a, b, strict=True)))


def substitute(parent: Structure, swaps: dict[str, str]) -> Structure:
    """Element substitution on a parent structure, volume scaled like decoration."""
    s = parent.copy()
    s.replace_species({Element(a): Element(b) for a, b in swaps.items()})
    s.scale_lattice(parent.volume * _volume_factor(parent.composition, s.composition))
    return s


PACKING = 0.59  # ionic volume / cell volume; fits MgO, TiO2, Al2O3 within a few per cent


def packed_volume(comp: Composition) -> float:
    """Cell volume from Shannon-type average ionic radii at a fixed packing fraction."""
    return sum(amt * 4.18879 * ionic_radius(el.symbol) ** 3 for el, amt in comp.items()) / PACKING


def perturb(structure: Structure, seed: int, *, strain: float = 0.015, displacement: float = 0.03) -> Structure:
    """A seeded distortion: the true structure differs from an ideal substitution, as in reality."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(structure.composition.reduced_formula.encode())])
    s = structure.copy()
    eps = rng.uniform(-strain, strain, size=3)
    s.apply_strain(eps.tolist())
    for i in range(len(s)):
        s.translate_sites([i], rng.normal(0, displacement, size=3).tolist(), frac_coords=False)
    return s


def experimental_structure(
    computed: Structure,
    seed: int,
    *,
    volume_shrink: tuple[float, float] = (0.01, 0.04),
    anisotropy: float = 0.012,
    displacement: float = 0.02,
    reorder_probability: float = 0.15,
) -> tuple[Structure, dict[str, object]]:
    """The lab's true structure of a phase whose *computed* structure is ``computed``.

    Why: an experimental cell differs from a computed one the way experiment differs from
    GGA-level computation (CHGNet is trained on PBE/PBE+U, which overestimates cell volumes by a
    few per cent): the volume is ``volume_shrink`` smaller, the axes strained independently by up
    to ``anisotropy``, atoms displaced by ``displacement`` A (rms); and now and then (probability
    ``reorder_probability``, where the cell has at least two sites of each of two cation species)
    the cations order differently: one pair of unlike cation sites is swapped. Seeded by
    (seed, formula). Returns the structure and what was done to it.
    """
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(computed.composition.reduced_formula.encode()), 7])
    s = computed.copy()
    shrink = float(rng.uniform(*volume_shrink))
    eps = rng.uniform(-anisotropy, anisotropy, size=3)
    eps = eps - eps.mean() + ((1 - shrink) ** (1 / 3) - 1)
    s.apply_strain(eps.tolist())
    for i in range(len(s)):
        s.translate_sites([i], rng.normal(0, displacement / np.sqrt(3), size=3).tolist(), frac_coords=False)
    how: dict[str, object] = {"volume_change": round(s.volume / computed.volume - 1, 4),
                              "axis_strain": [round(float(e), 4) for e in eps], "reordered": None}
    if rng.random() < reorder_probability:
        counts: dict[str, list[int]] = {}
        for i, site in enumerate(s):
            sym = site.specie.symbol
            if sym != "O":
                counts.setdefault(sym, []).append(i)
        many = sorted(el for el, idx in counts.items() if len(idx) >= 2)
        if len(many) >= 2:
            a, b = (many[i] for i in rng.choice(len(many), 2, replace=False))
            i, j = int(rng.choice(counts[a])), int(rng.choice(counts[b]))
            s.replace(i, b, s[i].frac_coords)
            s.replace(j, a, s[j].frac_coords)
            how["reordered"] = f"{a}/{b} antisite pair (sites {i}, {j})"
    return s, how
