"""Instrument profile learned once per instrument from a reference scan (Si, LaB6, corundum...).

Why: what the diffractometer does to every pattern — its zero shift, how peak widths grow with
angle (Caglioti: FWHM^2 = U tan^2 t + V tan t + W), the pseudo-Voigt mixing and, with a fixed
divergence slit, the angle below which the beam spills over the sample (intensities fall as
sin t) — is the same for every sample measured on it. Learned from a standard whose structure
is known exactly, it is no longer a free guess in each product analysis (the spill-over angle of
the A-Lab instrument had to be tuned on products before; docs/benchmarks.md).

How: the standard is fitted with its cell held at the CIF's (so peak shifts can only be the
zero shift); each strong, isolated reflection is then fitted on its own (pseudo-Voigt, with the
K-alpha2 partner when the tube has one) for its FWHM, and U, V, W come from a linear least-squares
fit of FWHM^2; the spill-over angle is the one (on a grid, or none) whose whole-pattern fit has
the lowest chi^2, kept only if it beats "no spill-over" by more than ln(n).

``InstrumentProfile.apply(settings)`` puts the profile into ``AnalysisSettings``: the fit then
starts from the instrument's zero shift and width and uses its spill-over angle.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import least_squares

from .analysis import AnalysisSettings, analyze
from .pattern import XrdPattern
from .reference import ReferencePhase

FORMAT = "synthloop-instrument-profile/1"
# spill-over angles tried (deg 2theta); None = the sample is never over-illuminated
FOOTPRINT_GRID: tuple[float, ...] = tuple(float(v) for v in np.arange(10.0, 62.5, 2.5))
HELD_CELL = 1e-4  # the standard's cell freedom: peak shifts must go to the zero shift
# crystallite size (nm) a product's side phases are held at: the A-Lab expert's BGMN refinements
# hold 275 of 322 side-phase entries at B1 = 0.005, i.e. 84 nm (docs/benchmarks.md, issue 21)
SIDE_CRYSTALLITE_NM = 84.0
SCHERRER_K = 0.9


class CalibrationError(ValueError):
    """A reference scan or profile file that cannot be used; the message says why."""


@dataclass(frozen=True)
class InstrumentProfile:
    """What one diffractometer does to every pattern (see the module docstring)."""

    zero_shift_deg: float
    caglioti_u: float
    caglioti_v: float
    caglioti_w: float
    eta: float
    footprint_two_theta: float | None
    wavelength_angstrom: float
    standard: str = ""
    source: str = ""
    peaks_used: int = 0
    rwp: float = float("nan")
    notes: dict[str, Any] = field(default_factory=dict)

    def fwhm(self, two_theta_deg: float | np.ndarray) -> np.ndarray:
        """Instrument FWHM (deg) at 2theta from the Caglioti law (floored at 0.01 deg)."""
        t = np.tan(np.radians(np.asarray(two_theta_deg, dtype=float)) / 2)
        h2 = self.caglioti_u * t**2 + self.caglioti_v * t + self.caglioti_w
        return np.sqrt(np.maximum(h2, 1e-4))

    def side_width_bound(self, crystallite_nm: float = SIDE_CRYSTALLITE_NM) -> float:
        """Side phases' width bound W = U (deg) on this instrument: the FWHM at 30 deg of its
        own peaks plus Scherrer broadening of ``crystallite_nm`` crystallites, written as
        W / cos t + U tan t at 30 deg (a sum, so an upper estimate of the Voigt width).

        Why: the bound's meaning is "near-instrumental peaks, crystallites >= 84 nm"; a number
        tuned on one diffractometer (0.15 deg on the A-Lab Aeris, FWHM 0.195 deg at 30 deg,
        i.e. an instrument FWHM of ~0.1 deg) would be too tight or too loose on another.
        """
        t = math.radians(15.0)
        size = math.degrees(SCHERRER_K * self.wavelength_angstrom
                            / (crystallite_nm * 10.0 * math.cos(t)))
        return (float(self.fwhm(30.0)) + size) / (1.0 / math.cos(t) + math.tan(t))

    def apply(self, settings: AnalysisSettings) -> AnalysisSettings:
        """Settings with this instrument's zero shift (start of the fit), starting peak width
        (FWHM at 30 deg) and spill-over angle; where the settings bound side phases' widths
        or fix their shape (``real_samples()``), this instrument's bound
        (:meth:`side_width_bound`) and its own eta (a standard's near-instrumental peaks)."""
        side = (None if settings.side_width_max_deg is None
                else round(self.side_width_bound(), 4))
        eta = None if settings.side_eta is None else float(np.clip(self.eta, 0.0, 1.0))
        return replace(settings, zero_shift_deg=float(self.zero_shift_deg),
                       initial_fwhm_deg=float(np.clip(self.fwhm(30.0), 0.02, 0.5)),
                       footprint_two_theta=self.footprint_two_theta,
                       side_width_max_deg=side, side_eta=eta)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rwp"] = None if not math.isfinite(self.rwp) else round(float(self.rwp), 5)
        return {"format": FORMAT, **d}

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return p

    @classmethod
    def load(cls, path: str | Path) -> InstrumentProfile:
        """Read a profile written by :meth:`save`; a bad file is a :class:`CalibrationError`
        naming the file and the problem."""
        p = Path(path)
        if not p.is_file():
            raise CalibrationError(f"{p}: no such instrument profile file")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise CalibrationError(f"{p}: not YAML ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibrationError(f"{p}: not an instrument profile (expected format: {FORMAT})")
        data = dict(data)
        data.pop("format")
        if data.get("rwp") is None:
            data["rwp"] = float("nan")
        try:
            prof = cls(**data)
        except TypeError as exc:
            raise CalibrationError(f"{p}: {exc}") from exc
        for key in ("zero_shift_deg", "caglioti_u", "caglioti_v", "caglioti_w", "eta"):
            if not isinstance(getattr(prof, key), int | float) or not math.isfinite(getattr(prof, key)):
                raise CalibrationError(f"{p}: {key} must be a finite number, got {getattr(prof, key)!r}")
        if prof.footprint_two_theta is not None and not 0 < prof.footprint_two_theta < 180:
            raise CalibrationError(f"{p}: footprint_two_theta must be in (0, 180) deg or null")
        return prof


def calibrate(pattern: XrdPattern, standard: ReferencePhase,
              settings: AnalysisSettings | None = None) -> InstrumentProfile:
    """Learn the instrument profile from a scan of ``standard`` (a single-phase reference)."""
    base = replace(settings or AnalysisSettings(), target_lattice_range=HELD_CELL,
                   structure_search_unexplained=None, footprint_two_theta=None,
                   systematic_fraction=0.0, systematic_floor=0.0)
    fits = {}
    for tc in (None, *FOOTPRINT_GRID):
        fits[tc] = analyze(pattern, [standard], target=standard.name,
                           settings=replace(base, footprint_two_theta=tc))
        if not fits[tc].phases:
            raise CalibrationError(f"{pattern.source}: the standard {standard.name} was not found "
                                   "in the scan (is it the right CIF?)")
    chi2 = {tc: _chi2(a) for tc, a in fits.items()}
    n = fits[None].curves["two_theta"].size
    best_tc = min(FOOTPRINT_GRID, key=lambda tc: chi2[tc])
    tc = best_tc if chi2[None] - chi2[best_tc] > math.log(n) * _misfit(fits[best_tc]) else None
    fit = fits[tc]
    widths = _peak_widths(pattern, fit, standard)
    if len(widths) < 3:
        raise CalibrationError(f"{pattern.source}: only {len(widths)} isolated reflections of "
                               f"{standard.name} could be measured; at least 3 are needed")
    tt = np.array([w[0] for w in widths])
    h = np.array([w[1] for w in widths])
    t = np.tan(np.radians(tt) / 2)
    design = np.column_stack([t**2, t, np.ones_like(t)])
    (u, v, w), *_ = np.linalg.lstsq(design, h**2, rcond=None)
    return InstrumentProfile(
        zero_shift_deg=round(float(fit.zero_shift_deg), 5), caglioti_u=float(u),
        caglioti_v=float(v), caglioti_w=float(w), eta=round(float(fit.eta), 4),
        footprint_two_theta=tc, wavelength_angstrom=float(pattern.wavelength_angstrom),
        standard=standard.name, source=str(pattern.source or ""), peaks_used=len(widths),
        rwp=float(fit.rwp),
        notes={"chi2_without_spillover": round(chi2[None], 1),
               "chi2_with_spillover": round(chi2[best_tc], 1)},
    )


def _chi2(a) -> float:
    y = np.asarray(a.curves["observed"], dtype=float)
    r = (y - np.asarray(a.curves["calculated"], dtype=float)) / np.sqrt(np.maximum(y, 1.0))
    return float(r @ r)


def _misfit(a) -> float:
    """Reduced chi^2 (>= 1): a spill-over angle must beat 'none' by more than the fit's misfit."""
    n = a.curves["two_theta"].size
    return max(_chi2(a) / max(n - 20, 1), 1.0)


def _peak_widths(pattern: XrdPattern, fit, standard: ReferencePhase) -> list[tuple[float, float]]:
    """(2theta, FWHM) of the standard's strong reflections with no neighbour within 3 FWHM,
    each fitted alone: pseudo-Voigt (+ its K-alpha2 partner) on a linear background."""
    x, y = pattern.two_theta, pattern.intensities
    ph = fit.phases[0]
    guess = max(ph.fwhm_deg_at_30, 0.03)
    centres = np.array(sorted(ph.peaks))
    out = []
    lam1 = pattern.wavelength_angstrom
    for c in centres:
        others = centres[centres != c]
        if others.size and np.min(np.abs(others - c)) < 6 * guess:
            continue
        half = 5 * guess
        sel = (x > c - half) & (x < c + half)
        if np.count_nonzero(sel) < 12:
            continue
        xs, ys = x[sel], y[sel]

        def model(p, xs=xs):
            amp, cen, fw, eta, b0, b1 = p
            prof = _pv(xs, cen, fw, eta)
            if pattern.has_kalpha2:
                t = math.radians(cen) / 2
                c2 = math.degrees(2 * math.asin(min(0.9999, math.sin(t) * pattern.kalpha2_angstrom / lam1)))
                prof = prof + pattern.kalpha2_ratio * _pv(xs, c2, fw, eta)
            return amp * prof + b0 + b1 * (xs - cen)

        p0 = [max(float(ys.max() - ys.min()), 1.0) * guess, c, guess, 0.5, float(ys.min()), 0.0]
        try:
            res = least_squares(lambda p, ys=ys: (model(p) - ys) / np.sqrt(np.maximum(ys, 1.0)), p0,
                                bounds=([0, c - guess, 0.005, 0, -np.inf, -np.inf],
                                        [np.inf, c + guess, 1.5, 1, np.inf, np.inf]))
        except ValueError:
            continue
        amp, cen, fw, *_ = res.x
        # a weak or poorly fitted peak says little about the width law
        if amp / fw < 20 * math.sqrt(max(float(np.median(ys)), 1.0)) or not res.success:
            continue
        out.append((float(cen), float(fw)))
    return out


def _pv(x: np.ndarray, c: float, fw: float, eta: float) -> np.ndarray:
    """Unit-area pseudo-Voigt."""
    d = x - c
    g = math.sqrt(4 * math.log(2) / math.pi) / fw * np.exp(-4 * math.log(2) * (d / fw) ** 2)
    lz = (2 / (math.pi * fw)) / (1 + 4 * (d / fw) ** 2)
    return eta * lz + (1 - eta) * g
