"""Library data, gas thermodynamics and the yield GP: the numbers the planner stands on."""

from __future__ import annotations

import numpy as np
import pytest

from recipes import PrecursorLibrary, RecipeError, YieldModel, gas_energy_ev, read_stock_file


def test_bundled_library_covers_alab_elements_and_is_on_the_mp_table() -> None:
    from surrogates import known_phases

    lib = PrecursorLibrary.bundled()
    kp = known_phases()
    need = "Li Na K Mg Ca Sr Ba Y La Ti Zr V Nb Cr Mo W Mn Fe Co Ni Cu Zn Al Ga In Sn Bi P".split()
    covered = {el for p in lib.all() for el in p.elements}
    assert set(need) <= covered
    for p in lib.all():
        assert kp.formation_energy(p.key) is not None, f"{p.formula} has no energy"
        assert p.melting_c is not None or p.decomposition_c is not None or p.kind == "phosphate"
    for f in ("NH4H2PO4", "(NH4)2HPO4", "Li2CO3", "MoO3"):
        assert f in lib
    assert lib.get("MoO3").volatile_at(900) and not lib.get("MoO3").volatile_at(600)
    assert lib.get("MnO2").residue_at(600) == "Mn2O3" and lib.get("MnO2").residue_at(400) is None


def test_stock_file_formats_and_errors(tmp_path) -> None:
    (tmp_path / "s.yaml").write_text("stock: [Li2CO3, MnO2]\n")
    assert read_stock_file(tmp_path / "s.yaml") == ["Li2CO3", "MnO2"]
    (tmp_path / "s.txt").write_text("Li2CO3  # lot 7\nMnO2,Co3O4\n")
    assert read_stock_file(tmp_path / "s.txt") == ["Li2CO3", "MnO2", "Co3O4"]
    (tmp_path / "bad.txt").write_text("Li2CO3\nnot a formula!\n")
    with pytest.raises(RecipeError, match="not a formula"):
        read_stock_file(tmp_path / "bad.txt")
    with pytest.raises(RecipeError, match="no such stock file"):
        read_stock_file(tmp_path / "missing.txt")


def test_gas_entropy_drives_decomposition_at_temperature() -> None:
    # CO2 at 1000 K: NIST-JANAF G - H_elements(298) = -393.5 + 33.4 - 1000 * 0.2693 = -629 kJ/mol
    g = gas_energy_ev("CO2", 1000 - 273.15) * 96.485
    assert g == pytest.approx(-629.4, abs=5)
    # O2 in air is cheaper to release at high temperature than in pure O2
    assert gas_energy_ev("O2", 900, "air") < gas_energy_ev("O2", 900, "O2")
    with pytest.raises(RecipeError, match="atmosphere"):
        gas_energy_ev("O2", 900, "vacuum")


def test_yield_gp_learns_where_yield_is_reachable() -> None:
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for _ in range(30):
        t = rng.uniform(500, 1200)
        df = rng.uniform(0, 300)
        y = float(np.clip((t - 700) / 400, 0, 1) * np.clip(df / 150, 0, 1))
        xs.append([df, df, t, np.log10(240), (t + 273) / 2000, 0.0])
        ys.append(y)
    m = YieldModel(threshold=0.5)
    assert m.fit(xs, ys) and m.trained
    hot = [250.0, 250.0, 1150.0, np.log10(240), 1423 / 2000, 0.0]
    cold = [250.0, 250.0, 550.0, np.log10(240), 823 / 2000, 0.0]
    pf = m.prob_feasible([hot, cold])
    assert pf[0] > 0.7 and pf[1] < 0.2
    mean, std = m.predict([hot, cold])
    assert mean[0] > mean[1] and (std > 0).all()
    # too little data: the physics prior, never a crash
    assert not YieldModel(0.5).fit(xs[:2], ys[:2])


def test_yield_gp_reoptimises_on_a_schedule_and_answers_the_same_whatever_came_before() -> None:
    """A refit after every result must not re-run the optimiser each time, and the same history
    must give the same model whether or not the planner fitted shorter ones first (a resumed
    campaign must decide as an uninterrupted one)."""
    from recipes.yield_model import optimisation_points

    assert [optimisation_points(n) for n in (4, 8, 9, 10, 12, 13, 40, 43, 44)] == \
        [4, 8, 8, 10, 10, 13, 35, 35, 44]
    rng = np.random.default_rng(0)
    x = rng.uniform([0, 0, 600, 2, 0.3, 0], [500, 500, 1200, 3, 0.9, 0.5], size=(60, 6))
    y = (x[:, 1] > 100) * 0.7 + rng.normal(0, 0.05, 60)
    first = YieldModel(0.5)
    assert first.fit(x[:40], y[:40])
    warm = YieldModel(0.5)
    assert warm.fit(x[:43], y[:43], warm=first)
    assert warm.optimised[1] is first.optimised[1]  # same 35-point prefix: no optimiser run
    cold = YieldModel(0.5)
    cold.fit(x[:43], y[:43])
    np.testing.assert_allclose(warm.predict(x[43:])[0], cold.predict(x[43:])[0], rtol=1e-9, atol=1e-12)
    # a corrected early yield changes the prefix: optimised afresh
    y2 = y.copy()
    y2[0] += 0.2
    changed = YieldModel(0.5)
    changed.fit(x[:43], y2[:43], warm=warm)
    assert changed.optimised[0] != warm.optimised[0]
