"""Simulated XRD: a pure phase matches XRDCalculator; seeds reproduce; amorphous gives no peaks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.diffraction.xrd import XRDCalculator

sys.path.insert(0, str(Path(__file__).parent))
from sim_lab_toy import toy_world_dict  # noqa: E402

from sim_lab import PatternSimulator, parse_world, simulate_pattern  # noqa: E402


@pytest.fixture(scope="module")
def world():
    return parse_world(toy_world_dict(), "toy")


def local_maxima(x: np.ndarray, y: np.ndarray, min_height: float) -> np.ndarray:
    idx = np.where((y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:]) & (y[1:-1] > min_height))[0] + 1
    return x[idx]


@pytest.mark.parametrize("formula", ["Li2MnO3", "Mn3O4"])
def test_pure_phase_pattern_peaks_match_xrdcalculator(world, formula: str) -> None:
    calc = XRDCalculator(wavelength="CuKa1").get_pattern(world.structure(formula), two_theta_range=(10, 80))
    strong = np.asarray(calc.x)[np.asarray(calc.y) > 30]  # reflections >= 30 % of the strongest
    x, y = simulate_pattern(world, {formula: 1.0}, scan_time_min=30, seed=1)
    assert x[0] == pytest.approx(10) and x[-1] == pytest.approx(80) and len(x) == 3501
    background = np.median(y)
    peaks = local_maxima(x, y, background + 0.15 * (y.max() - background))
    for position in strong:
        assert np.min(np.abs(peaks - position)) < 0.15, f"no simulated peak near {position:.2f}"
    top = x[np.argmax(y)]
    assert np.min(np.abs(np.asarray(calc.x)[np.asarray(calc.y) > 60] - top)) < 0.15


def test_same_seed_same_pattern_and_noise_scales_with_scan_time(world) -> None:
    mix = {"Li2MnO3": 0.6, "Mn2O3": 0.4}
    a = simulate_pattern(world, mix, seed=7)[1]
    b = simulate_pattern(world, mix, seed=7)[1]
    c = simulate_pattern(world, mix, seed=8)[1]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    short = simulate_pattern(world, mix, seed=7, scan_time_min=2)[1]
    long = simulate_pattern(world, mix, seed=7, scan_time_min=32)[1]
    assert long.max() == pytest.approx(16 * short.max(), rel=0.1)
    # relative counting noise falls as 1/sqrt(counts)
    rel_short = np.std(short[:200] - np.convolve(short, np.ones(9) / 9, "same")[:200]) / short[:200].mean()
    rel_long = np.std(long[:200] - np.convolve(long, np.ones(9) / 9, "same")[:200]) / long[:200].mean()
    assert rel_long < rel_short


def test_amorphous_content_gives_no_bragg_peaks(world) -> None:
    x, crystalline = simulate_pattern(world, {"Li2MnO3": 1.0}, seed=3)
    _, glass = simulate_pattern(world, {}, amorphous_fraction=1.0, seed=3)
    assert glass.max() < 0.1 * crystalline.max()
    hump = glass[(x > 24) & (x < 30)].mean()
    assert hump > glass[x > 60].mean()


def test_phase_fractions_show_in_the_pattern(world) -> None:
    sim = PatternSimulator(world)
    x, rich = sim.pattern({"Li2MnO3": 0.9, "Mn3O4": 0.1}, seed=1)
    _, poor = sim.pattern({"Li2MnO3": 0.1, "Mn3O4": 0.9}, seed=1)
    tt = XRDCalculator(wavelength="CuKa1").get_pattern(world.structure("Li2MnO3"), two_theta_range=(10, 80))
    first = np.asarray(tt.x)[np.argmax(tt.y)]
    window = np.abs(x - first) < 0.1
    assert rich[window].max() > 2 * poor[window].max()
    assert sim.profile("Li2MnO3", (10.0, 80.0, 0.02), 80.0) is sim.profile("Li2MnO3", (10.0, 80.0, 0.02), 80.0)
