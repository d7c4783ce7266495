"""Reference phases: reflection lists computed once from a crystal structure.

Why reflections and not a rendered pattern: the fit moves peaks (lattice scaling, zero shift),
changes their width and adds the K-alpha2 line, so what must be cached is the wavelength-free
part of the physics: d-spacings and ``|F|^2 x multiplicity`` per reflection. pymatgen's
XRDCalculator (``scaled=False``) gives ``|F|^2 x m x LP`` per *unit cell as given*; dividing the
Lorentz-polarisation factor back out leaves exactly the quantity the Rietveld weight-fraction
relation ``w ~ S * Z * M * V`` assumes (scale S multiplies |F|^2 of one cell, ZM is the cell's
mass, V its volume).
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from .pattern import CU_KA1


class XrdReferenceError(ValueError):
    """A reference structure or CIF that cannot be used."""


def lorentz_polarisation(two_theta_deg: np.ndarray) -> np.ndarray:
    """pymatgen's LP factor (1 + cos^2 2t) / (sin^2 t cos t), unpolarised, no monochromator."""
    t = np.radians(two_theta_deg) / 2.0
    return (1.0 + np.cos(2 * t) ** 2) / (np.sin(t) ** 2 * np.cos(t))


@dataclass(frozen=True)
class Reflections:
    """Wavelength-free reflection list of one cell.

    ``d`` (A), ``f2m`` (|F|^2 x multiplicity), ``hkl`` (one representative Miller triple per
    reflection, in the basis of ``lattice`` rows, so the fit can recompute d after strain),
    ``labels`` (all merged families, for people).
    """

    d: np.ndarray
    f2m: np.ndarray
    hkl: np.ndarray
    lattice: np.ndarray
    labels: tuple[str, ...]


_CACHE: dict[tuple[str, float], Reflections] = {}
_CACHE_LOCK = threading.Lock()

# smallest d-spacing kept by default: enough for 2theta up to ~160 deg with Cu
D_MIN_DEFAULT = 0.78


def _structure_key(structure: Structure) -> str:
    lat = np.round(structure.lattice.matrix, 5).tobytes()
    species = "|".join(str(s.species) for s in structure)
    fc = np.round(np.mod(structure.frac_coords, 1.0), 5).tobytes()
    return hashlib.sha1(lat + species.encode() + fc).hexdigest()


def compute_reflections(structure: Structure, d_min: float = D_MIN_DEFAULT) -> Reflections:
    """Reflections of ``structure`` with d >= d_min (cached per structure and d_min).

    pymatgen enumerates reflections for one wavelength and angle range; the values returned here
    (d, |F|^2*m) do not depend on that wavelength, so a single list serves every wavelength.
    """
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    d_min = float(max(d_min, 0.3))
    wavelength = CU_KA1 if d_min >= D_MIN_DEFAULT else 1.9 * d_min
    key = (_structure_key(structure), round(d_min, 4))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    tt_max = float(np.degrees(2 * np.arcsin(min(1.0, wavelength / (2 * d_min)))))
    tt_max = min(tt_max, 178.0)
    calc = XRDCalculator(wavelength=float(wavelength))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pat = calc.get_pattern(structure, scaled=False, two_theta_range=(1.0, tt_max))
    tt = np.asarray(pat.x, dtype=float)
    inten = np.asarray(pat.y, dtype=float)
    d = np.asarray(pat.d_hkls, dtype=float)
    f2m = inten / lorentz_polarisation(tt)
    labels = tuple(
        ",".join("(" + " ".join(str(i) for i in h["hkl"]) + ")" for h in group)
        for group in pat.hkls
    )
    # pymatgen writes hexagonal indices as (h k i l); the fit needs (h k l)
    hkl = np.array(
        [g[0]["hkl"] if len(g[0]["hkl"]) == 3 else (g[0]["hkl"][0], g[0]["hkl"][1], g[0]["hkl"][3])
         for g in pat.hkls],
        dtype=float,
    ).reshape(-1, 3)
    keep = f2m > 1e-9 * max(float(f2m.max(initial=0.0)), 1e-30)
    refl = Reflections(
        d[keep],
        f2m[keep],
        hkl[keep],
        np.array(structure.lattice.matrix, dtype=float),
        tuple(lab for lab, k in zip(labels, keep, strict=False) if k),
    )
    with _CACHE_LOCK:
        _CACHE[key] = refl
    return refl


@dataclass(eq=False)
class ReferencePhase:
    """A candidate phase: name (CIF stem or given), structure and its cached reflections."""

    name: str
    structure: Structure
    source: str | None = None
    _reflections: Reflections | None = field(default=None, repr=False)
    _d_min: float = field(default=float("inf"), repr=False)

    @classmethod
    def from_structure(
        cls, structure: Structure, name: str | None = None, *, source: str | None = None
    ) -> ReferencePhase:
        """Reference from a pymatgen Structure (ordered or disordered; partial occupancies ok)."""
        if not isinstance(structure, Structure):
            raise XrdReferenceError(f"{name or '?'}: expected a pymatgen Structure, got {type(structure)}")
        if len(structure) == 0:
            raise XrdReferenceError(f"{name or '?'}: structure has no sites")
        if structure.volume <= 1.0:
            raise XrdReferenceError(f"{name or '?'}: structure volume {structure.volume} A^3")
        nm = name or structure.composition.reduced_formula
        return cls(name=nm, structure=structure.copy(), source=source)

    @classmethod
    def from_cif(cls, path: str | Path, name: str | None = None) -> ReferencePhase:
        """Reference from a CIF file; the name defaults to the file stem (e.g. ``TiO2_136``)."""
        p = Path(path)
        if not p.is_file():
            raise XrdReferenceError(f"{p}: no such CIF file")
        from pymatgen.io.cif import CifParser

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                structs = CifParser(str(p)).parse_structures(primitive=False)
        except Exception as exc:  # noqa: BLE001 - pymatgen raises many types for bad CIFs
            raise XrdReferenceError(f"{p}: cannot parse CIF ({type(exc).__name__}: {exc})") from exc
        if not structs:
            raise XrdReferenceError(f"{p}: CIF holds no structure")
        return cls.from_structure(structs[0], name or p.stem, source=str(p))

    @property
    def formula(self) -> str:
        return self.structure.composition.reduced_formula

    @property
    def cell_mass(self) -> float:
        """Z*M: mass of the cell the reflections were computed for (g/mol)."""
        return float(self.structure.composition.weight)

    @property
    def cell_volume(self) -> float:
        return float(self.structure.volume)

    @property
    def density(self) -> float:
        return float(self.structure.density)

    def texture_basis(self, d_min: float = D_MIN_DEFAULT, max_terms: int = 4,
                      max_degree: int = 4) -> np.ndarray:
        """Preferred-orientation functions per reflection (see texture.py), cached."""
        refl = self.reflections(d_min)
        key = (id(refl), max_terms, max_degree)
        cache = self.__dict__.setdefault("_texture_cache", {})
        if key not in cache:
            from .texture import texture_basis

            cache[key] = texture_basis(self.structure, refl.hkl, refl.lattice, max_terms,
                                       max_degree=max_degree)
        return cache[key]

    def reflections(self, d_min: float = D_MIN_DEFAULT) -> Reflections:
        """Reflections with d >= d_min (computed once per structure and d_min, cached globally).

        A list computed for a smaller d_min is reused for any larger one: the fit filters it.
        """
        if self._reflections is None or d_min < self._d_min - 1e-9:
            self._reflections = compute_reflections(self.structure, d_min)
            self._d_min = d_min
        return self._reflections


BUNDLED_CIF_DIR = Path(__file__).resolve().parent / "data" / "cifs"


def bundled_cifs() -> dict[str, Path]:
    """CIFs shipped with the package (name = file stem -> path); see data/cifs/ATTRIBUTION.md."""
    return {p.stem: p for p in sorted(BUNDLED_CIF_DIR.glob("*.cif"))}


def load_phase(spec: str | Path) -> ReferencePhase:
    """A CIF path, or the stem of a bundled CIF (e.g. ``TiO2_141``)."""
    p = Path(spec)
    if p.is_file():
        return ReferencePhase.from_cif(p)
    bundled = bundled_cifs()
    if str(spec) in bundled:
        return ReferencePhase.from_cif(bundled[str(spec)])
    raise XrdReferenceError(
        f"{spec}: no such CIF file and no bundled phase of that name "
        f"(bundled: {', '.join(bundled)})"
    )
