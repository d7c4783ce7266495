"""Simulated powder XRD: the pattern a Cu K-alpha1 diffractometer records from a crucible.

Physics: per phase, pymatgen's ``XRDCalculator`` gives absolute (unscaled) intensities of one unit
cell; a phase's contribution in a mixture scales as ``w_i / (m_cell_i * V_cell_i)`` (the Rietveld
relation w_i ~ S_i Z_i M_i V_i read backwards). Peaks are pseudo-Voigt with a width from the
Scherrer equation (crystallite size), microstrain (4 eps tan theta) and the instrument, added in
quadrature. Amorphous content gives no Bragg peaks, only a broad hump near 27 deg. A decaying
background and Poisson counting noise scaled by the scan time complete it.

Why the caches: a campaign measures hundreds of patterns over a few dozen phases. Peak lists are
computed once per phase (in memory and, given a folder, on disk so separate driver processes share
them) and broadened profiles once per (phase, grid, size); a pattern is then a weighted sum.
"""

from __future__ import annotations

import json
import math
import threading
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.analysis.diffraction.xrd import XRDCalculator
from pymatgen.core import Composition

from .world import World

WAVELENGTH = 1.54056  # Cu K-alpha1, angstrom (pymatgen "CuKa1")
SIZE_BINS = (0.5, 0.7, 1.0, 1.4, 2.0)


def crystallite_nm(base_nm: float, max_temperature_c: float) -> float:
    """Grains grow with firing temperature (doubling per 300 C above 900 C), binned for caching."""
    factor = 2 ** ((max_temperature_c - 900.0) / 300.0)
    nearest = min(SIZE_BINS, key=lambda b: abs(math.log(b) - math.log(max(0.5, min(2.0, factor)))))
    return base_nm * nearest


class PatternSimulator:
    """Per-world XRD simulator with per-phase peak and profile caches (thread-safe)."""

    def __init__(self, world: World, cache_dir: Path | str | None = None) -> None:
        self.world = world
        self.params = world.instruments.xrd
        self.calc = XRDCalculator(wavelength="CuKa1")
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._peaks: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
        self._profiles: dict[tuple[Any, ...], np.ndarray] = {}
        self._lock = threading.Lock()

    def peaks(self, formula: str) -> tuple[np.ndarray, np.ndarray, float]:
        """(two_theta, absolute intensity per cell, 1/(cell mass x cell volume)) of one phase."""
        key = Composition(formula).reduced_formula
        with self._lock:
            if key in self._peaks:
                return self._peaks[key]
        loaded = self._load(key)
        if loaded is None:
            struct = self.world.structure(key)
            pat = self.calc.get_pattern(struct, scaled=False, two_theta_range=(5, 90))
            tt = np.asarray(pat.x, dtype=float)
            inten = np.asarray(pat.y, dtype=float)
            weight = 1.0 / (struct.composition.weight * struct.volume)
            loaded = (tt, inten, weight)
            self._store(key, loaded)
        with self._lock:
            self._peaks[key] = loaded
        return loaded

    def _cache_file(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = zlib.crc32((self.world.phase(key).structure.cif or json.dumps(
            self.world.phase(key).structure.pymatgen, sort_keys=True)).encode())
        return self.cache_dir / f"{key}-{digest:08x}.json"

    def _load(self, key: str) -> tuple[np.ndarray, np.ndarray, float] | None:
        path = self._cache_file(key)
        if path is None or not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            return np.asarray(doc["tt"]), np.asarray(doc["i"]), float(doc["w"])
        except (OSError, ValueError, KeyError):
            return None

    def _store(self, key: str, value: tuple[np.ndarray, np.ndarray, float]) -> None:
        path = self._cache_file(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{threading.get_ident()}")
        tmp.write_text(json.dumps({"tt": value[0].tolist(), "i": value[1].tolist(), "w": value[2]}))
        tmp.replace(path)

    def profile(self, formula: str, grid: tuple[float, float, float], size_nm: float) -> np.ndarray:
        """Broadened pattern of a pure phase (per unit weight fraction) on the grid."""
        key = (Composition(formula).reduced_formula, grid, round(size_nm, 3))
        with self._lock:
            if key in self._profiles:
                return self._profiles[key]
        tt, inten, weight = self.peaks(formula)
        x = _grid(*grid)
        y = np.zeros_like(x)
        theta = np.radians(tt / 2)
        size_a = size_nm * 10.0
        beta_size = np.degrees(0.9 * WAVELENGTH / (size_a * np.cos(theta)))
        beta_strain = np.degrees(4 * self.params.microstrain * np.tan(theta))
        fwhm = np.sqrt(beta_size**2 + beta_strain**2 + self.params.instrument_fwhm_deg**2)
        step = grid[2]
        for t0, i0, h in zip(tt, inten, fwhm, strict=True):
            lo = np.searchsorted(x, t0 - 10 * h)
            hi = np.searchsorted(x, t0 + 10 * h)
            if hi <= lo:
                continue
            d = x[lo:hi] - t0
            gauss = np.exp(-4 * math.log(2) * (d / h) ** 2) * (2 * math.sqrt(math.log(2) / math.pi) / h)
            lorentz = (2 / (math.pi * h)) / (1 + 4 * (d / h) ** 2)
            y[lo:hi] += i0 * weight * (0.5 * gauss + 0.5 * lorentz) * step
        with self._lock:
            self._profiles[key] = y
        return y

    def pattern(
        self,
        weight_fractions: Mapping[str, float],
        *,
        amorphous_fraction: float = 0.0,
        max_temperature_c: float = 900.0,
        two_theta_start: float = 10.0,
        two_theta_end: float = 80.0,
        step: float = 0.02,
        scan_time_min: float = 8.0,
        seed: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Counts on the grid for a sample's true crystalline weight fractions (Poisson noise)."""
        if not 0 < step <= 1 or two_theta_end <= two_theta_start or scan_time_min <= 0:
            raise ValueError(
                f"bad scan: start={two_theta_start}, end={two_theta_end}, step={step}, "
                f"scan_time_min={scan_time_min}"
            )
        grid = (float(two_theta_start), float(two_theta_end), float(step))
        x = _grid(*grid)
        size = crystallite_nm(self.params.crystallite_nm, max_temperature_c)
        signal = np.zeros_like(x)
        for formula, w in weight_fractions.items():
            if w > 1e-5:
                signal += w * self.profile(formula, grid, size)
        peak_counts = self.params.counts_per_min * scan_time_min
        top = float(signal.max()) if signal.size else 0.0
        if top > 0:
            # the strongest reflection of a fully crystalline sample reaches peak_counts
            signal *= peak_counts * (1.0 - amorphous_fraction) / top
        bg_level = self.params.background_counts_per_min * scan_time_min
        background = bg_level * (1.0 + 2.0 * np.exp(-(x - 10.0) / 15.0))
        hump = 0.08 * peak_counts * amorphous_fraction * np.exp(-(((x - 27.0) / 6.0) ** 2))
        lam = np.clip(signal + background + hump, 0, None)
        rng = np.random.default_rng(seed & 0xFFFFFFFFFFFF)
        return x, rng.poisson(lam).astype(float)


def _grid(start: float, end: float, step: float) -> np.ndarray:
    n = int(round((end - start) / step)) + 1
    return start + step * np.arange(n)


_SIMULATORS: dict[int, tuple[World, PatternSimulator]] = {}


def simulate_pattern(
    world: World,
    weight_fractions: Mapping[str, float],
    *,
    seed: int = 0,
    amorphous_fraction: float = 0.0,
    max_temperature_c: float = 900.0,
    two_theta_start: float = 10.0,
    two_theta_end: float = 80.0,
    step: float = 0.02,
    scan_time_min: float = 8.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pure function: (two_theta, counts) of a sample with these true crystalline fractions."""
    entry = _SIMULATORS.get(id(world))
    if entry is None or entry[0] is not world:
        entry = (world, PatternSimulator(world))
        _SIMULATORS[id(world)] = entry
    return entry[1].pattern(
        weight_fractions,
        amorphous_fraction=amorphous_fraction,
        max_temperature_c=max_temperature_c,
        two_theta_start=two_theta_start,
        two_theta_end=two_theta_end,
        step=step,
        scan_time_min=scan_time_min,
        seed=seed,
    )
