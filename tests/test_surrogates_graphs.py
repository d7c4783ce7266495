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


BACKENDS = ["numpy", "vesin"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(6))
def test_neighbor_list_matches_brute_force_with_periodic_images(seed: int, backend: str) -> None:
    rng = np.random.default_rng(seed)
    lattice, frac = random_cell(rng, int(rng.integers(1, 5)))
    cutoff = 5.0
    c, nb, img, d = neighbor_list(lattice, frac, cutoff, backend=backend)
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


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_neighbors_keeps_nearest_and_whole_shells(backend: str) -> None:
    rng = np.random.default_rng(7)
    lattice, frac = random_cell(rng, 3)
    full = neighbor_list(lattice, frac, 8.0, backend=backend)
    c, _, _, d = neighbor_list(lattice, frac, 8.0, max_neighbors=12, backend=backend)
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


@pytest.mark.parametrize("arch", ["cgcnn", "megnet", "schnet", "angular"])
def test_models_are_invariant_to_site_order_and_batch_composition(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, n_outputs=2, hidden=16, layers=2, cutoff=6.0).eval()
    rng = np.random.default_rng(3)
    s = perovskite()
    s.perturb(0.1, min_distance=0.0)
    perm = rng.permutation(len(s))
    shuffled = Structure(s.lattice, [s[i].specie for i in perm], [s[i].frac_coords for i in perm])
    other = Structure(Lattice.cubic(4.2), ["Ba", "Zr", "O", "O", "O"], perovskite().frac_coords)
    ang = arch == "angular"
    with torch.no_grad():
        a = model(collate([build_graph(s, 6.0, 12, ang)]))
        b = model(collate([build_graph(shuffled, 6.0, 12, ang)]))
        c = model(collate([build_graph(other, 6.0, 12, ang), build_graph(s, 6.0, 12, ang)]))
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[0], c[1], atol=1e-5)  # other crystals in the batch do not leak in
    assert not torch.allclose(c[0], c[1])


@pytest.mark.parametrize("arch", ["cgcnn", "schnet", "angular"])
def test_supercell_gives_the_same_prediction(arch: str) -> None:
    """Same crystal, bigger cell: per-atom quantities must not change (periodicity is handled)."""
    torch.manual_seed(1)
    model = build_model(arch, n_outputs=1, hidden=16, layers=2, cutoff=6.0).eval()
    s = perovskite()
    s.perturb(0.1, min_distance=0.0)  # low symmetry: angular sums are not trivially zero
    sc = s.copy()
    sc.make_supercell([2, 1, 1])
    ang = arch == "angular"
    with torch.no_grad():
        a = model(collate([build_graph(s, 6.0, 12, ang)]))
        b = model(collate([build_graph(sc, 6.0, 12, ang)]))
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


@pytest.mark.parametrize("edge_activation", ["softplus", "relu", "hard"])
def test_inference_path_equals_training_math_with_running_statistics(edge_activation: str) -> None:
    """The folded, in-place inference convolution computes the same function as the
    training-mode code path with batch norm using its running statistics."""
    from surrogates.models import scatter_sum

    torch.manual_seed(2)
    model = build_model("cgcnn", n_outputs=1, hidden=16, layers=2, cutoff=6.0,
                        edge_activation=edge_activation)
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
        msg = _textbook_message(gate, core, edge_activation) * batch.weight[:, None]
        slow = conv.act(v + conv.bn2(scatter_sum(msg, batch.src, v.shape[0])))
    assert torch.allclose(fast, slow, atol=1e-5)


def test_angular_model_sees_angles_that_distances_do_not_fix() -> None:
    """Rotating the cell changes nothing; bending a bond at fixed distances changes the
    angle-aware prediction (the distance-only SchNet is blind to it by construction)."""
    from scipy.spatial.transform import Rotation

    torch.manual_seed(4)
    model = build_model("angular", n_outputs=1, hidden=16, layers=2, cutoff=4.0).eval()
    s = perovskite()
    s.perturb(0.15, min_distance=0.0)
    rot = Rotation.from_euler("xyz", [0.3, -0.7, 1.1]).as_matrix()
    rotated = Structure(Lattice(s.lattice.matrix @ rot.T), s.species, s.frac_coords)
    g, gr = build_graph(s, 4.0, 12, True), build_graph(rotated, 4.0, 12, True)
    np.testing.assert_allclose(np.linalg.norm(g.ang1, axis=1), np.linalg.norm(gr.ang1, axis=1),
                               atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model(collate([g])), model(collate([gr])), atol=1e-5)
    # a molecule-like trimer in a big box: A-B-A straight vs bent, same two A-B distances
    def trimer(angle_deg: float) -> Structure:
        t = np.radians(angle_deg)
        pos = np.array([[0, 0, 0], [1.8, 0, 0], [1.8 * np.cos(t), 1.8 * np.sin(t), 0]]) + 5.0
        return Structure(Lattice.cubic(10.0), ["Ti", "O", "O"], pos, coords_are_cartesian=True)
    # cutoff 2.5 keeps only the two Ti-O bonds (O-O is 2.76 Å at 100°, 3.38 Å at 140°)
    with torch.no_grad():
        a = model(collate([build_graph(trimer(100.0), 2.5, 12, True)]))
        b = model(collate([build_graph(trimer(140.0), 2.5, 12, True)]))
    assert float((a - b).abs().max()) > 1e-5  # small at initialisation, but not zero
    schnet = build_model("schnet", n_outputs=1, hidden=16, layers=2, cutoff=2.5).eval()
    with torch.no_grad():
        assert torch.allclose(schnet(collate([build_graph(trimer(100.0), 2.5, 12)])),
                              schnet(collate([build_graph(trimer(140.0), 2.5, 12)])), atol=1e-6)


def _edge_set(out):
    c, nb, img, d = out
    return sorted((int(i), int(j), tuple(int(x) for x in k), round(float(x), 5))
                  for i, j, k, x in zip(c, nb, img, d, strict=True))


@pytest.mark.parametrize("seed", range(4))
def test_backends_and_adaptive_radius_give_the_same_edges(seed: int) -> None:
    """vesin and numpy, each with the shrunken first search radius, keep exactly the edges
    of a plain search at the full cutoff: same centres, neighbours, images, tie shells."""
    rng = np.random.default_rng(seed)
    cells = [random_cell(rng, n) for n in (2, 7, 30)]
    # high symmetry: many exact ties at the 12th neighbour (rock salt supercell, fcc)
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])
    cells.append((nacl.lattice.matrix, nacl.frac_coords))
    fcc = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])
    cells.append((fcc.lattice.matrix, fcc.frac_coords))
    for lattice, frac in cells:
        c, nb, img, d = neighbor_list(lattice, frac, 8.0, backend="numpy")
        # reference: full search, then the k-nearest-plus-ties rule applied by brute force
        ref = []
        for i in range(len(frac)):
            rows = [(int(i), int(j), tuple(int(x) for x in k), round(float(x), 5))
                    for j, k, x in zip(nb[c == i], img[c == i], d[c == i], strict=True)]
            if len(rows) > 12:
                kth = sorted(r[3] for r in rows)[11]
                rows = [r for r in rows if r[3] <= kth + 1e-4]
            ref += rows
        for backend in BACKENDS:
            got = _edge_set(neighbor_list(lattice, frac, 8.0, 12, backend=backend))
            assert got == sorted(ref), backend


def test_unknown_backend_is_named() -> None:
    with pytest.raises(ValueError, match="backend"):
        neighbor_list(np.eye(3) * 4, np.zeros((1, 3)), 5.0, backend="fast")


def test_angular_model_refuses_graphs_without_angles() -> None:
    model = build_model("angular", n_outputs=1, hidden=8, layers=1, cutoff=6.0).eval()
    with pytest.raises(ValueError, match="angular sums"):
        model(collate([build_graph(perovskite(), 6.0, 12)]))


def _random_graphs(seed: int, cutoff: float, angular: bool = False):
    """Small symmetric cells (merged images: weights > 1) and triclinic cells (weights 1)."""
    rng = np.random.default_rng(seed)
    species = ["Li", "O", "Fe", "Sr", "Ti", "F", "Mn"]
    cells = [perovskite(float(a)) for a in rng.uniform(3.7, 4.3, 3)]
    for n in (7, 11):
        lat, frac = random_cell(rng, n)
        lat = lat * 1.6  # no atoms on top of each other
        cells.append(Structure(lat, list(rng.choice(species, n)), frac))
    return [build_graph(s, cutoff, 12, angular) for s in cells]


def _textbook_message(gate, core, kind: str):
    """The gated message written out: σ(g)·softplus(c) = log(1 + e^c) / (1 + e^-g) (published),
    σ(g)·max(c, 0) ("relu"), clip(g/6 + 1/2, 0, 1)·max(c, 0) ("hard")."""
    core_act = torch.log1p(torch.exp(core)) if kind == "softplus" else torch.clamp(core, min=0.0)
    gate_act = (torch.clamp(gate / 6.0 + 0.5, 0.0, 1.0) if kind == "hard"
                else 1.0 / (1.0 + torch.exp(-gate)))
    return gate_act * core_act


def _reference_cgcnn(model, b):
    """CGCNN as published: ``W·[v_i ‖ v_j ‖ e_ij]`` per edge, batch norm from its statistics
    (with the model's edge activation written out, see ``_textbook_message``)."""
    f = torch.nn.functional
    a = model.atoms
    v = a.embed.weight[b.z] + a.proj(a.desc[b.z])
    step = float(model.rbf.centres[1] - model.rbf.centres[0])
    e = torch.exp(-((b.dist[:, None] - model.rbf.centres[None, :]) / step) ** 2)

    def bn(x, m):
        return (x - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias

    for c in model.convs:
        w = torch.cat([c.lin_self.weight, c.lin_nb.weight, c.lin_edge.weight], dim=1)
        z = bn(torch.cat([v[b.src], v[b.dst], e], dim=1) @ w.t() + c.lin_self.bias, c.bn1)
        gate, core = z.chunk(2, dim=1)
        msg = _textbook_message(gate, core, c.edge_activation) * b.weight[:, None]
        v = f.softplus(v + bn(torch.zeros_like(v).index_add_(0, b.src, msg), c.bn2))
    pooled = torch.zeros(b.num_graphs, v.shape[1]).index_add_(0, b.graph_index, v)
    pooled = pooled / torch.bincount(b.graph_index)[:, None]
    return model.head(torch.cat([pooled, torch.log(b.volume_per_atom)[:, None]], dim=1))


def _reference_megnet(model, b):
    """MEGNet with the edge update on the concatenation ``[v_src ‖ v_dst ‖ e ‖ u]``."""
    from surrogates.models import scatter_mean

    v = model.atoms(b.z)
    e = model.edge_in(model.rbf(b.dist))
    u = model.state_in(torch.stack([torch.log(b.volume_per_atom), torch.log(b.atoms_per_graph)], 1))
    for blk in model.blocks:
        e = blk.norm_e(e + blk.edge(torch.cat([v[b.src], v[b.dst], e, u[b.edge_graph]], dim=1)))
        agg = scatter_mean(e, b.src, v.shape[0], b.weight)
        v = blk.norm_v(v + blk.node(torch.cat([v, agg, u[b.graph_index]], dim=1)))
        u = u + blk.state(torch.cat([u, scatter_mean(e, b.edge_graph, b.num_graphs, b.weight),
                                     scatter_mean(v, b.graph_index, b.num_graphs)], dim=1))
    return model.head(torch.cat([scatter_mean(v, b.graph_index, b.num_graphs),
                                 scatter_mean(e, b.edge_graph, b.num_graphs, b.weight), u], 1))


def _reference_density(model, b):
    """SchNet / angle-aware net with the neighbour projection applied per edge, ``W·v_j``."""
    from surrogates.models import scatter_mean

    v = model.atoms(b.z)
    e = model.rbf(b.dist)
    for blk in model.interactions:
        env = 0.5 * (torch.cos(b.dist * torch.pi / blk.cutoff) + 1.0)
        m = blk.filter(e) * env[:, None] * (v[b.dst] @ blk.pre.weight.t())
        n, h = v.shape
        parts = [v, torch.zeros_like(v).index_add_(0, b.src, m * b.weight[:, None])]
        if blk.angular:
            for ang, dim in ((b.ang1, 3), (b.ang2, 6)):
                dens = torch.zeros(n, h, dim).index_add_(0, b.src, m[:, :, None] * ang[:, None, :])
                parts.append(torch.sqrt(dens.pow(2).sum(-1) + 1e-8))
        v = blk.norm(v + blk.update(torch.cat(parts, dim=1)))
    pooled = scatter_mean(model.atom_out(v), b.graph_index, b.num_graphs)
    return model.head(torch.cat([pooled, torch.log(b.volume_per_atom)[:, None]], dim=1))


REFERENCES = {"cgcnn": _reference_cgcnn, "megnet": _reference_megnet,
              "schnet": _reference_density, "angular": _reference_density}


@pytest.mark.parametrize("arch", sorted(REFERENCES) + ["cgcnn/relu", "cgcnn/hard"])
def test_eval_path_equals_the_reference_formulation(arch: str) -> None:
    """Every member type's eval-mode forward (node projections gathered per edge, batch norm
    folded) computes the textbook per-edge formulation on random graphs; for CGCNN also with
    the cheap edge activations of the light large-cell model."""
    arch, _, act = arch.partition("/")
    torch.manual_seed(5)
    model = build_model(arch, n_outputs=2, hidden=16, layers=2, cutoff=6.0,
                        edge_activation=act or "softplus")
    graphs = _random_graphs(5, 6.0, angular=arch == "angular")
    model.train()
    with torch.no_grad():
        model(collate(graphs))  # non-trivial batch-norm running statistics
    model.eval()
    for part in (graphs[:3], graphs[3:], graphs):  # merged images, unit weights, both
        batch = collate(part)
        with torch.no_grad():
            fast, ref = model(batch), REFERENCES[arch](model, batch)
        assert torch.allclose(fast, ref, rtol=1e-4, atol=1e-5), (fast - ref).abs().max()


@pytest.mark.parametrize("architecture,edge_activation",
                         [("cgcnn", "softplus"), ("schnet+cgcnn", "softplus"), ("cgcnn", "hard"),
                          ("schnet+cgcnn", "relu")])
def test_stacked_members_equal_their_own_forward_passes(architecture: str,
                                                        edge_activation: str) -> None:
    """The ensemble's stacked evaluation (CGCNN members side by side, edges in chunks) gives
    each member's own prediction, hence the reference formulation — also for the light
    large-cell members (cheap edge activations)."""
    from surrogates import Ensemble, EnsembleConfig
    from surrogates.stacked import StackedCGCNN

    cfg = EnsembleConfig(architecture=architecture, members=4, hidden=16, layers=2, cutoff=6.0,
                         edge_activation=edge_activation)
    graphs = _random_graphs(6, 6.0)
    states = []
    for k in range(cfg.members):
        torch.manual_seed(10 + k)
        m = build_model(cfg.member_architecture(k), 2, cfg.hidden, cfg.layers, cfg.cutoff,
                        cfg.edge_activation).train()
        with torch.no_grad():
            m(collate(graphs))
        states.append(m.state_dict())
    ens = Ensemble(cfg, ("e_form",), np.array([0.1]), np.array([2.0]), states, n_aux=1)
    fast = ens.predict_graphs(graphs).values
    slow = ens.predict_graphs(graphs, stacked=False).values
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
    assert not np.allclose(fast[0], fast[1])
    cg = [m for m in ens.members if m.__class__.__name__ == "CGCNN"]
    batch = collate(graphs)
    with torch.no_grad():  # tiny edge chunks: the same sums, split differently
        chunked = StackedCGCNN(cg, chunk_floats=64)(batch)
        ref = torch.stack([_reference_cgcnn(m, batch) for m in cg])
    assert torch.allclose(chunked, ref, rtol=1e-4, atol=1e-5), (chunked - ref).abs().max()
