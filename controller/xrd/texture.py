"""Preferred orientation as a low-order symmetrised spherical-harmonic correction (like BGMN's
``GEWICHT=SPHAR4``, which the A-Lab experts refine on every phase).

Each reflection's intensity is multiplied by ``T(g) = 1 + sum_k c_k B_k(g)`` where ``g`` is the
unit reciprocal-lattice vector of the reflection and ``B_k`` are even polynomials of degree 2
and 4 in g's Cartesian components, averaged over the crystal's point-group operations (so each
is invariant under the Laue group, the same for every member of a reflection family) and with
their mean over the sphere removed. Why zero mean: the orientation average of T is then exactly
1, so the Rietveld weight-fraction relation ``w ~ S Z M V`` needs no change.

Why it matters on reaction products: layered chlorides (MnCl2, NiCl2, FeCl2, CdCl2-type) grow as
platelets and their 00l reflections come out several times too strong; without this freedom the
fit raises their scale to match those reflections and their weight fraction is inflated.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np

# exponent triples of the even monomials of degree 2 and 4
_EXPONENTS = [e for deg in (2, 4) for e in itertools.product(range(deg + 1), repeat=3)
              if sum(e) == deg]


def _sphere_mean(e: tuple[int, int, int]) -> float:
    """Mean of x^a y^b z^c over the unit sphere (0 unless all even)."""
    if any(v % 2 for v in e):
        return 0.0

    def dfact(n: int) -> int:  # (n-1)!! for even n
        out = 1
        for k in range(n - 1, 0, -2):
            out *= k
        return out

    num = dfact(e[0]) * dfact(e[1]) * dfact(e[2])
    den = 1
    for k in range(sum(e) + 1, 0, -2):
        den *= k
    return num / den


def point_group_rotations(structure) -> np.ndarray:
    """Cartesian rotation matrices of the structure's point group (identity if symmetry fails)."""
    try:
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ops = SpacegroupAnalyzer(structure, symprec=0.01).get_symmetry_operations(cartesian=True)
        rots = np.array([op.rotation_matrix for op in ops])
    except Exception:  # noqa: BLE001 - spglib gives up on odd cells: fall back to no symmetry
        rots = np.eye(3)[None]
    # unique rotations only (translations differ)
    uniq = np.unique(np.round(rots, 6).reshape(len(rots), 9), axis=0)
    return uniq.reshape(-1, 3, 3)


def _symmetrised(g: np.ndarray, rots: np.ndarray, exps: list[tuple[int, int, int]]) -> np.ndarray:
    """Point-group average of each monomial at unit vectors g, sphere mean removed."""
    cols = np.zeros((g.shape[0], len(exps)))
    for r in rots:
        gr = g @ r.T
        for k, e in enumerate(exps):
            cols[:, k] += gr[:, 0] ** e[0] * gr[:, 1] ** e[1] * gr[:, 2] ** e[2]
    cols /= len(rots)
    return cols - np.array([_sphere_mean(e) for e in exps])[None, :]


def _sphere_grid(n: int = 400) -> np.ndarray:
    """Fibonacci grid of n nearly uniform unit vectors (deterministic)."""
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = np.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - z * z)
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), z])


def texture_basis(structure, hkl: np.ndarray, lattice: np.ndarray, max_terms: int = 4,
                  max_degree: int = 4) -> np.ndarray:
    """(reflections x k) invariant, sphere-zero-mean texture functions, each scaled to max |B| = 1
    over the sphere.

    The functions are the leading principal directions of the symmetrised monomials over a fixed
    grid of directions, so the basis depends only on the structure's symmetry and cell, not on
    which reflections were enumerated (a result must not depend on the cache's history).
    Degree 2 only (``max_degree=2``) is a uniaxial (March-Dollase-like) correction and gives
    cubic phases none.
    """
    if hkl.size == 0 or max_terms <= 0:
        return np.zeros((hkl.shape[0], 0))
    rots = point_group_rotations(structure)
    exps = [e for e in _EXPONENTS if sum(e) <= max_degree]
    grid = _symmetrised(_sphere_grid(), rots, exps)
    _, s, vt = np.linalg.svd(grid, full_matrices=False)
    if s.size == 0 or s[0] < 1e-8:
        return np.zeros((hkl.shape[0], 0))
    keep = [j for j in range(s.size) if s[j] > 1e-6 * s[0]][:max_terms]
    scale = np.abs(grid @ vt[keep].T).max(axis=0)
    g = hkl @ np.linalg.inv(lattice).T
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    basis = _symmetrised(g, rots, exps) @ vt[keep].T
    ok = scale > 1e-9
    return np.round(basis[:, ok] / scale[ok], 12)
