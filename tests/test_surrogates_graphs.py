"""Crystal graphs: periodic neighbour lists, edge merging, batching, permutation invariance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from surrogates import GraphCache, GraphError, build_graph, neighbor_list
from surrogates.graphs import collate
from surrogates.models import build_model


def brute_force(lattice: np.ndarray, frac: np.ndarray, cutoff: float, reach: int = 6):
    """Every (i, j, image) within cutoff over a generous fixed image range (no clever bounds)."""
    out = []
    cart = frac @ lattice
    images = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3)))
    for i, j in itertools.product(range(len(frac)), repeat=2):
        d = np.linalg.norm(cart[j] + images @ lattice - cart[i], axis=1)
        for k, dist in zip(images, d, strict=True):
            if dist < cutoff and not (i == j and not k.any()):
                out.append((i, j, tuple(int(x) for x in k), round(float(dist), 6)))
    return sorted(out)


def random_cell(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    a, b, c = rng.uniform(2.5, 5.0, 3)
    alpha, beta, gamma = rng.uniform(65, 115, 3)
    lat = Lattice.from_parameters(a, b, c, alpha, beta, gamma).matrix
    # coordinates outside [0, 1) on purpose: the search must wrap them
    return lat, rng.uniform(-1.5, 2.5, size=(n, 3))


@pytest.mark.parametrize("seed", range(6))
def test_neighbor_list_matches_brute_force_with_periodic_images(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lattice, frac = random_cell(rng, int(rng.integers(1, 5)))
    cutoff = 5.0
    c, nb, img, d = neighbor_list(lattice, frac, cutoff)
    ours = sorted((int(i), int(j), tuple(int(x) for x in k), round(float(x), 6))
                  for i, j, k, x in zip(c, nb, img, d, strict=True))
    # the brute force works on wrapped coordinates: compare distances per (i, j) pair
    expected = brute_force(lattice, frac % 1.0, cutoff)
    assert len(ours) == len(expected) > 0
    per_pair = lambda rows: sorted((i, j, dist) for i, j, _, dist in rows)  # noqa: E731
    assert np.allclose([r[2] for r in per_pair(ours)], [r[2] for r in per_pair(expected)], atol=1e-6)
    assert [r[:2] for r in per_pair(ours)] == [r[:2] for r in per_pair(expected)]
    # a one-atom cell only has itself (its images) as neighbours
    if len(frac) == 1:
        assert set(nb.tolist()) == {0}


def test_max_neighbors_keeps_nearest_and_whole_shells() -> None:
    rng = np.random.default_rng(7)
    lattice, frac = random_cell(rng, 3)
    full = neighbor_list(lattice, frac, 8.0)
    c, _, _, d = neighbor_list(lattice, frac, 8.0, max_neighbors=12)
    for i in range(3):
        mine = np.sort(d[c == i])
        every = np.sort(full[3][full[0] == i])
        assert len(mine) >= 12
        assert np.allclose(mine[:12], every[:12])
        assert mine.max() <= every[11] + 1e-4  # only ties with the 12th were added
    # rock salt: the 12 second neighbours of each atom form one shell
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    g = build_graph(nacl, 8.0, max_neighbors=8)  # 6 nearest + cut through the 12-shell → all 18
    counts = np.bincount(g.src, weights=g.weight)
    assert np.allclose(counts, 18)


def test_edge_weights_count_merged_images() -> None:
    s = Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])
    g = build_graph(s, cutoff=3.5, max_neighbors=6)
    # one atom: its 6 face images at 3.0 Å become one edge of multiplicity 6
    assert g.src.tolist() == [0] and g.weight.tolist() == [6.0]
    assert g.dist[0] == pytest.approx(3.0)


def perovskite(a: float = 3.9) -> Structure:
    return Structure(Lattice.cubic(a), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


@pytest.mark.parametrize("arch", ["cgcnn", "megnet"])
def test_models_are_invariant_to_site_order_and_batch_composition(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, n_outputs=2, hidden=16, layers=2, cutoff=6.0).eval()
    rng = np.random.default_rng(3)
    s = perovskite()
    s.perturb(0.1, min_distance=0.0)
    perm = rng.permutation(len(s))
    shuffled = Structure(s.lattice, [s[i].specie for i in perm], [s[i].frac_coords for i in perm])
    other = Structure(Lattice.cubic(4.2), ["Ba", "Zr", "O", "O", "O"], perovskite().frac_coords)
    with torch.no_grad():
        a = model(collate([build_graph(s, 6.0, 12)]))
        b = model(collate([build_graph(shuffled, 6.0, 12)]))
        c = model(collate([build_graph(other, 6.0, 12), build_graph(s, 6.0, 12)]))
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[0], c[1], atol=1e-5)  # other crystals in the batch do not leak in
    assert not torch.allclose(c[0], c[1])


def test_supercell_gives_the_same_prediction() -> None:
    """Same crystal, bigger cell: per-atom quantities must not change (periodicity is handled)."""
    torch.manual_seed(1)
    model = build_model("cgcnn", n_outputs=1, hidden=16, layers=2, cutoff=6.0).eval()
    s = perovskite()
    sc = s.copy()
    sc.make_supercell([2, 1, 1])
    with torch.no_grad():
        a = model(collate([build_graph(s, 6.0, 12)]))
        b = model(collate([build_graph(sc, 6.0, 12)]))
    assert torch.allclose(a, b, atol=1e-5)


def test_cache_returns_the_same_graph_and_counts_hits() -> None:
    cache = GraphCache(cutoff=6.0, max_neighbors=12)
    s = perovskite()
    g1 = cache.get(s)
    g2 = cache.get(s.copy())
    assert g1 is g2 and cache.hits == 1 and cache.misses == 1
    assert cache.get(perovskite(4.0)) is not g1


def test_bad_structures_raise_graph_errors() -> None:
    with pytest.raises(GraphError, match="degenerate lattice"):
        neighbor_list(np.zeros((3, 3)), np.zeros((1, 3)), 5.0)
    disordered = Structure(Lattice.cubic(4), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    with pytest.raises(GraphError, match="disordered"):
        build_graph(disordered)


def test_inference_path_equals_training_math_with_running_statistics() -> None:
    """The folded, in-place inference convolution computes the same function as the
    training-mode code path with batch norm using its running statistics."""
    from surrogates.models import scatter_sum

    torch.manual_seed(2)
    model = build_model("cgcnn", n_outputs=1, hidden=16, layers=2, cutoff=6.0)
    rng = np.random.default_rng(0)
    graphs = [build_graph(Structure(Lattice.cubic(float(a)), ["Sr", "Ti", "O", "O", "O"],
                                    perovskite().frac_coords), 6.0, 12)
              for a in rng.uniform(3.7, 4.3, 16)]
    batch = collate(graphs)
    model.train()
    with torch.no_grad():
        model(batch)  # non-trivial running statistics
    model.eval()
    conv = model.convs[0]
    v = model.atoms(batch.z)
    e = model.rbf(batch.dist)
    with torch.no_grad():
        fast = conv(v, e, batch)
        z = conv.bn1(conv.lin_self(v)[batch.src] + conv.lin_nb(v)[batch.dst] + conv.lin_edge(e))
        gate, core = z.chunk(2, dim=1)
        msg = torch.sigmoid(gate) * conv.act(core) * batch.weight[:, None]
        slow = conv.act(v + conv.bn2(scatter_sum(msg, batch.src, v.shape[0])))
    assert torch.allclose(fast, slow, atol=1e-5)
