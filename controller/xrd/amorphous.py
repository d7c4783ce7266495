"""Amorphous content: a broad hump under the Bragg peaks, and what it does to the yield.

Why this exists: Rietveld weight fractions are fractions of the *crystalline* part of a sample.
A product that formed partly amorphous (a known A-Lab failure mode) shows only a broad hump in
the background, so a sample that is 35 % crystalline target and 65 % glass refines to "100 %
target". Claiming such a sample as made is a false claim. The analysis therefore asks, after the
crystalline fit, whether what is left (observed minus Bragg model) needs a broad hump on top of
a smooth monotone background, and if it does, estimates the amorphous share by the classical
degree-of-crystallinity ratio (Ruland/Vonk with equal scattering power per mass, k = 1):

    amorphous share ~ I_hump / (I_hump + I_Bragg)      (integrated net intensities)

The ratio is an estimate, not a quantification (that needs an internal standard such as a
weighed spike of corundum or silicon): it is reported, used to scale the target's yield to the
whole sample, and its uncertainty is taken as half its value, which is what keeps claims honest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.ndimage import median_filter
from scipy.optimize import nnls

# hump centres and widths searched (deg 2theta, Cu K-alpha scale): oxide/phosphate glasses
# scatter around 20-35 deg; widths of several degrees are what no Bragg peak has
HUMP_CENTRES_DEG = np.arange(15.0, 50.1, 2.5)
HUMP_SIGMAS_DEG = (3.0, 5.0, 8.0)
# smooth background: constant, linear, 1/x (air scatter) and exponential decays (holder, fluorescence)
DECAY_LENGTHS_DEG = (3.0, 8.0, 20.0, 50.0)
MEDIAN_WINDOW_DEG = 2.5


@dataclass(frozen=True)
class AmorphousEstimate:
    """What the residual background says about non-crystalline content.

    ``delta_chi2_per_point``: how much the hump improves the background fit (chi^2 per point);
    ``significance``: the same in units of the reduced chi^2 left with the hump (a real scan's
    systematic misfit scales chi^2 with the counts; a hump must stand out of *that*);
    ``detected`` when the significance exceeds the analysis setting. ``share``: estimated amorphous fraction
    of the scattering (0 when not detected), ``share_std`` its uncertainty.
    """

    detected: bool
    share: float
    share_std: float
    delta_chi2_per_point: float
    hump_area: float
    bragg_area: float
    centre_deg: float | None
    significance: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _smooth_basis(x: np.ndarray) -> np.ndarray:
    span = max(float(x[-1] - x[0]), 1e-9)
    cols = [np.ones_like(x), (x - x[0]) / span, x[0] / x]
    cols += [np.exp(-(x - x[0]) / length) for length in DECAY_LENGTHS_DEG]
    return np.column_stack(cols)


def _hump_basis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cols, areas, centres = [], [], []
    for c in HUMP_CENTRES_DEG:
        if not (x[0] + 2.0 <= c <= x[-1] - 2.0):
            continue
        for s in HUMP_SIGMAS_DEG:
            cols.append(np.exp(-0.5 * ((x - c) / s) ** 2))
            areas.append(s * np.sqrt(2 * np.pi))
            centres.append(c)
    if not cols:
        return np.zeros((x.size, 0)), np.zeros(0), np.zeros(0)
    return np.column_stack(cols), np.array(areas), np.array(centres)


def estimate_amorphous(
    x: np.ndarray, y: np.ndarray, bragg: np.ndarray, *, threshold: float
) -> AmorphousEstimate:
    """Test the pattern minus its Bragg model for a broad hump (non-negative least squares).

    ``bragg`` is the fitted crystalline contribution (all phases, scaled) on the grid ``x``.
    """
    x = np.asarray(x, dtype=float)
    net = np.asarray(y, dtype=float) - np.asarray(bragg, dtype=float)
    step = float(np.median(np.diff(x))) if x.size > 1 else 1.0
    # a running median over ~2.5 deg removes what is left of Bragg peaks (misfit of a wrong or
    # strained reference, peaks of a phase nobody listed): those are narrow, a hump is not, and
    # a poor crystalline fit must neither hide a hump nor fake one
    net = median_filter(net, size=max(int(round(MEDIAN_WINDOW_DEG / step)) | 1, 3), mode="nearest")
    w = 1.0 / np.sqrt(np.maximum(np.asarray(y, dtype=float), 1.0))
    base = _smooth_basis(x)
    humps, areas, centres = _hump_basis(x)
    bragg_area = float(np.clip(bragg, 0.0, None).sum() * step)
    if humps.shape[1] == 0:
        return AmorphousEstimate(False, 0.0, 0.0, 0.0, 0.0, bragg_area, None, 0.0)
    _, r0 = nnls(base * w[:, None], net * w)
    coef, r1 = nnls(np.column_stack([base, humps]) * w[:, None], net * w)
    delta = float(max(r0 * r0 - r1 * r1, 0.0) / x.size)
    significance = delta / max(float(r1 * r1 / x.size), 1.0)
    ch = coef[base.shape[1]:]
    hump_area = float(ch @ areas)
    centre = float(centres[int(np.argmax(ch * areas))]) if hump_area > 0 else None
    detected = significance > threshold and hump_area > 0
    share = hump_area / (hump_area + bragg_area) if detected and hump_area + bragg_area > 0 else 0.0
    return AmorphousEstimate(
        significance=float(significance),
        detected=bool(detected),
        share=float(share),
        share_std=float(0.5 * share),
        delta_chi2_per_point=delta,
        hump_area=hump_area,
        bragg_area=bragg_area,
        centre_deg=centre,
    )
