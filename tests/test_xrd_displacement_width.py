"""Sample displacement and side-phase width bounds in product analyses (issue 21)."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from xrd_cells import rocksalt, spinel_like

from controller.xrd import AnalysisSettings, ReferencePhase, analyze, simulate_mixture


def _wurtzite(a: float, c: float) -> Structure:
    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(a, c), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.38]])


def test_sample_displacement_is_recovered_and_the_cell_stays_right() -> None:
    """A specimen 0.6 deg off the focusing circle (peaks shifted by 0.6 cos theta, as on the
    A-Lab scans whose expert refinements reach 2 EPS2 = 1 deg): the displacement model finds
    0.6 deg and the true cell; a zero shift held to +-0.3 deg (the default) cannot reach it and
    the cell absorbs the rest."""
    made = ReferencePhase.from_structure(spinel_like(8.08), "MgAl2O4")
    pattern = simulate_mixture([made], [1.0], seed=11, max_strain=0.0, max_zero=0.0,
                               displacement=0.6, fwhm=[0.12])
    cfg = AnalysisSettings(zero_range_deg=1.2, sample_displacement=True)
    res = analyze(pattern, [made], target="MgAl2O4", settings=cfg)
    assert res.zero_shift_deg == pytest.approx(0.6, abs=0.03)
    assert abs(res.phases[0].lattice_strain[0]) < 5e-4
    assert res.rwp < 0.06
    held = analyze(pattern, [made], target="MgAl2O4")
    assert held.zero_shift_deg == pytest.approx(0.3, abs=1e-6)  # at its bound
    assert abs(held.phases[0].lattice_strain[0]) > 1.5e-3  # the cell made up the rest
    # reported reflection positions carry the cos(theta) shift: (111) at 19.007 + 0.6 cos(9.5)
    t111 = np.degrees(2 * np.arcsin(1.5406 / (2 * 8.08 / np.sqrt(3))))
    expected = t111 + 0.6 * np.cos(np.radians(t111 / 2))
    assert res.phases[0].peaks[0] == pytest.approx(expected, abs=0.01)
    assert abs(held.phases[0].peaks[0] - expected) > 0.05


def test_a_mixture_with_displacement_is_quantified_with_side_cells_held() -> None:
    """Two phases, the side phase a binary held near its reference cell (as in a product
    analysis): with the displacement modelled the weight fractions are recovered; without it
    the binary cannot follow the shift and is lost."""
    made = ReferencePhase.from_structure(spinel_like(8.08), "MgAl2O4")
    side = ReferencePhase.from_structure(_wurtzite(3.25, 5.207), "ZnO")
    pattern = simulate_mixture([made, side], [0.7, 0.3], seed=12, max_strain=0.0, max_zero=0.0,
                               displacement=0.7, fwhm=[0.25, 0.1])
    cfg = AnalysisSettings(zero_range_deg=1.2, sample_displacement=True,
                           binary_lattice_range=0.005)
    res = analyze(pattern, [made, side], target="MgAl2O4", settings=cfg)
    assert res.target_yield == pytest.approx(0.7, abs=0.03)
    assert res.zero_shift_deg == pytest.approx(0.7, abs=0.05)
    shifted = analyze(pattern, [made, side], target="MgAl2O4",
                      settings=AnalysisSettings(binary_lattice_range=0.005))
    assert shifted.target_yield > 0.9  # the binary could not follow: lost, the target took all


def test_side_phase_width_is_capped_and_the_target_is_not() -> None:
    """A broad target (FWHM 0.35 deg) with a sharp side phase (0.08 deg): with the side-phase
    width bound the side phase's refined FWHM stays within it, the target's broad width is
    reached, and the fractions are recovered."""
    made = ReferencePhase.from_structure(spinel_like(8.08), "MgAl2O4")
    side = ReferencePhase.from_structure(rocksalt(4.212), "MgO")
    pattern = simulate_mixture([made, side], [0.75, 0.25], seed=13, max_strain=0.0,
                               fwhm=[0.35, 0.08])
    cap = 0.15
    res = analyze(pattern, [made, side], target="MgAl2O4",
                  settings=AnalysisSettings(side_width_max_deg=cap))
    by = {p.name: p for p in res.phases}
    t30 = np.radians(15.0)
    assert by["MgO"].fwhm_deg_at_30 <= cap / np.cos(t30) + cap * np.tan(t30) + 1e-9
    assert by["MgAl2O4"].fwhm_deg_at_30 > 0.3
    assert res.target_yield == pytest.approx(0.75, abs=0.04)
    # without a target there is no 'side': every phase keeps the general bounds
    free = analyze(pattern, [made, side], settings=AnalysisSettings(side_width_max_deg=0.05))
    assert {p.name: p for p in free.phases}["MgAl2O4"].fwhm_deg_at_30 > 0.3


def test_real_samples_preset_models_displacement_and_sharp_side_phases() -> None:
    real = AnalysisSettings.real_samples()
    assert real.sample_displacement and real.zero_range_deg >= 1.0
    assert real.side_width_max_deg is not None and real.side_width_max_deg < 0.3
    # side phases only get one uniaxial texture term; the target none
    assert real.texture_phases == "side" and real.texture_degree == 2 and real.texture_terms == 1
    default = AnalysisSettings()
    assert not default.sample_displacement and default.side_width_max_deg is None
