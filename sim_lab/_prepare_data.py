"""Development-time only: regenerate sim_lab/data/ from ../shared/data (never run by the package).

Writes
* ``data/mp_e_form_oxides.json.bz2``: the lowest Materials Project formation energy (eV/atom)
  and its space group for every composition made of the elements the builder supports
  (from Matbench ``matbench_mp_e_form``, MIT; data Materials Project, CC BY 4.0).
* ``data/templates.json.bz2``: prototype structures for decoration (Alexandria random 1k,
  CC BY 4.0, via mattersim, MIT), as CIF text keyed by anonymised formula.
Reference CIFs (XRD-AutoAnalyzer / Dara examples, MIT) are copied to ``data/cifs/`` by hand.

Usage: ``python -m sim_lab._prepare_data ../shared/data``
"""

from __future__ import annotations

import bz2
import gzip
import json
import sys
from pathlib import Path

from pymatgen.core import Composition

HERE = Path(__file__).resolve().parent / "data"
ELEMENTS = set(
    "Li Na K Rb Cs Be Mg Ca Sr Ba Sc Y La Ce Pr Nd Sm Gd Ti Zr Hf V Nb Ta Cr Mo W Mn Fe Co Ni Cu Zn "
    "Al Ga In Si Ge Sn Pb Bi Sb P B C H N O F S".split()
)


def main(shared: Path) -> None:
    table = json.load(bz2.open(shared / "thermo" / "mp_e_form.json.bz2"))
    best: dict[str, tuple[float, int, str]] = {}
    for row, comp_text in table["composition"].items():
        comp = Composition(comp_text)
        if not {e.symbol for e in comp} <= ELEMENTS:
            continue
        key = comp.reduced_formula
        e = float(table["e_form"][row])
        if key not in best or e < best[key][0]:
            best[key] = (e, int(table["spg_num"][row]), table["mbid"][row])
    out = {
        "source": "Matbench matbench_mp_e_form (materialsproject/matbench, MIT); "
        "data Materials Project (CC BY 4.0). Lowest e_form per reduced formula.",
        "columns": ["e_form_ev_per_atom", "spg_num", "mbid"],
        "data": {k: list(v) for k, v in sorted(best.items())},
    }
    (HERE / "mp_e_form_oxides.json.bz2").write_bytes(bz2.compress(json.dumps(out).encode()))
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    templates = []
    with gzip.open(shared / "structures" / "alexandria-random-1k.xyz.gz", "rt") as fh:
        atoms_list = read(fh, index=":", format="extxyz")
    for atoms in atoms_list:
        s = AseAtomsAdaptor.get_structure(atoms)
        if len(s) > 40:
            continue
        templates.append(
            {
                "id": str(atoms.info.get("alexandria_id")),
                "anon": s.composition.reduced_composition.anonymized_formula,
                "formula": s.composition.reduced_formula,
                "cif": s.to(fmt="cif"),
            }
        )
    doc = {
        "source": "Alexandria database (CC BY 4.0) via mattersim 1.2.3 sdist (MIT): "
        "alexandria-random-1k, structures with <= 40 atoms",
        "templates": templates,
    }
    (HERE / "templates.json.bz2").write_bytes(bz2.compress(json.dumps(doc).encode()))
    print(len(best), "compositions;", len(templates), "templates")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
