"""A small hand-written Li-Mn-O world for the sim_lab physics tests (data, not code).

Energies: Materials Project formation energies (eV/atom) for the known phases; the hypothetical
target Li2Mn3O7 carries a CHGNet-derived energy just below the Li2MnO3-MnO2 tie line. Structures
are real CIFs shipped with sim_lab where they exist (only the XRD tests parse them).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

CIFS = resources.files("sim_lab") / "data" / "cifs"


def _cif(name: str) -> dict[str, str]:
    return {"cif": (CIFS / name).read_text(encoding="utf-8", errors="replace")}


def _hypothetical() -> dict[str, Any]:
    """A seeded packing for the hypothetical target (what the builder does with no template)."""
    from sim_lab.structures import random_packing  # tests may use the builder's helpers

    made = random_packing("Li2Mn3O7", seed=0)
    assert made is not None
    return {"pymatgen": made[0].as_dict()}


def phase(formula: str, e: float, tm: float, cif: str = "TiO2_136.cif", kind: str = "known") -> dict[str, Any]:
    return {
        "formula": formula,
        "kind": kind,
        "e_form_ev_per_atom": e,
        "melting_point_c": tm,
        "structure": _cif(cif),
        "source": {"energy": "Materials Project (test copy)", "structure": cif},
    }


def toy_world_dict() -> dict[str, Any]:
    return {
        "format": "synthloop-world/1",
        "name": "toy-li-mn-o",
        "systems": ["Li-Mn-O"],
        "phases": [
            phase("Li2O", -2.07151, 1438, "Li2O_225.cif"),
            phase("MnO2", -1.81057, 535, "MnO2_136.cif"),
            phase("Mn2O3", -2.02802, 888, "Mn2O3_206.cif"),
            phase("Mn3O4", -2.06344, 1567, "Mn3O4_141.cif"),
            phase("MnO", -2.00045, 1945, "MnO_225.cif"),
            phase("Li2MnO3", -2.18585, 1366, "Li2MnO3_12.cif"),
            phase("LiMnO2", -2.15838, 1400, "LiMnO2_59.cif"),
            {**phase("Li2Mn3O7", -2.03877, 1481, kind="hypothetical"), "structure": _hypothetical()},
            phase("Li2CO3", -2.2603, 723, "Li2CO3_15.cif"),
            phase("LiOH", -1.8382, 462, "LiOH_129.cif"),
        ],
        "precursors": [
            {"formula": "Li2CO3", "decomposition": {"temperature_c": 700, "products": {"Li2O": 1, "CO2": 1}}},
            {"formula": "LiOH", "decomposition": {"temperature_c": 430, "products": {"Li2O": 0.5, "H2O": 0.5}}},
            {"formula": "MnO2"},
            {"formula": "Mn2O3"},
        ],
        "targets": [{"formula": "Li2Mn3O7"}],
        "volatility": [
            {"element": "Li", "oxide": "Li2O", "onset_c": 850, "rate_per_h": 0.006, "doubling_c": 70}
        ],
    }
