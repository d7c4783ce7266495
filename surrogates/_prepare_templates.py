"""Build ``surrogates/data/templates.json.bz2``: public crystal structures used as templates
for candidate structures (prototype decoration of a wish-list composition, ``prototypes.py``).

Run once by a developer (``python -m surrogates._prepare_templates ../shared/data``); the
package only reads the shipped result. Sources (licences in ``data/README.md``): the 87 reference
CIFs of XRD-AutoAnalyzer and Dara (MIT), the Alexandria random-1k sample (CC BY 4.0, via mattersim,
MIT), and textbook oxide prototypes built from their space groups.
"""

from __future__ import annotations

import bz2
import gzip
import json
import sys
import warnings
from pathlib import Path

from pymatgen.core import Lattice, Structure

HERE = Path(__file__).with_name("data")

PROTOTYPES = [  # name, space group, a b c, angles, species, Wyckoff representatives
    ("rocksalt MgO", "Fm-3m", [4.21] * 3, [90] * 3, ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    ("rutile TiO2", "P4_2/mnm", [4.59, 4.59, 2.96], [90] * 3, ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]),
    ("corundum Al2O3", "R-3c", [4.76, 4.76, 12.99], [90, 90, 120], ["Al", "O"],
     [[0, 0, 0.352], [0.306, 0, 0.25]]),
    ("perovskite SrTiO3", "Pm-3m", [3.905] * 3, [90] * 3, ["Sr", "Ti", "O"],
     [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]]),
    # origin choice 1 (pymatgen's Fd-3m setting): Mg 8a (0,0,0), Al 16d (5/8,5/8,5/8), O 32e
    # u = 0.3874 (0.2624 + 1/8 in origin choice 2). Origin-2 coordinates here once gave
    # "Mg2AlO4" with O-O at 0.28 A, which a potential's relaxation turned into fused atoms
    ("spinel MgAl2O4", "Fd-3m", [8.08] * 3, [90] * 3, ["Mg", "Al", "O"],
     [[0, 0, 0], [0.625, 0.625, 0.625], [0.3874, 0.3874, 0.3874]]),
    ("fluorite CeO2", "Fm-3m", [5.41] * 3, [90] * 3, ["Ce", "O"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
    ("K2NiF4 Sr2TiO4", "I4/mmm", [3.88, 3.88, 12.6], [90] * 3, ["Sr", "Ti", "O", "O"],
     [[0, 0, 0.355], [0, 0, 0], [0, 0.5, 0], [0, 0, 0.16]]),
    ("ilmenite FeTiO3", "R-3", [5.09, 5.09, 14.09], [90, 90, 120], ["Fe", "Ti", "O"],
     [[0, 0, 0.355], [0, 0, 0.146], [0.317, 0.02, 0.245]]),
    ("olivine Mg2SiO4", "Pnma", [10.2, 5.98, 4.76], [90] * 3, ["Mg", "Mg", "Si", "O", "O", "O"],
     [[0, 0, 0], [0.277, 0.25, 0.991], [0.094, 0.25, 0.427], [0.092, 0.25, 0.766],
      [0.448, 0.25, 0.221], [0.163, 0.033, 0.278]]),
]


def _entry(kind: str, ident: str, s: Structure) -> dict:
    s = s.copy()
    s.remove_oxidation_states()
    red = s.composition.reduced_composition
    return {"kind": kind, "id": ident, "formula": red.reduced_formula, "anon": red.anonymized_formula,
            "structure": s.as_dict()}


def main(shared: Path) -> None:
    out = []
    for name, sg, abc, angles, species, coords in PROTOTYPES:
        s = Structure.from_spacegroup(sg, Lattice.from_parameters(*abc, *angles), species, coords)
        out.append(_entry("prototype", name, s))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cif in sorted((shared / "xrd" / "reference_cifs").glob("*.cif")):
            try:
                s = Structure.from_file(cif)
            except Exception as exc:  # noqa: BLE001 - report and skip a CIF pymatgen cannot read
                print(f"skip {cif.name}: {exc}")
                continue
            if s.is_ordered and len(s) <= 60:
                out.append(_entry("cif", cif.stem, s))
        from ase.io import read
        from pymatgen.io.ase import AseAtomsAdaptor

        with gzip.open(shared / "structures" / "alexandria-random-1k.xyz.gz", "rt") as fh:
            for atoms in read(fh, index=":", format="extxyz"):
                s = AseAtomsAdaptor.get_structure(atoms)
                if len(s) <= 40:
                    out.append(_entry("alexandria", str(atoms.info.get("alexandria_id")), s))
    HERE.mkdir(exist_ok=True)
    doc = {"source": "see README.md", "templates": out}
    (HERE / "templates.json.bz2").write_bytes(bz2.compress(json.dumps(doc).encode()))
    print(len(out), "templates")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
