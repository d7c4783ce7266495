"""Peak profiles and background basis for whole-pattern fitting.

Why bin-integrated profiles: a 2-minute scan samples a 0.08 deg wide peak with only about two
points; sampling the profile at the point centres would make each peak's area depend on where
it falls between points, which goes straight into the scale factor and the weight fraction.
Integrating the profile over each detector bin (difference of the cumulative distribution) keeps
every peak's area exact at any step size.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

_SQRT_LN2 = np.sqrt(np.log(2.0))
# half-width of the window each peak is rendered in, in FWHM units
WINDOW_FWHM = 6.0
_L_WINDOW_MASS = (2.0 / np.pi) * np.arctan(2.0 * WINDOW_FWHM)


def bin_edges(x: np.ndarray) -> np.ndarray:
    """Edges of the bins centred on the sample positions (midpoints, extrapolated at the ends)."""
    mid = 0.5 * (x[1:] + x[:-1])
    return np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])


def _render_chunk(
    x: np.ndarray,
    edges: np.ndarray,
    centers: np.ndarray,
    fwhm: np.ndarray,
    areas: np.ndarray,
    *,
    eta: float | None = None,
    dcenter: np.ndarray | None = None,
    dfwhm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gaussian and Lorentzian parts of a sum of unit-shape peaks, as mean density per bin.

    Returns ``(gauss, lorentz, deriv)``; the pseudo-Voigt pattern is ``eta*lorentz +
    (1-eta)*gauss``. Each peak k contributes ``areas[k]`` (integrated over 2theta). The Lorentzian
    is truncated at +-WINDOW_FWHM*fwhm and renormalised, so both parts conserve area.

    With ``eta`` and ``dcenter``/``dfwhm`` (peaks x q: how each peak's centre and width move with
    q parameters) ``deriv`` is the (n x q) derivative of the pseudo-Voigt sum: analytic, from the
    same window evaluation, which is what makes the fit's Jacobian cheap.
    """
    n = x.size
    want = eta is not None and dcenter is not None and dfwhm is not None
    if centers.size == 0:
        q = dcenter.shape[1] if want else 0
        return np.zeros(n), np.zeros(n), (np.zeros((n, q)) if want else None)
    step = float(np.min(np.diff(edges)))
    half = WINDOW_FWHM * fwhm
    lo = np.searchsorted(edges, centers - half, side="right") - 1
    m = int(np.ceil(2.0 * WINDOW_FWHM * float(fwhm.max()) / step)) + 2
    # edge indices lo .. lo+m (m bins need m+1 edges); cumulative functions are evaluated once
    # per edge and differenced, halving the transcendental calls
    eidx = lo[:, None] + np.arange(m + 1)[None, :]
    eidx_c = np.clip(eidx, 0, n)
    t = edges[eidx_c] - centers[:, None]
    h = fwhm[:, None]
    hh = half[:, None]
    clipped = (t <= -hh) | (t >= hh)
    tc = np.clip(t, -hh, hh)
    zg = 2 * _SQRT_LN2 * tc / h
    zl = 2 * tc / h
    cg = 0.5 * erf(zg)
    cl = np.arctan(zl) / (np.pi * _L_WINDOW_MASS)
    bidx = eidx[:, :-1]
    valid = (bidx >= 0) & (bidx < n)
    bidx_c = np.clip(bidx, 0, n - 1)
    width = edges[bidx_c + 1] - edges[bidx_c]
    scale = np.where(valid, areas[:, None] / width, 0.0)
    g = (cg[:, 1:] - cg[:, :-1]) * scale
    lz = (cl[:, 1:] - cl[:, :-1]) * scale
    flat = bidx_c.ravel()
    out_g = np.bincount(flat, weights=g.ravel(), minlength=n)
    out_l = np.bincount(flat, weights=lz.ravel(), minlength=n)
    if not want:
        return out_g, out_l, None
    # densities at the edges (zero where the window clipped them)
    pg = np.where(clipped, 0.0, (2 * _SQRT_LN2 / (np.sqrt(np.pi) * h)) * np.exp(-zg * zg))
    pl = np.where(clipped, 0.0, (2.0 / h) / (1.0 + zl * zl) / (np.pi * _L_WINDOW_MASS))
    pv = eta * pl + (1.0 - eta) * pg
    # d/dc of F(edge - c) = -p ; d/dH of F(t/H) = -(t/H) p
    dc_edge = -pv
    dh_edge = -(tc / h) * pv
    dvc = (dc_edge[:, 1:] - dc_edge[:, :-1]) * scale
    dvh = (dh_edge[:, 1:] - dh_edge[:, :-1]) * scale
    q = dcenter.shape[1]
    deriv = np.empty((n, q))
    for j in range(q):
        wts = dvc * dcenter[:, j : j + 1] + dvh * dfwhm[:, j : j + 1]
        deriv[:, j] = np.bincount(flat, weights=wts.ravel(), minlength=n)
    return out_g, out_l, deriv


def render_peaks(
    x: np.ndarray,
    edges: np.ndarray,
    centers: np.ndarray,
    fwhm: np.ndarray,
    areas: np.ndarray,
    *,
    eta: float | None = None,
    dcenter: np.ndarray | None = None,
    dfwhm: np.ndarray | None = None,
    chunks: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Sum of pseudo-Voigt peaks; see :func:`_render_chunk` for the returned parts.

    Peaks are rendered in groups of similar width: every peak of a group is evaluated on a
    window sized for the group's widest peak, so grouping keeps narrow low-angle peaks from
    paying for the broad high-angle ones.
    """
    if centers.size < 2 * chunks:
        return _render_chunk(x, edges, centers, fwhm, areas, eta=eta, dcenter=dcenter,
                             dfwhm=dfwhm)
    order = np.argsort(fwhm)
    out_g = np.zeros(x.size)
    out_l = np.zeros(x.size)
    deriv = None
    for part in np.array_split(order, chunks):
        g, lz, d = _render_chunk(
            x, edges, centers[part], fwhm[part], areas[part], eta=eta,
            dcenter=None if dcenter is None else dcenter[part],
            dfwhm=None if dfwhm is None else dfwhm[part],
        )
        out_g += g
        out_l += lz
        if d is not None:
            deriv = d if deriv is None else deriv + d
    return out_g, out_l, deriv


def chebyshev_basis(x: np.ndarray, order: int) -> np.ndarray:
    """Chebyshev polynomials T0..T(order-1) on x mapped to [-1, 1], plus a 1/x term.

    The 1/x column captures the steep low-angle rise from air scatter and the sample holder
    that a low-order polynomial bends around badly.
    """
    t = 2.0 * (x - x[0]) / (x[-1] - x[0]) - 1.0
    cols = np.polynomial.chebyshev.chebvander(t, max(order - 1, 0))
    inv = x[0] / x
    inv = inv - inv.mean()
    return np.column_stack([cols, inv / np.abs(inv).max()])
