"""The stacked CGCNN evaluator with tabulated edge terms and the exp2 softplus
(``surrogates/stacked.py``) against the previous evaluator (Gaussian matmul per edge,
``F.softplus``) and the members' own forward passes: real structures, the overflow fallback,
distances at the end of the table, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from surrogates import Ensemble, EnsembleConfig, build_graph, read_structure_csv
from surrogates.graphs import collate
from surrogates.models import build_model
from surrogates.stacked import StackedCGCNN

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "structures"
PEROV = SHARED / "data_perov_5_test.csv.gz"
ALEXANDRIA = SHARED / "alexandria-random-1k.xyz.gz"


def _large_cells(n: int, seed: int = 0) -> list[Structure]:
    """Alexandria crystals repeated to 96-128 atoms, every atom displaced 0.05-0.1 Å (seeded):
    the ~100-atom cells the speed-up is for, without the symmetry of exact supercells."""
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    rng = np.random.default_rng(seed)
    out = []
    for atoms in read(ALEXANDRIA, index=":40"):
        s = AseAtomsAdaptor.get_structure(atoms)
        reps = [1, 1, 1]
        while len(s) * int(np.prod(reps)) < 96:
            reps[int(np.argmin(np.array(s.lattice.abc) * reps))] += 1
        if len(s) * int(np.prod(reps)) > 128:
            continue
        big = s * reps
        u = rng.normal(size=(len(big), 3))
        u *= (rng.uniform(0.05, 0.1, len(big)) / np.linalg.norm(u, axis=1))[:, None]
        out.append(Structure(big.lattice, big.species, big.cart_coords + u,
                             coords_are_cartesian=True))
        if len(out) == n:
            break
    return out


@pytest.mark.skipif(not (PEROV.exists() and ALEXANDRIA.exists()), reason="shared data missing")
def test_tabulated_edges_predict_real_structures_within_1e4() -> None:
    """A default-shape ensemble (5 × CGCNN, hidden 64, 12 neighbours, softplus) with batch-norm
    statistics of perov_5 graphs: on perov_5 cells and perturbed ~100-atom Alexandria
    supercells the tabulated evaluator is within 1e-4 eV/atom of the previous one and of
    each member's own forward pass; a saved ensemble reloads to the same predictions."""
    structures, y, _ = read_structure_csv(PEROV, "heat_ref", limit=120)
    cfg = EnsembleConfig(members=5)  # the default shape: hidden 64, 3 layers, 12 neighbours
    assert (cfg.hidden, cfg.max_neighbors, cfg.edge_activation) == (64, 12, "softplus")
    # members as after training: batch-norm statistics of real graphs (training itself takes
    # ~30 s and does not change what is compared)
    fit = collate([build_graph(s, cfg.cutoff, cfg.max_neighbors) for s in structures[:40]])
    states = []
    for k in range(cfg.members):
        torch.manual_seed(k)
        m = build_model(cfg.member_architecture(k), 2, cfg.hidden, cfg.layers, cfg.cutoff).train()
        with torch.no_grad():
            m(fit)
        states.append(m.state_dict())
    ens = Ensemble(cfg, ("heat_ref",), np.array([float(np.mean(y))]),
                   np.array([float(np.std(y))]), states, n_aux=1)
    pool = list(structures[40:]) + _large_cells(6)
    graphs = ens.graphs(pool, use_cache=False)
    assert max(len(g.src) for g in graphs) > 1000  # the large cells are in

    now = ens.predict_graphs(graphs).values
    own = ens.predict_graphs(graphs, stacked=False).values
    group = tuple(range(len(ens.members)))
    assert isinstance(ens._stacked[group], StackedCGCNN) and ens._stacked[group].grid_step
    ens._stacked[group] = StackedCGCNN(ens.members, grid_step=None)  # the previous evaluator
    before = ens.predict_graphs(graphs).values
    assert np.abs(now - before).max() <= 1e-4, np.abs(now - before).max()
    assert np.abs(now - own).max() <= 1e-4, np.abs(now - own).max()
    assert np.abs(before - own).max() <= 1e-4  # the reference itself agrees (float32 noise)

    again = Ensemble.from_bytes(ens.to_bytes()).predict_graphs(graphs).values
    np.testing.assert_array_equal(again, now)


def _members(k: int, hidden: int = 16, core_shift: float = 0.0) -> list:
    """``k`` CGCNN members with non-trivial batch-norm statistics; ``core_shift`` is added to
    the core half of every first batch norm's bias (pre-activations far past exp's range)."""
    cells = [Structure(Lattice.cubic(a), ["Sr", "Ti", "O", "O", "O"],
                       [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
             for a in (3.8, 4.0)]
    rng = np.random.default_rng(3)
    lat = np.diag([7.1, 7.9, 8.6]) + rng.uniform(-0.5, 0.5, (3, 3))
    cells.append(Structure(lat, list(rng.choice(["Li", "Fe", "O", "F"], 9)), rng.uniform(size=(9, 3))))
    graphs = [build_graph(s, 6.0, 12) for s in cells]
    members = []
    for i in range(k):
        torch.manual_seed(20 + i)
        m = build_model("cgcnn", 2, hidden, 2, 6.0).train()
        with torch.no_grad():
            m(collate(graphs))
            for conv in m.convs:
                conv.bn1.bias[hidden:] += core_shift
        members.append(m.eval())
    return members, graphs


def test_overflowing_core_falls_back_to_softplus() -> None:
    """Cores beyond 88 overflow 2^(core·log₂e): the layer is recomputed with ``F.softplus``,
    so the result still equals the previous evaluator and the members' own passes."""
    members, graphs = _members(3, core_shift=150.0)  # 2^(150·log₂e) = inf in float32
    batch = collate(graphs)
    with torch.no_grad():
        fast = StackedCGCNN(members, chunk_floats=256)(batch)
        old = StackedCGCNN(members, grid_step=None)(batch)
        own = torch.stack([m(batch) for m in members])
    assert torch.isfinite(fast).all()
    assert torch.allclose(fast, old, rtol=1e-5, atol=1e-4), (fast - old).abs().max()
    assert torch.allclose(fast, own, rtol=1e-5, atol=1e-4), (fast - own).abs().max()


@pytest.mark.parametrize("grid_step", [0.01, 0.02, 0.05])
def test_table_covers_every_distance_up_to_the_cutoff(grid_step: float) -> None:
    """Edges at any distance in (0, cutoff], including exactly the cutoff and beyond the last
    grid point (clamped: the Gaussians are exact zeros there), give the matmul's edge term."""
    members, graphs = _members(2)
    stack = StackedCGCNN(members, grid_step=grid_step)
    batch = collate(graphs[:1])
    dist = torch.tensor([1e-3, 0.7, 2.345, 5.999, 6.0, 7.9, 12.0])
    n_e = dist.shape[0]
    edges = type(batch)(z=batch.z, src=torch.zeros(n_e, dtype=torch.long),
                        dst=torch.ones(n_e, dtype=torch.long), dist=dist,
                        weight=torch.ones(n_e), graph_index=batch.graph_index,
                        edge_graph=torch.zeros(n_e, dtype=torch.long), num_graphs=1,
                        atoms_per_graph=batch.atoms_per_graph,
                        volume_per_atom=batch.volume_per_atom)
    n = batch.z.shape[0]
    idx, w, lo, hi = stack._edge_rows(edges, n)
    e = stack.rbf(dist).double()
    for (*_, table), (*_, w_edge, _, _) in zip(stack.tabulated, stack.layers, strict=True):
        rows = table[lo:hi].double()
        got = (w[:, 2:, None].double() * rows[idx[:, 2:] - 2 * n]).sum(1)
        want = e @ w_edge.double()
        want[:, w_edge.shape[1] // 2:] /= np.log(2.0)  # core columns carry log₂e
        tol = 1e-3 if grid_step == 0.05 else 1e-4
        assert (got - want).abs().max() <= tol * want.abs().max(), (got - want).abs().max()


def test_light_activation_members_use_the_table_without_exp2() -> None:
    """Members with the cheap edge activations read the table but keep their own activation
    (no log₂e scaling): the stack equals each member's own forward pass."""
    for kind in ("hard", "relu"):
        cfg_members = []
        for i in range(3):
            torch.manual_seed(40 + i)
            cfg_members.append(build_model("cgcnn", 2, 16, 2, 6.0, edge_activation=kind).eval())
        _, graphs = _members(1)
        batch = collate(graphs)
        stack = StackedCGCNN(cfg_members)
        assert not stack.fast_softplus
        with torch.no_grad():
            fast = stack(batch)
            own = torch.stack([m(batch) for m in cfg_members])
        assert torch.allclose(fast, own, rtol=1e-5, atol=1e-5), (fast - own).abs().max()
