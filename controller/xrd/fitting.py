"""Whole-pattern fitting by variable projection.

Model: ``y(2t) = background(2t) + sum_p S_p * profile_p(2t; s_p, W_p, U_p, zero, eta)``.
The scales ``S_p`` (non-negative) and the background coefficients enter linearly; for any values
of the nonlinear parameters (zero shift, pseudo-Voigt mixing, per phase a lattice scale ``s_p``
and widths ``FWHM = W_p / cos t + U_p tan t``) the best linear parameters follow from a bounded
linear least-squares solve. Why variable projection: the outer nonlinear problem then has only
2 + (2..5) per phase parameters and no scale/background degeneracies, so it converges in a few
Gauss-Newton steps; that is what keeps a 10-phase analysis around a second.

Lattice freedom respects the cell's symmetry: cell lengths that are equal in the reference
(a = b in tetragonal/hexagonal, a = b = c in cubic) are scaled together, unequal ones
independently, angles fixed. Why: reference cells (often DFT-relaxed) are off by up to 1-2 %
and anisotropically (anatase c/a), which a single isotropic scale cannot absorb.

Weights are Poisson, ``1/sqrt(max(y, 1))``, so chi^2 is comparable across patterns and a phase
can be judged by how much chi^2 it removes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import qr, solve_triangular
from scipy.optimize import least_squares, nnls

from .profiles import bin_edges, chebyshev_basis, render_peaks
from .reference import lorentz_polarisation

# bounds of the nonlinear parameters (why: "lattice within a few percent", widths physical)
LATTICE_RANGE = 0.03
ZERO_RANGE = 0.3
W_BOUNDS = (0.01, 0.5)
U_BOUNDS = (0.0, 0.5)
# reflections weaker than this fraction of a phase's strongest are dropped (speed), as long as
# together they carry < 0.5 % of the phase's intensity
WEAK_REFLECTION = 2e-3
DEBYE_WALLER_B = 0.5  # A^2, one overall isotropic value for every phase
# texture coefficients (basis scaled to max |B| = 1) and the smallest intensity factor allowed
TEXTURE_RANGE = 2.0
TEXTURE_FLOOR = 0.1


@dataclass
class PhaseInput:
    """What the fit needs of one phase: Miller indices, |F|^2*m per cell, the cell matrix."""

    hkl: np.ndarray
    f2m: np.ndarray
    lattice: np.ndarray
    # (reflections x k) preferred-orientation functions (texture.py); None or k = 0: no texture
    texture: np.ndarray | None = None
    # bound of the relative cell-length change (None: LATTICE_RANGE)
    lattice_range: float | None = None
    # upper bound of the width parameters W and U (deg; None: W_BOUNDS, U_BOUNDS)
    width_max: float | None = None
    # this phase's own, fixed pseudo-Voigt mixing (None: the pattern's refined eta, theta[1]).
    # Why: a side phase held near-instrumental (crystallites >= 84 nm) has the instrument's
    # mostly Gaussian-Voigt shape, while a nanocrystalline target's size broadening is
    # Lorentzian; one shared eta gives the sharp side phases the target's Lorentzian tails
    eta: float | None = None
    # W and U held at width_max instead of refined (a side phase at a known, near-instrumental
    # width, as the expert's BGMN holds its size broadening at 84 nm)
    width_fixed: bool = False

    @property
    def strain_range(self) -> float:
        return LATTICE_RANGE if self.lattice_range is None else float(self.lattice_range)

    @property
    def n_texture(self) -> int:
        return 0 if self.texture is None else int(self.texture.shape[1])

    @property
    def d(self) -> np.ndarray:
        return d_spacings(self.hkl, self.lattice, np.zeros(3))

    def length_groups(self) -> np.ndarray:
        """Group id per cell length (a, b, c); equal lengths share one strain parameter."""
        lengths = np.linalg.norm(self.lattice, axis=1)
        groups = np.zeros(3, dtype=int)
        for k in (1, 2):
            for j in range(k):
                if abs(lengths[k] - lengths[j]) < 1e-4 * lengths[j]:
                    groups[k] = groups[j]
                    break
            else:
                groups[k] = groups[:k].max() + 1
        return groups


def d_spacings(hkl: np.ndarray, lattice: np.ndarray, strain_abc: np.ndarray) -> np.ndarray:
    """d of each reflection after scaling the cell vectors by (1 + strain), angles fixed."""
    mat = lattice * (1.0 + strain_abc)[:, None]
    rec = np.linalg.inv(mat).T
    return 1.0 / np.linalg.norm(hkl @ rec, axis=1)


@dataclass
class FitState:
    """Result of one fit: parameters, linear coefficients, model parts and statistics."""

    theta: np.ndarray
    scales: np.ndarray
    bg_coef: np.ndarray
    model: np.ndarray
    background: np.ndarray
    contributions: np.ndarray  # (phases, n)
    chi2: float
    n_free: int
    jac: np.ndarray | None = None  # weighted Jacobian of the residual at the optimum

    @property
    def zero(self) -> float:
        return float(self.theta[0])

    @property
    def eta(self) -> float:
        return float(self.theta[1])



class PatternModel:
    """Renders phase profiles on one pattern's grid and fits them."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        lines: list[tuple[float, float]],
        phases: list[PhaseInput],
        *,
        bg_order: int = 8,
        footprint_two_theta: float | None = None,
        zero_range: float = ZERO_RANGE,
        displacement: bool = False,
    ) -> None:
        self.x = np.asarray(x, dtype=float)
        self.y = np.asarray(y, dtype=float)
        self.edges = bin_edges(self.x)
        self.lines = lines
        # below this 2theta a fixed divergence slit's beam is longer than the sample (spill-over)
        self.footprint_two_theta = footprint_two_theta
        # the global peak shift theta[0]: a constant zero shift, or (``displacement``) a sample
        # displacement, shift = theta[0] * cos(theta) as in a Bragg-Brentano geometry whose
        # specimen surface sits off the focusing circle (BGMN's EPS2); bounded by zero_range (deg)
        self.zero_range = float(zero_range)
        self.displacement = bool(displacement)
        self.w = 1.0 / np.sqrt(np.maximum(self.y, 1.0))
        self.bg_basis = chebyshev_basis(self.x, bg_order)
        self.wB = self.bg_basis * self.w[:, None]
        self.qB, _ = np.linalg.qr(self.wB)
        self.wy = self.w * self.y
        self.wy_perp = self.wy - self.qB @ (self.qB.T @ self.wy)
        self.phases = []
        lam_max = max(lam for lam, _ in lines)
        lam_min = min(lam for lam, _ in lines)
        lo = np.radians(max(self.x[0] - 1.5, 0.5)) / 2
        hi = np.radians(min(self.x[-1] + 1.5, 179.0)) / 2
        self.groups: list[np.ndarray] = []
        self.offsets: list[int] = []
        off = 2
        for ph in phases:
            # keep reflections that can land in range for any lattice scale and line
            d0 = ph.d
            d_lo = lam_min / (2 * np.sin(hi)) / (1 + ph.strain_range)
            d_hi = lam_max / (2 * np.sin(lo)) / (1 - ph.strain_range)
            keep = (d0 >= d_lo) & (d0 <= d_hi)
            f2m = ph.f2m[keep] * np.exp(-DEBYE_WALLER_B / (2 * d0[keep] ** 2))
            hkl = ph.hkl[keep]
            tex = ph.texture[keep] if ph.n_texture else None
            if f2m.size:
                tt = np.degrees(2 * np.arcsin(np.minimum(lam_min / (2 * d0[keep]), 1.0)))
                inten = f2m * lorentz_polarisation(np.clip(tt, 1.0, 179.0))
                order = np.argsort(inten)
                cum = np.cumsum(inten[order]) / inten.sum()
                weak = np.zeros(inten.size, dtype=bool)
                weak[order] = (inten[order] < WEAK_REFLECTION * inten.max()) & (cum < 0.005)
                f2m, hkl = f2m[~weak], hkl[~weak]
                tex = tex[~weak] if tex is not None else None
            self.phases.append(PhaseInput(hkl, f2m, ph.lattice, tex, ph.lattice_range,
                                          ph.width_max, ph.eta,
                                          ph.width_fixed and ph.width_max is not None))
            g = ph.length_groups()
            self.groups.append(g)
            self.offsets.append(off)
            off += int(g.max()) + 1 + 2 + self.phases[-1].n_texture
        self.n_phases = len(self.phases)
        self.n_theta = off
        self._cache: dict[tuple[int, bytes], tuple[np.ndarray, np.ndarray]] = {}

    # ---- parameter blocks ------------------------------------------------------------------
    def block(self, i: int) -> slice:
        """Slice of phase i's parameters in theta: strains (1-3), W, U, then texture terms."""
        return slice(self.offsets[i],
                     self.offsets[i] + int(self.groups[i].max()) + 3 + self.phases[i].n_texture)

    def n_refined(self, i: int) -> int:
        """Nonlinear parameters phase i brings to a fit (its block less held widths)."""
        return self.block(i).stop - self.block(i).start - (2 if self.phases[i].width_fixed else 0)

    def n_strain(self, i: int) -> int:
        return int(self.groups[i].max()) + 1

    def n_texture(self, i: int) -> int:
        return self.phases[i].n_texture

    def width_index(self, i: int) -> int:
        """Index of phase i's W in theta."""
        return self.offsets[i] + self.n_strain(i)

    def phase_texture(self, theta: np.ndarray, i: int) -> np.ndarray:
        """Texture coefficients of phase i (empty without texture)."""
        k = self.n_texture(i)
        start = self.width_index(i) + 2
        return theta[start : start + k]

    def texture_factor(self, i: int, coef: np.ndarray) -> np.ndarray:
        """Per-reflection intensity factor 1 + B c (floored at TEXTURE_FLOOR)."""
        ph = self.phases[i]
        if not ph.n_texture or coef.size == 0:
            return np.ones(ph.f2m.size)
        return np.maximum(1.0 + ph.texture @ coef, TEXTURE_FLOOR)

    def phase_eta(self, theta: np.ndarray, i: int) -> float:
        """Pseudo-Voigt mixing of phase i: its fixed one, else the refined theta[1]."""
        fixed = self.phases[i].eta
        return float(theta[1]) if fixed is None else float(fixed)

    def phase_block(self, theta: np.ndarray, i: int) -> tuple[np.ndarray, float, float]:
        """(strain per cell length a, b, c), W, U of phase i."""
        b = theta[self.block(i)]
        k = self.n_strain(i)
        return b[:k][self.groups[i]], float(b[k]), float(b[k + 1])

    def footprint(self, two_theta: np.ndarray) -> np.ndarray:
        """Share of the beam that hits the sample: min(1, sin t / sin t_c) for a fixed slit whose
        footprint equals the sample length at 2theta_c (1 everywhere without a 2theta_c)."""
        if not self.footprint_two_theta:
            return np.ones_like(two_theta)
        sc = np.sin(np.radians(self.footprint_two_theta) / 2)
        return np.minimum(1.0, np.sin(np.radians(two_theta) / 2) / sc)

    def shift_factor(self, two_theta: np.ndarray) -> np.ndarray:
        """Peak shift per unit of theta[0] at these 2theta: 1 (zero shift) or cos(theta)."""
        if not self.displacement:
            return np.ones_like(np.asarray(two_theta, dtype=float))
        return np.cos(np.radians(np.asarray(two_theta, dtype=float)) / 2)

    # ---- rendering -------------------------------------------------------------------------
    def peak_list(self, i: int, strain: np.ndarray, w: float, u: float, zero: float,
                  derivs: bool = False, texture: np.ndarray | None = None,
                  raw_areas: bool = False):
        """Centres (deg), FWHM (deg), areas of phase i's peaks (both K-alpha lines) and, with
        ``derivs``, d(centre)/d(block) and d(FWHM)/d(block) for the block (strains, W, U)."""
        ph = self.phases[i]
        groups = self.groups[i]
        ns = self.n_strain(i)
        d = d_spacings(ph.hkl, ph.lattice, strain)
        tf = self.texture_factor(i, texture if texture is not None else np.zeros(0))
        f2m = ph.f2m if raw_areas else ph.f2m * tf
        dd = []
        if derivs:
            for gidx in range(ns):
                st2 = strain + 1e-6 * (groups == gidx)
                dd.append((d_spacings(ph.hkl, ph.lattice, st2) - d) / 1e-6)
        cs, hs, areas, dcs, dhs = [], [], [], [], []
        for lam, rel in self.lines:
            arg = lam / (2.0 * d)
            ok = arg < 0.9999
            t = np.arcsin(np.where(ok, arg, 0.5))
            tt = np.degrees(2 * t)
            inr = ok & (tt > self.x[0] - 2.0) & (tt < self.x[-1] + 2.0)
            tt, t = tt[inr], t[inr]
            cs.append(tt + (zero * np.cos(t) if self.displacement else zero))
            cos_t, tan_t = np.cos(t), np.tan(t)
            hs.append(w / cos_t + u * tan_t)
            areas.append(rel * f2m[inr] * lorentz_polarisation(tt) * self.footprint(tt))
            self._last_inr = inr if len(cs) == 1 else np.concatenate([self._last_inr, inr])
            if derivs:
                dc_dd = -np.degrees(lam / (d[inr] ** 2 * cos_t))
                dc = np.zeros((tt.size, ns + 2))
                dh = np.zeros((tt.size, ns + 2))
                for gidx in range(ns):
                    dc[:, gidx] = dc_dd * dd[gidx][inr]
                dh[:, ns] = 1.0 / cos_t
                dh[:, ns + 1] = tan_t
                dcs.append(dc)
                dhs.append(dh)
        out = [np.concatenate(cs), np.concatenate(hs), np.concatenate(areas)]
        if derivs:
            out += [np.concatenate(dcs), np.concatenate(dhs)]
        return out

    def render(self, i: int, strain: np.ndarray, w: float, u: float, zero: float,
               texture: np.ndarray | None = None):
        """(gauss, lorentz) parts of phase i's unit-scale profile (cached)."""
        tex = np.zeros(0) if texture is None else np.asarray(texture, dtype=float)
        key = (i, np.concatenate([strain, [w, u, zero], tex]).tobytes())
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        c, h, a = self.peak_list(i, strain, w, u, zero, texture=tex)
        g, lz, _ = render_peaks(self.x, self.edges, c, h, a)
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[key] = (g, lz)
        return g, lz

    def render_deriv(self, i: int, theta: np.ndarray) -> np.ndarray:
        """d(profile_i)/d(phase i's block parameters), unit scale, shape (n, block size)."""
        strain, w, u = self.phase_block(theta, i)
        tex = self.phase_texture(theta, i)
        c, h, a, dc, dh = self.peak_list(i, strain, w, u, float(theta[0]), derivs=True,
                                         texture=tex)
        *_, deriv = render_peaks(
            self.x, self.edges, c, h, a, eta=self.phase_eta(theta, i), dcenter=dc, dfwhm=dh
        )
        k = self.n_texture(i)
        if not k:
            return deriv
        # d/dc_k: the same peaks with areas f2m * B_k (zero where the factor sits at its floor)
        _, _, a_raw = self.peak_list(i, strain, w, u, float(theta[0]), raw_areas=True)
        inr = self._last_inr
        ph = self.phases[i]
        lines = len(self.lines)
        idx = np.concatenate([np.arange(ph.f2m.size)] * lines)[inr]
        active_tf = (1.0 + ph.texture @ tex > TEXTURE_FLOOR)[idx]
        eta = self.phase_eta(theta, i)
        out = np.zeros((self.x.size, deriv.shape[1] + k))
        out[:, : deriv.shape[1]] = deriv
        for j in range(k):
            g, lz, _ = render_peaks(self.x, self.edges, c, h, a_raw * ph.texture[idx, j] * active_tf)
            out[:, deriv.shape[1] + j] = eta * lz + (1 - eta) * g
        return out

    def columns(self, theta: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Profile of each phase (n, phases), unit scale; inactive phases are zero columns."""
        zero = theta[0]
        cols = np.zeros((self.x.size, self.n_phases))
        for i in np.flatnonzero(active):
            g, lz = self.render(i, *self.phase_block(theta, i), zero, self.phase_texture(theta, i))
            eta = self.phase_eta(theta, i)
            cols[:, i] = eta * lz + (1 - eta) * g
        return cols

    # ---- linear part -----------------------------------------------------------------------
    def solve_linear(self, cols: np.ndarray, active: np.ndarray):
        """Non-negative phase scales and free background for fixed profiles."""
        scales = np.zeros(self.n_phases)
        idx = np.flatnonzero(active)
        if idx.size:
            wp = cols[:, idx] * self.w[:, None]
            wp_perp = wp - self.qB @ (self.qB.T @ wp)
            q, r = np.linalg.qr(wp_perp)
            norms = np.abs(np.diag(r))
            if np.all(norms > 1e-12 * max(norms.max(), 1e-300)):
                sol, _ = nnls(r, q.T @ self.wy_perp)
            else:
                sol, _ = nnls(wp_perp, self.wy_perp)
            scales[idx] = sol
        phase_sum = cols @ scales
        bg_coef, *_ = np.linalg.lstsq(self.wB, self.wy - self.w * phase_sum, rcond=None)
        background = self.bg_basis @ bg_coef
        return scales, bg_coef, background, phase_sum

    # ---- nonlinear fit ---------------------------------------------------------------------
    def bounds(self, active: np.ndarray):
        lo = [-self.zero_range, 0.0]
        hi = [self.zero_range, 1.0]
        for i in range(self.n_phases):
            k = self.n_strain(i)
            t = self.n_texture(i)
            r = self.phases[i].strain_range
            cap = self.phases[i].width_max
            w_hi = W_BOUNDS[1] if cap is None else max(min(W_BOUNDS[1], cap), W_BOUNDS[0] * 1.01)
            u_hi = U_BOUNDS[1] if cap is None else min(U_BOUNDS[1], cap)
            lo += [-r] * k + [W_BOUNDS[0], U_BOUNDS[0]] + [-TEXTURE_RANGE] * t
            hi += [r] * k + [w_hi, u_hi] + [TEXTURE_RANGE] * t
        return np.array(lo), np.array(hi)

    def initial_theta(self, width: float = 0.08) -> np.ndarray:
        th = [0.0, 0.5]
        for i in range(self.n_phases):
            th += [0.0] * self.n_strain(i) + [width, 0.02] + [0.0] * self.n_texture(i)
        return np.array(th)

    def fit(
        self,
        theta0: np.ndarray,
        active: np.ndarray,
        *,
        free: np.ndarray | None = None,
        max_nfev: int = 30,
        want_jac: bool = False,
    ) -> FitState:
        """Optimise the nonlinear parameters marked ``free`` (others stay at theta0)."""
        active = np.asarray(active, dtype=bool)
        lo, hi = self.bounds(active)
        free = np.ones(self.n_theta, dtype=bool) if free is None else free.copy()
        theta0 = theta0.copy()
        for i in range(self.n_phases):
            if not active[i]:
                free[self.block(i)] = False
            if self.phases[i].width_fixed:
                wi = self.width_index(i)
                theta0[wi : wi + 2] = self.phases[i].width_max
                free[wi : wi + 2] = False
        if not active.any():
            free[:] = False  # background only: nothing nonlinear left to fit
        theta0 = np.clip(theta0, lo, hi)
        fidx = np.flatnonzero(free)
        memo: dict[bytes, tuple] = {}

        def full(p: np.ndarray) -> np.ndarray:
            th = theta0.copy()
            th[fidx] = p
            return th

        def evaluate(p: np.ndarray):
            key = p.tobytes()
            if key not in memo:
                th = full(p)
                cols = self.columns(th, active)
                scales, bg, background, phase_sum = self.solve_linear(cols, active)
                resid = self.w * (self.y - background - phase_sum)
                memo.clear()
                memo[key] = (th, cols, scales, bg, background, phase_sum, resid)
            return memo[key]

        def fun(p: np.ndarray) -> np.ndarray:
            return evaluate(p)[-1]

        def jac(p: np.ndarray) -> np.ndarray:
            th, cols, scales, bg, background, phase_sum, resid = evaluate(p)
            return self._jacobian(th, cols, scales, active, fidx)

        if fidx.size == 0:
            th, cols, scales, bg, background, phase_sum, resid = evaluate(np.array([]))
        else:
            res = least_squares(
                fun,
                theta0[fidx],
                jac=jac,
                bounds=(lo[fidx], hi[fidx]),
                x_scale="jac",
                max_nfev=max_nfev,
                ftol=1e-5,
                xtol=1e-6,
                gtol=1e-8,
            )
            th, cols, scales, bg, background, phase_sum, resid = evaluate(res.x)
        state = FitState(
            theta=th,
            scales=scales,
            bg_coef=bg,
            model=background + phase_sum,
            background=background,
            contributions=(cols * scales[None, :]).T,
            chi2=float(resid @ resid),
            n_free=int(fidx.size + np.count_nonzero(scales) + self.bg_basis.shape[1]),
        )
        if want_jac:
            state.jac = self.full_jacobian(th, cols, scales, active)
        return state

    def _model_derivs(self, th, cols, scales, active, params: list[int]) -> np.ndarray:
        """d(model)/d(theta_j) for j in params, linear parameters held fixed (n x len(params))."""
        out = np.zeros((self.x.size, len(params)))
        zero = float(th[0])
        pos = {j: c for c, j in enumerate(params)}
        if 0 in pos:
            # a zero shift moves every peak: derivative = -slope of the phase sum
            out[:, pos[0]] = -np.gradient(cols @ scales, self.x) * self.shift_factor(self.x)
        on = np.flatnonzero(active & (scales > 0))
        if 1 in pos:
            for i in on:
                if self.phases[i].eta is not None:
                    continue  # a fixed eta does not move with theta[1]
                g, lz = self.render(i, *self.phase_block(th, i), zero, self.phase_texture(th, i))
                out[:, pos[1]] += scales[i] * (lz - g)
        for i in on:
            blk = self.block(i)
            wanted = [j for j in range(blk.start, blk.stop) if j in pos]
            if not wanted:
                continue
            deriv = self.render_deriv(i, th)
            for j in wanted:
                out[:, pos[j]] = scales[i] * deriv[:, j - blk.start]
        return out

    def _jacobian(self, th, cols, scales, active, fidx) -> np.ndarray:
        """Kaufman's variable-projection Jacobian: model derivatives projected off the linear span."""
        jm = -self.w[:, None] * self._model_derivs(th, cols, scales, active, list(fidx))
        on = np.flatnonzero(scales > 0)
        basis = np.column_stack([self.wB, cols[:, on] * self.w[:, None]]) if on.size else self.wB
        q, _ = np.linalg.qr(basis)
        return jm - q @ (q.T @ jm)

    def full_jacobian(self, th, cols, scales, active) -> np.ndarray:
        """Weighted Jacobian of the model in all free parameters (nonlinear, scales, background).

        Used for the covariance of the scales: including the nonlinear parameters makes the
        uncertainty of a phase whose peaks overlap another's honest.
        """
        on = np.flatnonzero(active & (scales > 0))
        nl = [0, 1] + [j for i in on for j in range(self.block(i).start, self.block(i).stop)]
        jm = self.w[:, None] * self._model_derivs(th, cols, scales, active, nl)
        return np.column_stack([jm, cols[:, on] * self.w[:, None], self.wB])

    def phase_of(self, j: int) -> int:
        """Index of the phase that owns parameter j (j >= 2)."""
        return int(np.searchsorted(self.offsets, j, side="right") - 1)


def scale_covariance(
    model: PatternModel, state: FitState, inflate: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Covariance of the non-zero scales (indices, cov), scaled by the reduced chi^2 x inflate.

    Scaling by chi^2/nu (when > 1) inflates the errors by the misfit, which a real-sample fit
    always has (profile shape, texture, micro-absorption): Poisson-only errors would be far too
    small to be believed. ``inflate`` is for the serial correlation of the residuals (the
    Berar-Lelann correction); it still leaves systematic errors (structure model,
    micro-absorption) out.
    """
    active = np.ones(model.n_phases, dtype=bool)
    on = np.flatnonzero(state.scales > 0)
    jac = state.jac
    if jac is None:
        cols = model.columns(state.theta, active)
        jac = model.full_jacobian(state.theta, cols, state.scales, active)
    q, r, perm = qr(jac, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int(np.sum(diag > 1e-10 * diag[0])) if diag.size else 0
    rinv = solve_triangular(r[:rank, :rank], np.eye(rank))
    cov_perm = rinv @ rinv.T
    cov = np.zeros((jac.shape[1], jac.shape[1]))
    pr = perm[:rank]
    cov[np.ix_(pr, pr)] = cov_perm
    nu = max(model.x.size - jac.shape[1], 1)
    cov *= max(state.chi2 / nu, 1.0) * max(inflate, 1.0)
    n_nl = jac.shape[1] - on.size - model.wB.shape[1]
    sl = slice(n_nl, n_nl + on.size)
    return on, cov[sl, sl]
