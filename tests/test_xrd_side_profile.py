"""Side phases' own peak shape in product analyses: a fixed eta and held widths (issue 21)."""

from __future__ import annotations

import numpy as np
import pytest
from xrd_cells import rocksalt, spinel_like

from controller.xrd import AnalysisSettings, ReferencePhase, analyze, simulate_mixture
from controller.xrd.fitting import PatternModel, PhaseInput


def _model(eta_side: float | None, width_fixed: bool) -> PatternModel:
    made = ReferencePhase.from_structure(spinel_like(8.08), "MgAl2O4").reflections(0.9)
    side = ReferencePhase.from_structure(rocksalt(4.212), "MgO").reflections(0.9)
    x = np.arange(15.0, 80.0, 0.02)
    y = np.full(x.size, 100.0)
    return PatternModel(x, y, [(1.5406, 1.0)],
                        [PhaseInput(made.hkl, made.f2m, made.lattice),
                         PhaseInput(side.hkl, side.f2m, side.lattice, width_max=0.12,
                                    eta=eta_side, width_fixed=width_fixed)])


def test_fixed_eta_phase_ignores_the_refined_eta() -> None:
    """A phase with its own eta renders eta * Lorentzian + (1 - eta) * Gaussian whatever the
    pattern's eta (theta[1]) is, and the eta derivative comes from the other phases only."""
    model = _model(0.3, False)
    theta = model.initial_theta(0.1)
    active = np.ones(2, dtype=bool)
    theta[1] = 0.9
    a = model.columns(theta, active)
    theta[1] = 0.1
    b = model.columns(theta, active)
    assert np.allclose(a[:, 1], b[:, 1])  # the side phase: same shape at any refined eta
    assert not np.allclose(a[:, 0], b[:, 0])  # the target follows theta[1]
    g, lz = model.render(1, *model.phase_block(theta, 1), float(theta[0]))
    assert np.allclose(b[:, 1], 0.3 * lz + 0.7 * g)
    d = model._model_derivs(theta, b, np.array([1.0, 1.0]), active, [1])
    g0, l0 = model.render(0, *model.phase_block(theta, 0), float(theta[0]))
    assert np.allclose(d[:, 0], l0 - g0)


def test_held_widths_are_not_refined_and_not_counted() -> None:
    """Held widths sit at the bound after a fit and are not parameters the phase pays for."""
    held = _model(None, True)
    free = _model(None, False)
    assert held.n_refined(1) == free.n_refined(1) - 2
    assert held.n_refined(0) == free.n_refined(0)
    # a pattern from the model itself, then a fit from another start: W, U stay at 0.12
    theta = held.initial_theta(0.1)
    cols = held.columns(theta, np.ones(2, dtype=bool))
    y = 200.0 + cols @ np.array([5e-3, 5e-3]) * 1e5
    held = PatternModel(held.x, y, held.lines, held.phases)
    state = held.fit(held.initial_theta(0.05), np.ones(2, dtype=bool), max_nfev=10)
    wi = held.width_index(1)
    assert state.theta[wi] == pytest.approx(0.12) and state.theta[wi + 1] == pytest.approx(0.12)


def test_side_profile_settings_in_a_product_analysis() -> None:
    """A broad target with a sharp side phase: held side widths give the side phase exactly
    the bound's FWHM, the target keeps its own broad width, and the fractions are recovered;
    without a target (no side phases) neither setting applies."""
    made = ReferencePhase.from_structure(spinel_like(8.08), "MgAl2O4")
    side = ReferencePhase.from_structure(rocksalt(4.212), "MgO")
    pattern = simulate_mixture([made, side], [0.75, 0.25], seed=13, max_strain=0.0,
                               fwhm=[0.35, 0.15], eta=0.5)
    cap = 0.12  # FWHM at 30 deg = cap / cos 15 + cap tan 15 = 0.156
    cfg = AnalysisSettings(side_width_max_deg=cap, side_width_fixed=True, side_eta=0.5)
    res = analyze(pattern, [made, side], target="MgAl2O4", settings=cfg)
    by = {p.name: p for p in res.phases}
    t30 = np.radians(15.0)
    assert by["MgO"].fwhm_deg_at_30 == pytest.approx(cap / np.cos(t30) + cap * np.tan(t30))
    assert by["MgAl2O4"].fwhm_deg_at_30 > 0.3
    assert res.target_yield == pytest.approx(0.75, abs=0.04)
    free = analyze(pattern, [made, side], settings=cfg)
    fwhm = {p.name: p for p in free.phases}["MgO"].fwhm_deg_at_30
    assert abs(fwhm - by["MgO"].fwhm_deg_at_30) > 2e-3


def test_real_samples_preset_holds_the_side_phases_shape() -> None:
    """The product preset holds side phases' widths and gives them their own eta; the library
    defaults (weighed mixtures, simulated products) keep every shape parameter free."""
    real = AnalysisSettings.real_samples()
    assert real.side_width_fixed and real.side_width_max_deg is not None
    assert real.side_eta is not None and 0.0 <= real.side_eta <= 1.0
    assert real.significance_per_param == pytest.approx(1.5)
    default = AnalysisSettings()
    assert not default.side_width_fixed and default.side_eta is None
