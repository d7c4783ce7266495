"""Seeded synthetic powder patterns of known mixtures, for validation and tests.

Why its own generator (and not the fit model run forwards): a test that renders with the very
model it fits proves little. This generator samples the profile at the points (no bin
integration), uses a Caglioti width law, a per-phase random lattice strain, a zero shift, an
exponential-plus-polynomial background with an amorphous hump, and Poisson counting noise; the
fit has to cope with all of it. Intensities follow the Rietveld relation in reverse: the scale
of phase i is ``w_i / (Z_i M_i V_i)``.
"""

from __future__ import annotations

import numpy as np

from .pattern import CU_KA1, CU_KA2, XrdPattern
from .reference import ReferencePhase, lorentz_polarisation


def simulate_mixture(
    phases: list[ReferencePhase],
    weight_fractions: list[float],
    *,
    seed: int,
    two_theta: tuple[float, float, float] = (10.0, 80.0, 0.02),
    wavelength: float = CU_KA1,
    kalpha2: bool = False,
    peak_counts: float = 20000.0,
    background_counts: float = 300.0,
    max_strain: float = 0.004,
    max_zero: float = 0.05,
    fwhm_range: tuple[float, float] = (0.07, 0.2),
    amorphous_fraction: float = 0.0,
    amorphous_centre_deg: float = 27.0,
    zero_shift: float | None = None,
    caglioti: tuple[float, float, float] | None = None,
    eta: float | None = None,
    footprint_two_theta: float | None = None,
    displacement: float = 0.0,
    fwhm: list[float] | None = None,
) -> XrdPattern:
    """Pattern of a mixture with the given weight fractions (normalised), reproducible by seed.

    ``amorphous_fraction`` of the sample is glass: the Bragg peaks shrink by (1 - a) and a broad
    hump (FWHM ~10 deg) scatters as much per unit mass as the crystalline part does (the k = 1
    case of the degree-of-crystallinity relation that ``amorphous.py`` inverts). The weight
    fractions then describe the crystalline part, as XRD sees it.

    Instrument (for calibration tests; None = drawn as always): ``zero_shift`` (deg),
    ``caglioti`` = (U, V, W) of FWHM^2 = U tan^2 t + V tan t + W (the same for every phase),
    ``eta`` (pseudo-Voigt mixing) and ``footprint_two_theta`` (fixed-slit spill-over: Bragg
    intensities scale as min(1, sin t / sin t_c)). ``displacement`` (deg): a sample-height
    error, every peak shifted by ``displacement * cos(theta)`` on top of the zero shift.
    ``fwhm``: each phase's low-angle FWHM (deg) instead of a draw from ``fwhm_range`` (a
    product whose target is broad and whose side phases are sharp).
    """
    if not 0.0 <= amorphous_fraction < 1.0:
        raise ValueError(f"amorphous_fraction {amorphous_fraction} is outside [0, 1)")
    if len(phases) != len(weight_fractions):
        raise ValueError("one weight fraction per phase")
    rng = np.random.default_rng(seed)
    start, stop, step = two_theta
    x = np.arange(start, stop + step / 2, step)
    w = np.asarray(weight_fractions, dtype=float)
    w = w / w.sum()
    lines = [(wavelength, 1.0)] + ([(CU_KA2, 0.5)] if kalpha2 else [])
    zero_drawn = rng.uniform(-max_zero, max_zero)
    eta_drawn = rng.uniform(0.3, 0.7)
    zero = zero_drawn if zero_shift is None else float(zero_shift)
    eta = eta_drawn if eta is None else float(eta)
    y = np.zeros_like(x)
    for ph, wi in zip(phases, w, strict=False):
        if wi <= 0:
            continue
        refl = ph.reflections()
        # strain per distinct cell length, so a cubic cell stays cubic (as a real one does)
        lengths = np.linalg.norm(refl.lattice, axis=1)
        draws = rng.uniform(-max_strain, max_strain, 3)
        strain = np.array([draws[int(np.argmin(np.abs(lengths - lengths[k]) > 1e-4 * lengths[k]))]
                           for k in range(3)])
        mat = refl.lattice * (1 + strain)[:, None]
        d = 1.0 / np.linalg.norm(refl.hkl @ np.linalg.inv(mat).T, axis=1)
        volume = abs(np.linalg.det(mat))
        scale = wi / (ph.cell_mass * volume)
        f2m = refl.f2m * np.exp(-0.5 / (2 * d**2))
        fw0 = rng.uniform(*fwhm_range)
        if fwhm is not None:
            fw0 = float(fwhm[phases.index(ph)])
        for lam, rel in lines:
            arg = lam / (2 * d)
            ok = arg < 0.999
            t = np.arcsin(arg[ok])
            tt = np.degrees(2 * t)
            inr = (tt > start - 2) & (tt < stop + 2)
            t, tt = t[inr], tt[inr]
            area = scale * rel * f2m[ok][inr] * lorentz_polarisation(tt)
            # Caglioti: H^2 = U tan^2 + V tan + W
            if caglioti is None:
                h = np.sqrt(fw0**2 + 0.02 * np.tan(t) ** 2 + 0.005 * np.tan(t))
            else:
                cu, cv, cw = caglioti
                h = np.sqrt(np.maximum(cu * np.tan(t) ** 2 + cv * np.tan(t) + cw, 1e-6))
            if footprint_two_theta:
                area = area * np.minimum(1.0, np.sin(t) / np.sin(np.radians(footprint_two_theta) / 2))
            dx = x[None, :] - (tt + zero + displacement * np.cos(t))[:, None]
            hh = h[:, None]
            gauss = np.sqrt(4 * np.log(2) / np.pi) / hh * np.exp(-4 * np.log(2) * (dx / hh) ** 2)
            lor = (2 / (np.pi * hh)) / (1 + 4 * (dx / hh) ** 2)
            y += (area[:, None] * (eta * lor + (1 - eta) * gauss)).sum(axis=0)
    if y.max() > 0:
        y *= peak_counts / y.max()
    if amorphous_fraction > 0:
        bragg_area = float(y.sum() * step)
        hump = np.exp(-0.5 * ((x - amorphous_centre_deg) / 4.25) ** 2)
        hump *= amorphous_fraction * bragg_area / float(hump.sum() * step)
        y = (1.0 - amorphous_fraction) * y + (1.0 - amorphous_fraction) * hump
    u = (x - start) / (stop - start)
    bg = background_counts * (0.6 + 1.2 * np.exp(-6 * u) + 0.2 * u - 0.15 * u**2)
    bg += 0.15 * background_counts * np.exp(-0.5 * ((x - 25.0) / 6.0) ** 2)
    counts = rng.poisson(np.maximum(y + bg, 0)).astype(float)
    return XrdPattern(
        x, counts, wavelength, source=f"simulated(seed={seed})",
        kalpha2_angstrom=CU_KA2 if kalpha2 else None, kalpha2_ratio=0.5 if kalpha2 else 0.0,
        meta={"truth": {p.name: float(v) for p, v in zip(phases, w, strict=False)}, "seed": seed,
              "amorphous_fraction": float(amorphous_fraction)},
    )
