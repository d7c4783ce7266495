"""Coarse lattice-strain search by cross-correlation in log-d space.

Why: a reference cell can be off by a few percent (DFT-relaxed or substituted structures, solid
solutions). A 2 % strain moves a 60-degree peak by ~1.3 deg, many peak widths, so a local
least-squares fit started at zero strain never finds it. An isotropic strain scales every d
by the same factor, i.e. shifts the whole stick pattern by a constant in ln(1/d): one
cross-correlation per phase scores every strain in the allowed range at once, for the cost of
an FFT.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d, minimum_filter1d, uniform_filter1d
from scipy.signal import correlate

from .reference import lorentz_polarisation

GRID_POINTS = 4096


def net_signal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Background-stripped, square-rooted intensity (so a few strong peaks do not dominate)."""
    step = float(np.median(np.diff(x)))
    win = max(int(2.0 / step), 3)
    bg = uniform_filter1d(minimum_filter1d(y, win, mode="nearest"), win, mode="nearest")
    return np.sqrt(np.clip(y - bg, 0.0, None))


def best_strains(
    x: np.ndarray,
    net: np.ndarray,
    wavelength: float,
    phases: list[tuple[np.ndarray, np.ndarray]],
    max_strain: float,
    min_gain: float = 1.5,
) -> tuple[list[float], int]:
    """Isotropic strain per phase (d, f2m) that best lines its sticks up with the net signal.

    Returns (strains, trials): a strain is 0 unless the best one correlates ``min_gain`` times
    better than no strain, so a phase whose cell is right keeps its start exactly where the
    reference puts it; ``trials`` is the number of strains scored (for a look-elsewhere
    penalty: a phase moved by the search had that many chances to fit something by luck).
    """
    u_obs = np.log(2 * np.sin(np.radians(x) / 2) / wavelength)  # ln(1/d)
    grid = np.linspace(u_obs[0], u_obs[-1], GRID_POINTS)
    du = grid[1] - grid[0]
    data = np.interp(grid, u_obs, net)
    data = data - data.mean()
    max_lag = int(np.ceil(np.log(1 + max_strain) / du))
    # smoothing width ~ a broad peak (0.25 deg 2theta at mid-range) in ln(1/d) units
    mid = np.radians(0.5 * (x[0] + x[-1])) / 2
    sigma = max(np.radians(0.25) / 2 / np.tan(mid) / du, 1.0)
    out = []
    for d, f2m in phases:
        u = np.log(1.0 / d)
        ok = (u > grid[0] - max_lag * du) & (u < grid[-1] + max_lag * du)
        if not ok.any():
            out.append(0.0)
            continue
        tt = np.degrees(2 * np.arcsin(np.clip(wavelength * np.exp(u[ok]) / 2, 0, 0.9999)))
        w = np.sqrt(f2m[ok] * lorentz_polarisation(np.clip(tt, 1.0, 179.0)))
        # sticks on an extended grid so shifted peaks from outside the range can enter
        ext = np.arange(-max_lag, GRID_POINTS + max_lag) * du + grid[0]
        sticks = np.zeros(ext.size)
        idx = np.clip(np.round((u[ok] - ext[0]) / du).astype(int), 0, ext.size - 1)
        np.add.at(sticks, idx, w)
        sticks = gaussian_filter1d(sticks, sigma)
        # score(lag) = sum_j data[j] * sticks[j + max_lag + lag], lag in [-max_lag, max_lag]
        full = correlate(sticks, data, mode="valid", method="fft")
        lags = np.arange(full.size) - max_lag
        k0 = int(np.argmin(np.abs(lags)))
        kb = int(np.argmax(full))
        if full[kb] > 0 and full[kb] > min_gain * max(full[k0], 0.0):
            # best match: reference stick at u_obs + lag*du, i.e. d_observed = d_ref * e^(lag du)
            out.append(float(np.exp(lags[kb] * du) - 1.0))
        else:
            out.append(0.0)
    return out, 2 * max_lag + 1
