"""Crystal graphs: periodic neighbour lists, element descriptors, batching, a graph cache.

Why our own neighbour search: pymatgen's graph construction runs ~160 structures/s, which
would dominate a pool of 10^5 candidates. Here every (centre, neighbour, lattice image)
distance of a small cell is computed in one numpy broadcast and the ``max_neighbors``
nearest per centre are kept with ``argpartition`` — several thousand cells per second.

A graph stores distances, not Gaussian features: the expansion is done in torch inside the
model, so cached graphs stay small and the expansion width is a model setting.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from pymatgen.core import Element, Structure

MAX_Z = 100
TIE_TOLERANCE = 1e-4  # Å: distances closer than this count as one shell / one edge


class GraphError(ValueError):
    """A structure cannot be turned into a graph (empty, degenerate lattice, Z > 100...)."""


@dataclass(frozen=True)
class CrystalGraph:
    """One crystal as arrays: atomic numbers, directed edges (src → dst) and their lengths.

    ``src`` is the centre atom receiving the message, ``dst`` the neighbour. Periodic images
    of the same neighbour at the same distance carry identical messages, so they are stored
    once with a multiplicity ``weight`` (exactly the same sum, ~2.4× fewer edges on perov_5).
    """

    z: np.ndarray  # (n,) int64
    src: np.ndarray  # (E,) int64
    dst: np.ndarray  # (E,) int64
    dist: np.ndarray  # (E,) float32, Å
    weight: np.ndarray  # (E,) float32, number of images merged into this edge
    volume_per_atom: float
    # angular sums over the merged images of each edge (unit vector u = r/|r|):
    # l=1 Σ u (E×3) and l=2 Σ (u uᵀ − I/3) as [xx, yy, zz, √2xy, √2yz, √2xz] (E×6), so that
    # dot products of per-atom sums are rotation invariants (angle-aware models only)
    ang1: np.ndarray | None = None
    ang2: np.ndarray | None = None

    @property
    def num_atoms(self) -> int:
        return int(self.z.shape[0])


try:  # optional: vesin's cell-list search (C++), O(n) per cell instead of O(n² · images)
    import vesin as _vesin
except ImportError:  # pragma: no cover - the numpy search below is the fallback
    _vesin = None

_VESIN_LISTS = threading.local()
BACKENDS = ("auto", "vesin", "numpy")


def neighbor_list(
    lattice: np.ndarray,
    frac_coords: np.ndarray,
    cutoff: float,
    max_neighbors: int | None = None,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All periodic neighbours within ``cutoff`` Å, optionally only the nearest per centre.

    With ``max_neighbors`` a centre keeps its ``max_neighbors`` nearest neighbours plus any
    others tied (within ``TIE_TOLERANCE``) with the last one kept.

    Returns ``(centre, neighbour, image, distance)`` grouped by centre; ``image``
    is the integer lattice translation (E × 3) of the neighbour. The atom itself at zero
    translation is excluded; its own periodic images are included.

    Search radius (vesin): with ``max_neighbors`` the pairs are first searched within a radius that
    holds ~``1.2³ · max_neighbors`` atoms at the cell's density, grown ×1.5 (up to ``cutoff``)
    until every centre's k-th neighbour lies more than ``TIE_TOLERANCE`` inside it — so the
    kept shells are exactly those of a search at the full cutoff, at a fraction of the pairs.
    ``backend``: ``"vesin"`` (cell lists; ~0.2 ms per small cell), ``"numpy"`` (one
    broadcast over all images) or ``"auto"`` (vesin when installed, numpy for cells of
    ``_NUMPY_MAX_ATOMS`` atoms or fewer, where the broadcast is as fast).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown neighbour-list backend {backend!r}; allowed: {BACKENDS}")
    lattice = np.asarray(lattice, dtype=np.float64)
    frac = np.asarray(frac_coords, dtype=np.float64) % 1.0
    n = frac.shape[0]
    if n == 0:
        raise GraphError("structure has no atoms")
    vol = abs(np.linalg.det(lattice))
    if not np.isfinite(vol) or vol < 1e-6:
        raise GraphError(f"degenerate lattice (volume {vol:.3g} Å^3)")
    if backend == "vesin" and _vesin is None:
        raise ValueError("backend 'vesin' requested but vesin is not installed")
    use_vesin = _vesin is not None and (backend == "vesin" or
                                        (backend == "auto" and n > _NUMPY_MAX_ATOMS))
    if not use_vesin:
        return _numpy_pairs(lattice, frac, cutoff, max_neighbors)
    pairs = _vesin_pairs
    if max_neighbors is None:
        return _sort_by_centre(*pairs(lattice, frac, cutoff), n)
    radius = min(cutoff, FIRST_RADIUS_FACTOR
                 * (3.0 * vol / n * max_neighbors / (4.0 * np.pi)) ** (1.0 / 3.0))
    while True:
        c, nb, img, dist = _sort_by_centre(*pairs(lattice, frac, radius), n)
        counts = np.bincount(c, minlength=n)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        has_k = counts >= max_neighbors
        kth = np.full(n, np.inf)
        kth[has_k] = dist[starts[has_k] + max_neighbors - 1]
        if radius >= cutoff or (has_k.all() and (kth + TIE_TOLERANCE < radius).all()):
            break
        radius = min(cutoff, 1.5 * radius)
    # keep the whole shell at the k-th distance: which of several equidistant images
    # made the cut would otherwise depend on atom order (breaking permutation invariance)
    keep = dist <= kth[c] + TIE_TOLERANCE
    return c[keep], nb[keep], img[keep], dist[keep]


_NUMPY_MAX_ATOMS = 8
#: first vesin search radius = this × the radius of a sphere holding ``max_neighbors`` atoms at
#: the cell's mean density (grown ×1.5 while some centre's k-th neighbour is not inside it).
#: 1.5 → 1.2: graphs of ~110-atom perturbed supercells 559 → 847 /CPU s (12 neighbours) and
#: 804 → 1,128 (8), 0 and 3 % second searches; the 294 Alexandria cells of 9-16 sites: within
#: noise (2,731 vs 2,685; 4 % second searches); 1.1 searched twice too often (17-27 %).
#: The edges are the same for every factor (the growth loop guarantees whole shells).
FIRST_RADIUS_FACTOR = 1.2


def _sort_by_centre(c, nb, img, dist, n):
    # one float key (centre, then distance < span) sorts ~2x faster than a two-key lexsort
    span = float(dist.max(initial=0.0)) + 1.0
    order = np.argsort(c * span + dist, kind="stable")
    return c[order], nb[order], img[order], dist[order]


def _vesin_pairs(lattice: np.ndarray, frac: np.ndarray, radius: float):
    """(centre, neighbour, image, distance) of all pairs with distance < radius (vesin)."""
    lists = getattr(_VESIN_LISTS, "lists", None)
    if lists is None:
        lists = _VESIN_LISTS.lists = {}
    nl = lists.get(radius)
    if nl is None:  # building one costs ~2 ms, more than a small cell's search: keep them
        if len(lists) > 64:
            lists.clear()
        nl = lists[radius] = _vesin.NeighborList(cutoff=float(radius), full_list=True)
    i, j, shift, d = nl.compute(points=frac @ lattice, box=lattice, periodic=True,
                                quantities="ijSd")
    return (i.astype(np.int64), j.astype(np.int64), shift.astype(np.float64),
            d.astype(np.float64))


def _numpy_pairs(lattice: np.ndarray, frac: np.ndarray, cutoff: float,
                 max_neighbors: int | None = None):
    """All (centre, neighbour, image) distances within ``cutoff`` Å in one numpy broadcast,
    the nearest ``max_neighbors`` per centre (plus ties) kept with one ``np.partition``.

    Image range: a fractional displacement ``df`` in (-1, 1) plus translation ``k`` is at least
    ``|df + k| · d`` away, with ``d`` the interplanar spacing, so ``|k| ≤ ceil(cutoff / d)``
    covers every neighbour.
    """
    n = frac.shape[0]
    recip_len = np.linalg.norm(np.linalg.inv(lattice).T, axis=1)  # 1 / interplanar spacing
    reach = np.ceil(cutoff * recip_len).astype(int)
    images = _image_grid(int(reach[0]), int(reach[1]), int(reach[2]))  # (m, 3)
    cart = frac @ lattice  # (n, 3)
    shift = images @ lattice  # (m, 3)
    # |cart[j] + shift[k] - cart[i]|² expanded as |D_ij|² + 2 D_ij·shift_k + |shift_k|²:
    # one small matmul instead of an (n, n, m, 3) array (float64: no harmful cancellation)
    disp = (cart[None, :, :] - cart[:, None, :]).reshape(-1, 3)  # (n*n, 3)
    d2 = (disp * disp).sum(axis=1)[:, None] + 2.0 * (disp @ shift.T) + (shift * shift).sum(axis=1)
    d2 = np.maximum(d2, 0.0).reshape(n, -1)  # (n, n*m), column = j*m + k
    m = images.shape[0]
    zero = int(np.flatnonzero((images == 0).all(axis=1))[0])
    d2[np.arange(n), np.arange(n) * m + zero] = np.inf  # no self-loop at zero translation
    d2[d2 > cutoff * cutoff] = np.inf
    if max_neighbors is not None and max_neighbors < d2.shape[1]:
        # keep the whole shell at the k-th distance (see neighbor_list)
        kth = np.sqrt(np.partition(d2, max_neighbors - 1, axis=1)[:, max_neighbors - 1])
        limit = (kth + TIE_TOLERANCE) ** 2
        d2[d2 > limit[:, None]] = np.inf
    centre, flat = np.nonzero(np.isfinite(d2))
    neighbour, img = np.divmod(flat, m)
    return centre, neighbour, images[img], np.sqrt(d2[centre, flat])


@lru_cache(maxsize=64)
def _image_grid(a: int, b: int, c: int) -> np.ndarray:
    g = np.mgrid[-a : a + 1, -b : b + 1, -c : c + 1].reshape(3, -1).T
    return np.ascontiguousarray(g, dtype=np.float64)


def structure_arrays(structure: Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lattice 3×3, frac coords n×3, atomic numbers n) of an ordered structure."""
    try:  # one pass over the sites; pymatgen refuses ``species`` of a disordered structure
        species = structure.species
    except AttributeError:
        species = None
    if species is None:
        raise GraphError(f"disordered structure {structure.composition.reduced_formula}: "
                         "order it (e.g. OrderDisorderedStructureTransformation) first")
    z = np.fromiter((sp.Z for sp in species), dtype=np.int64, count=len(species))
    if z.size and (z.max() > MAX_Z or z.min() < 1):
        raise GraphError(f"element with Z={int(z.max())} outside 1..{MAX_Z}")
    return structure.lattice.matrix, structure.frac_coords, z


def structure_key(structure: Structure, cutoff: float, max_neighbors: int) -> str:
    """Hash of lattice, species and rounded coordinates plus graph settings (cache key)."""
    return _key(*structure_arrays(structure), cutoff, max_neighbors)


def _key(lattice: np.ndarray, frac: np.ndarray, z: np.ndarray, cutoff: float,
         max_neighbors: int, angular: bool = False) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.round(lattice, 4).astype(np.float32).tobytes())
    h.update(np.round(frac % 1.0, 4).astype(np.float32).tobytes())
    h.update(z.tobytes())
    h.update(f"{cutoff:.4f}/{max_neighbors}{'/ang' if angular else ''}".encode())
    return h.hexdigest()


def build_graph(structure: Structure, cutoff: float = 8.0, max_neighbors: int = 12,
                angular: bool = False) -> CrystalGraph:
    """Crystal graph of one structure (nearest ``max_neighbors`` within ``cutoff`` per atom);
    ``angular``: also the per-edge angular sums the angle-aware model needs."""
    return _graph_from_arrays(*structure_arrays(structure), cutoff, max_neighbors, angular)


def _graph_from_arrays(lattice: np.ndarray, frac: np.ndarray, z: np.ndarray, cutoff: float,
                       max_neighbors: int, angular: bool = False) -> CrystalGraph:
    c, nb, image, dist = neighbor_list(lattice, frac, cutoff, max_neighbors)
    # merge images of one neighbour at one distance (rounded to the tie tolerance)
    key = (c * len(z) + nb) * 10_000_000 + np.rint(dist / TIE_TOLERANCE).astype(np.int64)
    uniq, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True,
                                             return_counts=True)
    ang1 = ang2 = None
    if angular:
        ang1, ang2 = _angular_sums(lattice, frac, c, nb, image, dist, inverse, len(uniq))
    return CrystalGraph(
        z=z,
        src=c[first].astype(np.int64),
        dst=nb[first].astype(np.int64),
        dist=dist[first].astype(np.float32),
        weight=counts.astype(np.float32),
        volume_per_atom=float(abs(np.linalg.det(lattice)) / len(z)),
        ang1=ang1,
        ang2=ang2,
    )


_SQRT2 = float(np.sqrt(2.0))


def _angular_sums(lattice, frac, c, nb, image, dist, inverse, n_edges):
    """Per merged edge: Σ u and Σ (u uᵀ − I/3) over its images (see ``CrystalGraph``)."""
    cart = (frac % 1.0) @ lattice
    u = (cart[nb] + image @ lattice - cart[c]) / np.maximum(dist, 1e-12)[:, None]
    x, y, w = u[:, 0], u[:, 1], u[:, 2]
    comps = np.stack([x * x - 1 / 3, y * y - 1 / 3, w * w - 1 / 3,
                      _SQRT2 * x * y, _SQRT2 * y * w, _SQRT2 * x * w], axis=1)
    allc = np.concatenate([u, comps], axis=1)  # (E_raw, 9)
    out = np.zeros((n_edges, 9))
    for k in range(9):
        out[:, k] = np.bincount(inverse, weights=allc[:, k], minlength=n_edges)
    return out[:, :3].astype(np.float32), out[:, 3:].astype(np.float32)


class GraphCache:
    """Bounded LRU cache of graphs keyed by :func:`structure_key` (thread-safe).

    Why: a candidate pool is re-scored every round after retraining; its graphs never change.
    """

    def __init__(self, cutoff: float = 8.0, max_neighbors: int = 12, max_items: int = 2_000_000,
                 angular: bool = False):
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors
        self.angular = angular
        self.max_items = max_items
        self._data: OrderedDict[str, CrystalGraph] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, structure: Structure) -> CrystalGraph:
        arrays = structure_arrays(structure)
        key = _key(*arrays, self.cutoff, self.max_neighbors, self.angular)
        with self._lock:
            g = self._data.get(key)
            if g is not None:
                self._data.move_to_end(key)
                self.hits += 1
                return g
        g = _graph_from_arrays(*arrays, self.cutoff, self.max_neighbors, self.angular)
        with self._lock:
            self.misses += 1
            self._data[key] = g
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)
        return g

    def graphs(self, structures: Sequence[Structure]) -> list[CrystalGraph]:
        return [self.get(s) for s in structures]


@dataclass
class GraphBatch:
    """Many crystals as one disconnected graph; ``graph_index`` maps atoms to crystals."""

    z: torch.Tensor  # (N,) long
    src: torch.Tensor  # (E,) long, global atom index
    dst: torch.Tensor  # (E,) long
    dist: torch.Tensor  # (E,) float
    weight: torch.Tensor  # (E,) float, edge multiplicity
    graph_index: torch.Tensor  # (N,) long
    edge_graph: torch.Tensor  # (E,) long
    num_graphs: int
    atoms_per_graph: torch.Tensor  # (B,) float
    volume_per_atom: torch.Tensor  # (B,) float
    ang1: torch.Tensor | None = None  # (E, 3) angular sums, see CrystalGraph
    ang2: torch.Tensor | None = None  # (E, 6)


def collate(graphs: Sequence[CrystalGraph]) -> GraphBatch:
    """Concatenate graphs, shifting edge indices by each graph's atom offset."""
    if not graphs:
        raise GraphError("cannot batch zero graphs")
    n_atoms = np.fromiter((g.num_atoms for g in graphs), dtype=np.int64, count=len(graphs))
    n_edges = np.fromiter((g.src.shape[0] for g in graphs), dtype=np.int64, count=len(graphs))
    offsets = np.repeat(np.concatenate([[0], np.cumsum(n_atoms)[:-1]]), n_edges)
    src = np.concatenate([g.src for g in graphs]) + offsets
    dst = np.concatenate([g.dst for g in graphs]) + offsets
    gidx = np.repeat(np.arange(len(graphs)), n_atoms)
    return GraphBatch(
        z=torch.from_numpy(np.concatenate([g.z for g in graphs])),
        src=torch.from_numpy(src),
        dst=torch.from_numpy(dst),
        dist=torch.from_numpy(np.concatenate([g.dist for g in graphs])),
        weight=torch.from_numpy(np.concatenate([g.weight for g in graphs])),
        graph_index=torch.from_numpy(gidx),
        edge_graph=torch.from_numpy(np.repeat(np.arange(len(graphs)), n_edges)),
        num_graphs=len(graphs),
        atoms_per_graph=torch.from_numpy(n_atoms.astype(np.float32)),
        volume_per_atom=torch.tensor([g.volume_per_atom for g in graphs], dtype=torch.float32),
        ang1=(torch.from_numpy(np.concatenate([g.ang1 for g in graphs]))
              if all(g.ang1 is not None for g in graphs) else None),
        ang2=(torch.from_numpy(np.concatenate([g.ang2 for g in graphs]))
              if all(g.ang2 is not None for g in graphs) else None),
    )


_DESCRIPTORS: torch.Tensor | None = None
_DESC_LOCK = threading.Lock()


def element_descriptors() -> torch.Tensor:
    """Standardised physical descriptors per element (MAX_Z+1 × 9), row 0 unused.

    Why next to a learned embedding: with a few thousand training crystals many elements are
    rare; group, period, electronegativity and radius let the network share strength between
    chemically similar elements (what CGCNN's one-hot property vectors do).
    """
    global _DESCRIPTORS
    if _DESCRIPTORS is None:
        with _DESC_LOCK:
            if _DESCRIPTORS is None:
                rows = np.zeros((MAX_Z + 1, 9), dtype=np.float64)
                for z in range(1, MAX_Z + 1):
                    el = Element.from_Z(z)
                    with warnings.catch_warnings():  # noble gases: "no Pauling electronegativity"
                        warnings.simplefilter("ignore")
                        x = el.X if el.X == el.X and el.X > 0 else np.nan
                    radius = float(el.atomic_radius) if el.atomic_radius is not None else np.nan
                    ox = el.common_oxidation_states or (0,)
                    rows[z] = [z, el.row, el.group, x, radius, float(el.atomic_mass),
                               max(ox), min(ox), 1.0 if el.is_metal else 0.0]
                mu = np.nanmean(rows[1:], axis=0)
                sd = np.nanstd(rows[1:], axis=0) + 1e-8
                rows = (rows - mu) / sd
                rows[np.isnan(rows)] = 0.0
                rows[0] = 0.0
                _DESCRIPTORS = torch.tensor(rows, dtype=torch.float32)
    return _DESCRIPTORS
