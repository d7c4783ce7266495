"""Structure-type search: a made target whose offered structure is absent or wrong is not read
as 0 %, and a target that is not there is not invented (issue 21 / 19).

The 'true' product is the K2NiF4-type prototype decorated as Ba2TiO4 and distorted (c +3 %,
a -1.5 %, as a relaxed compound differs from a decorated prototype); the test generator
(simulate.py, its own profile law) renders it with rutile.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from controller.xrd import AnalysisSettings, ReferencePhase, XrdAnalysisError, analyze, load_phase
from controller.xrd.simulate import simulate_mixture
from surrogates import template_library

SETTINGS = AnalysisSettings(allow_structureless_target=True)


def _true_ba2tio4() -> Structure:
    tpl = next(t for t in template_library() if t["id"] == "K2NiF4 Sr2TiO4")
    s = Structure.from_dict(tpl["structure"])
    s.replace_species({"Sr": "Ba"})
    s.scale_lattice(s.volume * 1.09)
    mat = np.asarray(s.lattice.matrix) * np.array([0.985, 0.985, 1.03])[:, None]
    return Structure(Lattice(mat), s.species, s.frac_coords)


@pytest.fixture(scope="module")
def rutile() -> ReferencePhase:
    return load_phase("TiO2_136")


def test_target_without_structure_is_found_by_its_structure_type(rutile: ReferencePhase) -> None:
    true = ReferencePhase.from_structure(_true_ba2tio4(), "Ba2TiO4")
    pattern = simulate_mixture([true, rutile], [0.7, 0.3], seed=3)
    res = analyze(pattern, [rutile], target="Ba2TiO4", settings=SETTINGS)
    st = res.structure_type
    assert st is not None and st["trigger"].startswith("no candidate structure")
    assert st["family"] == "prototype K2NiF4 Sr2TiO4" and st["used_for_yield"]
    assert st["space_group"] == "I4/mmm"
    assert res.target_yield == pytest.approx(0.7, abs=0.1)
    assert res.weight_fractions()["TiO2_136"] == pytest.approx(0.3, abs=0.1)
    assert res.to_dict()["structure_type"]["fit_gain"] > st["threshold"]
    # without the search the same call is an error (a typo must not silently read as 0 %)
    with pytest.raises(XrdAnalysisError, match="not among the candidate phases"):
        analyze(pattern, [rutile], target="Ba2TiO4",
                settings=replace(SETTINGS, allow_structureless_target=False))


def test_absent_target_is_not_invented(rutile: ReferencePhase) -> None:
    anatase = load_phase("TiO2_141")
    pattern = simulate_mixture([rutile, anatase], [0.6, 0.4], seed=4)
    res = analyze(pattern, [rutile, anatase], target="Ba2TiO4", settings=SETTINGS)
    assert res.target_yield == 0.0
    assert res.structure_type is None or not res.structure_type["used_for_yield"]
