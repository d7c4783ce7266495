"""Reference chemistry the world builder draws on: shipped data tables and small curated facts.

Why curated tables here: melting points, decomposition temperatures and the precursor shelf are
textbook facts (CRC Handbook values, rounded) that no DFT table holds; the builder copies them
into each world file so a world stays self-describing and editable.
"""

from __future__ import annotations

import bz2
import json
import warnings
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pymatgen.core import Composition, Element, Structure

#: Melting (or decomposition) points of binary oxides and common precursors, C (CRC, rounded).
MELTING_C: dict[str, float] = {
    "Li2O": 1438, "Na2O": 1132, "K2O": 740, "MgO": 2852, "CaO": 2613, "SrO": 2531, "BaO": 1923,
    "TiO2": 1843, "ZrO2": 2715, "HfO2": 2758, "V2O5": 690, "VO2": 1967, "V2O3": 1940,
    "Nb2O5": 1512, "Ta2O5": 1872, "MoO3": 795, "MoO2": 1100, "WO3": 1473, "MnO2": 535,
    "Mn2O3": 888, "Mn3O4": 1567, "MnO": 1945, "Fe2O3": 1565, "Fe3O4": 1597, "FeO": 1377,
    "Co3O4": 895, "CoO": 1933, "NiO": 1955, "CuO": 1326, "Cu2O": 1235, "ZnO": 1975,
    "Al2O3": 2072, "Ga2O3": 1900, "Cr2O3": 2435, "La2O3": 2315, "Y2O3": 2425, "Bi2O3": 817,
    "PbO": 888, "SnO2": 1630, "SiO2": 1713, "P2O5": 562, "B2O3": 450, "Sb2O3": 656,
    "In2O3": 1910, "Sc2O3": 2485, "CeO2": 2400, "Li2O2": 340,
    "Li2CO3": 723, "Na2CO3": 851, "K2CO3": 891, "CaCO3": 1339, "SrCO3": 1494, "BaCO3": 1555,
    "MgCO3": 990, "MnCO3": 800, "LiOH": 462, "NaOH": 318, "LiNO3": 255, "NH4H2PO4": 190,
    "(NH4)2HPO4": 155, "Li3PO4": 1205, "LiH2PO4": 410, "NaNO3": 308, "KNO3": 334,
    "Sr(NO3)2": 570, "Ba(NO3)2": 592, "Ca(OH)2": 580, "Mg(OH)2": 350, "CoCO3": 400, "NiCO3": 400,
    "ZnCO3": 300, "La(OH)3": 600, "Cu(OH)2": 200, "CrO3": 197,
}

#: The precursor shelf: per cation, the powders a lab keeps, and how the salts decompose
#: (effective onset in a mixture, C; products per formula unit). Oxides do not need a rule:
#: their redox in air follows the oxygen chemical potential of the physics model.
SHELF: dict[str, list[str]] = {
    "Li": ["Li2CO3", "LiOH", "LiNO3"], "Na": ["Na2CO3"], "K": ["K2CO3"], "Mg": ["MgO", "MgCO3"],
    "Ca": ["CaCO3", "CaO"], "Sr": ["SrCO3"], "Ba": ["BaCO3", "BaO"], "Ti": ["TiO2"],
    "Zr": ["ZrO2"], "Hf": ["HfO2"], "V": ["V2O5", "VO2"], "Nb": ["Nb2O5"], "Ta": ["Ta2O5"],
    "Mo": ["MoO3"], "W": ["WO3"], "Mn": ["MnO2", "Mn2O3", "MnO"], "Fe": ["Fe2O3", "Fe3O4"],
    "Co": ["Co3O4", "CoO"], "Ni": ["NiO"], "Cu": ["CuO", "Cu2O"], "Zn": ["ZnO"],
    "Al": ["Al2O3"], "Ga": ["Ga2O3"], "Cr": ["Cr2O3"], "La": ["La2O3"], "Y": ["Y2O3"],
    "Bi": ["Bi2O3"], "Pb": ["PbO"], "Sn": ["SnO2"], "Si": ["SiO2"], "P": ["NH4H2PO4", "(NH4)2HPO4"],
    "Sb": ["Sb2O3"], "In": ["In2O3"], "Sc": ["Sc2O3"], "Ce": ["CeO2"], "B": ["B2O3"],
}

#: More powders a solid-state lab keeps (hydroxides, nitrates, other carbonates and oxides):
#: ``build_world(shelf="wide")`` adds them. Why: with one powder per cation most targets have
#: one precursor set, and the choice of precursors cannot matter (A-Lab used 2-6 per cation).
SHELF_WIDE_EXTRA: dict[str, list[str]] = {
    "Na": ["NaOH", "NaNO3"], "K": ["KNO3"], "Sr": ["Sr(NO3)2"], "Ba": ["Ba(NO3)2"],
    "Ca": ["Ca(OH)2"], "Mg": ["Mg(OH)2"], "Mn": ["MnCO3"], "Co": ["CoCO3"], "Ni": ["NiCO3"],
    "Zn": ["ZnCO3"], "Mo": ["MoO2"], "V": ["V2O3"], "La": ["La(OH)3"], "Cu": ["Cu(OH)2"],
    "Cr": ["CrO3"],
}

DECOMPOSITION: dict[str, tuple[float, dict[str, float]]] = {
    "Li2CO3": (700, {"Li2O": 1, "CO2": 1}),
    "Na2CO3": (780, {"Na2O": 1, "CO2": 1}),
    "K2CO3": (760, {"K2O": 1, "CO2": 1}),
    "CaCO3": (700, {"CaO": 1, "CO2": 1}),
    "SrCO3": (860, {"SrO": 1, "CO2": 1}),
    "BaCO3": (900, {"BaO": 1, "CO2": 1}),
    "MgCO3": (400, {"MgO": 1, "CO2": 1}),
    "MnCO3": (350, {"MnO": 1, "CO2": 1}),
    "LiOH": (430, {"Li2O": 0.5, "H2O": 0.5}),
    "NaOH": (450, {"Na2O": 0.5, "H2O": 0.5}),
    "LiNO3": (600, {"Li2O": 0.5, "NO2": 1, "O2": 0.25}),
    "NH4H2PO4": (200, {"P2O5": 0.5, "NH3": 1, "H2O": 1.5}),
    "(NH4)2HPO4": (180, {"P2O5": 0.5, "NH3": 2, "H2O": 1.5}),
    "NaNO3": (600, {"Na2O": 0.5, "NO2": 1, "O2": 0.25}),
    "KNO3": (650, {"K2O": 0.5, "NO2": 1, "O2": 0.25}),
    "Sr(NO3)2": (600, {"SrO": 1, "NO2": 2, "O2": 0.5}),
    "Ba(NO3)2": (620, {"BaO": 1, "NO2": 2, "O2": 0.5}),
    "Ca(OH)2": (480, {"CaO": 1, "H2O": 1}),
    "Mg(OH)2": (380, {"MgO": 1, "H2O": 1}),
    "CoCO3": (350, {"CoO": 1, "CO2": 1}),
    "NiCO3": (320, {"NiO": 1, "CO2": 1}),
    "ZnCO3": (300, {"ZnO": 1, "CO2": 1}),
    "La(OH)3": (550, {"La2O3": 0.5, "H2O": 1.5}),
    "Cu(OH)2": (200, {"CuO": 1, "H2O": 1}),
}

# every table is keyed by pymatgen's reduced formula (NH4H2PO4 is "PH6NO4" there)
MELTING_C = {Composition(k).reduced_formula: v for k, v in MELTING_C.items()}
SHELF = {el: [Composition(f).reduced_formula for f in fs] for el, fs in SHELF.items()}
SHELF_WIDE_EXTRA = {el: [Composition(f).reduced_formula for f in fs] for el, fs in SHELF_WIDE_EXTRA.items()}
DECOMPOSITION = {Composition(k).reduced_formula: v for k, v in DECOMPOSITION.items()}

#: Volatile oxides (element, oxide, onset C, rate per hour at onset, doubling C).
VOLATILE: list[tuple[str, str, float, float, float]] = [
    ("Li", "Li2O", 850, 0.006, 70),
    ("Na", "Na2O", 850, 0.008, 70),
    ("K", "K2O", 800, 0.012, 70),
    ("Mo", "MoO3", 700, 0.02, 60),
    ("Bi", "Bi2O3", 800, 0.01, 60),
    ("Pb", "PbO", 750, 0.015, 60),
]

#: Element swaps that keep the oxidation state (how campaigns enumerate by substitution).
SUBSTITUTIONS: dict[str, list[str]] = {
    "Li": ["Na"], "Na": ["Li", "K"], "K": ["Na", "Rb"], "Mg": ["Zn", "Co", "Ni", "Ca"],
    "Zn": ["Mg", "Co", "Cu"], "Ca": ["Sr", "Mg"], "Sr": ["Ca", "Ba"], "Ba": ["Sr"],
    "Ti": ["Zr", "Sn", "Ge"], "Zr": ["Ti", "Hf"], "V": ["Nb", "P", "As"], "Nb": ["V", "Ta"],
    "Ta": ["Nb"], "Mo": ["W", "Cr"], "W": ["Mo"], "Mn": ["Fe", "Co", "Mg"],
    "Fe": ["Mn", "Co", "Al", "Cr", "Ga"], "Co": ["Ni", "Fe", "Mg"], "Ni": ["Co", "Mg"],
    "Cu": ["Zn", "Ni"], "Al": ["Ga", "Fe"], "Cr": ["Fe", "Al"], "La": ["Y", "Bi", "Nd"],
    "Y": ["La", "Gd"], "Bi": ["La", "Sb"], "P": ["V", "As"], "Ga": ["Al", "Fe"],
}


def _data_path(name: str) -> Path:
    return Path(str(resources.files("sim_lab") / "data" / name))


@cache
def mp_table() -> dict[str, tuple[float, int, str]]:
    """Lowest MP formation energy (eV/atom), space group and Matbench id per reduced formula."""
    doc = json.loads(bz2.decompress(_data_path("mp_e_form_oxides.json.bz2").read_bytes()))
    return {k: (float(v[0]), int(v[1]), str(v[2])) for k, v in doc["data"].items()}


MP_ATTRIBUTION = (
    "Materials Project formation energies (CC BY 4.0) via Matbench matbench_mp_e_form "
    "(materialsproject/matbench, MIT)"
)


@cache
def reference_cifs() -> dict[str, list[tuple[int, str, str]]]:
    """Shipped real CIFs: reduced formula -> [(space group, file name, CIF text)]."""
    out: dict[str, list[tuple[int, str, str]]] = {}
    folder = _data_path("cifs")
    for path in sorted(folder.glob("*.cif")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                struct = Structure.from_file(path)
        except Exception:  # a CIF pymatgen cannot read is simply not offered
            continue
        if not struct.is_ordered:  # disordered sites cannot carry a stoichiometric phase
            continue
        stem = path.stem.replace("_sym", "")
        spg = int(stem.rsplit("_", 1)[1]) if stem.rsplit("_", 1)[-1].isdigit() else 0
        out.setdefault(struct.composition.reduced_formula, []).append(
            (spg, path.name, path.read_text(encoding="utf-8", errors="replace"))
        )
    return out


@cache
def templates() -> dict[str, list[dict[str, Any]]]:
    """Prototype structures by anonymised formula (Alexandria sample + hand-made prototypes)."""
    doc = json.loads(bz2.decompress(_data_path("templates.json.bz2").read_bytes()))
    out: dict[str, list[dict[str, Any]]] = {}
    for t in doc["templates"]:
        out.setdefault(t["anon"], []).append(t)
    for t in _hand_prototypes():
        out.setdefault(t["anon"], []).insert(0, t)
    return out


def _hand_prototypes() -> list[dict[str, Any]]:
    """Classic oxide prototypes built from their space groups (textbook Wyckoff positions)."""
    protos = [
        ("rocksalt MgO", "Fm-3m", [4.21] * 3, [90] * 3, ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        ("rutile TiO2", "P4_2/mnm", [4.59, 4.59, 2.96], [90] * 3, ["Ti", "O"],
         [[0, 0, 0], [0.305, 0.305, 0]]),
        ("corundum Al2O3", "R-3c", [4.76, 4.76, 12.99], [90, 90, 120], ["Al", "O"],
         [[0, 0, 0.352], [0.306, 0, 0.25]]),
        ("perovskite SrTiO3", "Pm-3m", [3.905] * 3, [90] * 3, ["Sr", "Ti", "O"],
         [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]]),
        ("spinel MgAl2O4", "Fd-3m", [8.08] * 3, [90] * 3, ["Mg", "Al", "O"],
         [[0.125, 0.125, 0.125], [0.5, 0.5, 0.5], [0.2624, 0.2624, 0.2624]]),
        ("fluorite CeO2", "Fm-3m", [5.41] * 3, [90] * 3, ["Ce", "O"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
        ("antifluorite Li2O", "Fm-3m", [4.61] * 3, [90] * 3, ["O", "Li"],
         [[0, 0, 0], [0.25, 0.25, 0.25]]),
        ("wurtzite ZnO", "P6_3mc", [3.25, 3.25, 5.21], [90, 90, 120], ["Zn", "O"],
         [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]]),
        ("bixbyite Y2O3", "Ia-3", [10.6] * 3, [90] * 3, ["Y", "Y", "O"],
         [[0.25, 0.25, 0.25], [0.968, 0, 0.25], [0.391, 0.152, 0.380]]),
        ("K2NiF4 Sr2TiO4", "I4/mmm", [3.88, 3.88, 12.6], [90] * 3, ["Sr", "Ti", "O", "O"],
         [[0, 0, 0.355], [0, 0, 0], [0, 0.5, 0], [0, 0, 0.16]]),
        ("olivine Mg2SiO4", "Pnma", [10.2, 5.98, 4.76], [90] * 3, ["Mg", "Mg", "Si", "O", "O", "O"],
         [[0, 0, 0], [0.277, 0.25, 0.991], [0.094, 0.25, 0.427], [0.092, 0.25, 0.766],
          [0.448, 0.25, 0.221], [0.163, 0.033, 0.278]]),
        ("ilmenite FeTiO3", "R-3", [5.09, 5.09, 14.09], [90, 90, 120], ["Fe", "Ti", "O"],
         [[0, 0, 0.355], [0, 0, 0.146], [0.317, 0.02, 0.245]]),
        ("olivine LiFePO4", "Pnma", [10.33, 6.01, 4.69], [90] * 3, ["Li", "Fe", "P", "O", "O", "O"],
         [[0, 0, 0], [0.282, 0.25, 0.975], [0.095, 0.25, 0.418], [0.097, 0.25, 0.743],
          [0.457, 0.25, 0.206], [0.166, 0.046, 0.285]]),
    ]
    out = []
    for name, sg, abc, angles, species, coords in protos:
        from pymatgen.core import Lattice

        lat = Lattice.from_parameters(*abc, *angles)
        s = Structure.from_spacegroup(sg, lat, species, coords)
        out.append(
            {
                "id": f"prototype:{name}",
                "anon": s.composition.reduced_composition.anonymized_formula,
                "formula": s.composition.reduced_formula,
                "cif": s.to(fmt="cif"),
            }
        )
    return out


def ionic_radius(symbol: str) -> float:
    """A size for volume scaling: average ionic radius, else atomic radius (angstrom)."""
    el = Element(symbol)
    r = el.average_ionic_radius
    if r and float(r) > 0:
        return float(r)
    return float(el.atomic_radius or 1.0)


def estimate_melting_c(formula: str) -> float:
    """Known value, else a cation-weighted mean of the binary oxides' melting points x 0.85.

    Why: ternary oxides usually melt below their end members; the Tamman temperature only
    needs the right scale (hundreds of degrees), not the exact value.
    """
    comp = Composition(formula)
    key = comp.reduced_formula
    if key in MELTING_C:
        return float(MELTING_C[key])
    cations = {el.symbol: amt for el, amt in comp.items() if el.symbol != "O"}
    total = sum(cations.values())
    if not total:
        return 1000.0
    acc = 0.0
    for el, amt in cations.items():
        # the element's most refractory binary oxide sets its scale (MnO2's 535 C is a
        # decomposition point, not a melting point)
        oxides = [tm for f, tm in MELTING_C.items() if {x.symbol for x in Composition(f)} == {el, "O"}]
        tm = max(oxides) if oxides else 1200.0
        acc += amt / total * tm
    return round(0.85 * acc, 0)
