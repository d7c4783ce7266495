"""Descriptors of a crystal read from inside a pretrained universal potential (SevenNet-0).

Why: the potential's total energy is one number; its last message-passing layer holds 128
invariant features per atom that encode each atom's bonding environment as learned from ~10^5
DFT relaxations. Pooled per structure they are a descriptor a small head can map to a target
the potential was never trained on (a heat of formation with another DFT set-up), which a
linear map of the energy alone cannot (``benchmarks/surrogate_arch.py`` measures both).

One batched forward pass without forces gives the energy per atom and the features: 27 ms of
CPU per 5-atom perov_5 cell against 81 ms for the ASE calculator (which also differentiates for
forces; batches of 32, one thread, 2026-12-07). Still far too slow for a 10^6 pool; results
are cached by structure hash. The lab's hidden oracle (CHGNet) is never used here.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence

import numpy as np
from pymatgen.core import Structure

from .graphs import structure_key

DEFAULT_POTENTIAL = "7net-0"
#: the last interaction block's output: invariant (0e) node features only
FEATURE_MODULE = "4_equivariant_gate"
#: invariant channels per block (SevenNet-0: 128x0e first in every gate's output)
WIDTH = 128


#: site-pooled descriptors: the blocks read (chosen on the perov_5 tune split; earlier blocks
#: keep more of each atom's own identity than the last one)
DEFAULT_SITE_LAYERS: tuple[int, ...] = (0, 1, 2, 3)
POOLINGS = ("mean", "site")


class PotentialFeaturesUnavailable(ImportError):
    """The optional pretrained potential (``sevenn``) is not installed."""


def layout(width: int) -> dict[str, slice]:
    """Column blocks of a descriptor row whose node features have ``width`` channels."""
    return {"energy": slice(0, 1), "mean": slice(1, 1 + width),
            "std": slice(1 + width, 1 + 2 * width),
            "atomic_energy": slice(1 + 2 * width, 4 + 2 * width)}


def site_layout(layers: Sequence[int]) -> dict[str, slice]:
    """Column blocks of a site-pooled descriptor row (``pooling="site"``): the energy, then
    per block in ``layers`` the mean features of the A-group, the B-group, the anions, and the
    anions' spread."""
    out = {"energy": slice(0, 1)}
    for k, layer in enumerate(layers):
        for j, part in enumerate(("A", "B", "X", "X_std")):
            start = 1 + (4 * k + j) * WIDTH
            out[f"{layer}_{part}"] = slice(start, start + WIDTH)
    return out


def site_groups(structure: Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atom indices of (A cations, B cations, anions).

    Anions: non-metal, non-metalloid elements with Pauling electronegativity ≥ 2.5 (N, O, F,
    S, Cl, Se, Br, I, C); cations: the rest. Cations whose nearest anion is farther than the
    cations' median are the A-group (the large, highly coordinated site of a perovskite ABX3),
    the others the B-group. A group that comes out empty borrows its neighbour's atoms (no
    anion: every atom is an anion and a cation; one cation: it is A and B)."""
    from pymatgen.core import Element

    el = [Element(sp.symbol) for sp in structure.species]
    anion = np.array([e.X >= 2.5 and not e.is_metal and not e.is_metalloid for e in el])
    x, cations = np.flatnonzero(anion), np.flatnonzero(~anion)
    if len(x) == 0 or len(cations) == 0:
        every = np.arange(len(structure))
        return every, every, every
    dist = structure.distance_matrix[np.ix_(cations, x)].min(axis=1)
    far = dist > np.median(dist)
    a, b = cations[far], cations[~far]
    return (a if len(a) else b), b, x


def site_row(structure: Structure, atoms: np.ndarray, layers: Sequence[int]) -> np.ndarray:
    """The site-pooled descriptor row from ``atom_features`` output of ``layers``."""
    a, b, x = site_groups(structure)
    atoms = np.asarray(atoms, dtype=np.float64)
    parts = [[atoms[:, -1].mean()]]
    for k in range(len(layers)):
        f = atoms[:, k * WIDTH:(k + 1) * WIDTH]
        parts += [f[a].mean(0), f[b].mean(0), f[x].mean(0), f[x].std(0)]
    return np.concatenate(parts).astype(np.float32)


class PotentialFeatures:
    """Per structure, from one forward pass of the potential, with ``pooling="mean"``:
    [energy per atom, mean and std over atoms of the last block's node features, mean / std /
    range of the per-atom energies] (``layout``); with ``pooling="site"``: [energy per atom,
    then for each block in ``layers`` the mean node features of the A-cations, B-cations and
    anions and the anions' std] (``site_layout``, ``site_groups``).

    Why site pooling: a mean over all atoms cannot tell SrTiO3 from a crystal with Sr and Ti
    swapped between the sites, nor which anion sits where; on the perov_5 tune split the kernel
    prior on site-pooled features of blocks 0-3 reaches 0.057 eV/atom against 0.0655 for the
    mean-pooled last block (``benchmarks/perov5_site_kernel.py``)."""

    def __init__(self, model: str = DEFAULT_POTENTIAL, batch_size: int = 32, *,
                 pooling: str = "mean",
                 layers: Sequence[int] = DEFAULT_SITE_LAYERS) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; allowed: {POOLINGS}")
        self.layers = tuple(int(i) for i in layers)
        if not self.layers or any(i < 0 or i > 4 for i in self.layers):
            raise ValueError(f"layers must be in 0..4, got {self.layers}")
        self.model = model
        self.batch_size = int(batch_size)
        self.pooling = pooling
        # cache keys name the pooling so a state saved in one mode never feeds the other
        self._prefix = "" if pooling == "mean" else f"site{''.join(map(str, self.layers))}:"
        self._net = None
        self._cutoff = 0.0
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _network(self):
        if self._net is None:
            from .relax import sevenn_calculator

            calc = sevenn_calculator(self.model, missing=PotentialFeaturesUnavailable(
                "potential features need the optional 'sevenn' package "
                "(pip install 'synthloop[pretrained]')"))
            net = copy.deepcopy(calc.model)
            # energies only: no force/stress head, so no gradient w.r.t. positions
            net.delete_module_by_key("force_output")
            net.key_grad = None
            net.set_is_batch_data(True)
            net.eval()
            self._net, self._cutoff = net, float(calc.cutoff)
        return self._net

    def compute(self, structures: Sequence[Structure]) -> np.ndarray:
        """Descriptor rows (float64; ``layout`` or ``site_layout`` columns); a failing
        structure → ValueError."""
        keys = [self._prefix + structure_key(s, 0.0, 0) for s in structures]
        with self._lock:
            todo = [i for i, k in enumerate(keys) if k not in self._cache]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            part = [structures[i] for i in chunk]
            rows = (self._forward(part) if self.pooling == "mean"
                    else [site_row(s, a, self.layers) for s, a in
                          zip(part, self._forward(part, per_atom=self.layers), strict=True)])
            with self._lock:
                for i, row in zip(chunk, rows, strict=True):
                    self._cache[keys[i]] = row
        with self._lock:
            return np.stack([self._cache[k] for k in keys]).astype(np.float64)

    def _forward(self, structures: Sequence[Structure],
                 per_atom: tuple[int, ...] | None = None) -> list[np.ndarray]:
        # the network first: without sevenn it raises the error naming the optional package,
        # before the bare ModuleNotFoundError of the imports below could
        net = self._network()
        import torch
        from pymatgen.io.ase import AseAtomsAdaptor
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph
        from torch_geometric.loader import DataLoader

        graphs = []
        for s in structures:
            try:
                atoms = AseAtomsAdaptor.get_atoms(s)
                graphs.append(AtomGraphData.from_numpy_dict(
                    unlabeled_atoms_to_graph(atoms, self._cutoff)))
            except Exception as exc:  # noqa: BLE001 - name the structure
                raise ValueError(f"{self.model} cannot build a graph of "
                                 f"{s.composition.reduced_formula}: {exc}") from exc
        captured: dict[str, torch.Tensor] = {}
        names = [f"{i}_equivariant_gate" for i in per_atom] if per_atom else [FEATURE_MODULE]
        hooks = [net._modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(
                name, out["x"][:, :WIDTH].detach().clone())) for name in names]
        try:
            batch = next(iter(DataLoader(graphs, batch_size=len(graphs), shuffle=False)))
            with torch.no_grad():
                out = net(batch)
        finally:
            for hook in hooks:
                hook.remove()
        ea = out["atomic_energy"].detach().double().reshape(-1)
        owner = batch["batch"]
        if per_atom:
            full = torch.cat([captured[n].double() for n in names] + [ea[:, None]], dim=1)
            return [full[owner == g].numpy().astype(np.float32) for g in range(len(structures))]
        x = captured[FEATURE_MODULE].double()
        rows = []
        for g in range(len(structures)):
            sel = owner == g
            xs, es = x[sel], ea[sel]
            n = int(sel.sum())
            std = xs.std(dim=0, unbiased=False) if n > 1 else torch.zeros(xs.shape[1])
            rows.append(np.concatenate([
                [float(es.sum()) / n], xs.mean(dim=0).numpy(), std.numpy(),
                [float(es.mean()), float(es.std(unbiased=False)) if n > 1 else 0.0,
                 float(es.max() - es.min())]]).astype(np.float32))
        if not all(np.isfinite(r).all() for r in rows):
            bad = [s.composition.reduced_formula for s, r in zip(structures, rows, strict=True)
                   if not np.isfinite(r).all()]
            raise ValueError(f"{self.model} gave non-finite features for {bad}")
        return rows

    def atom_features(self, structures: Sequence[Structure],
                      layers: Sequence[int] = (0, 1, 2, 3, 4)) -> list[np.ndarray]:
        """Per structure an ``(atoms, 128·len(layers) + 1)`` float32 array: the invariant (0e)
        node features after each listed interaction block, then the atom's energy. Not cached
        (callers that need them again store them).

        Why: pooling over atoms averages away which site holds which element (a perovskite's
        A, B and X sites); a site-aware head needs the atoms' own rows. Earlier blocks see a
        smaller neighbourhood, so they keep more of the atom's identity than the last one."""
        layers = tuple(int(i) for i in layers)
        if not layers or any(i < 0 or i > 4 for i in layers):
            raise ValueError(f"layers must be in 0..4, got {layers}")
        out: list[np.ndarray] = []
        for start in range(0, len(structures), self.batch_size):
            out.extend(self._forward([*structures[start:start + self.batch_size]],
                                     per_atom=layers))
        return out

    def energies(self, structures: Sequence[Structure]) -> np.ndarray:
        """Energy per atom (eV), the first descriptor column."""
        return self.compute(structures)[:, 0]

    def descriptors(self, structures: Sequence[Structure]) -> np.ndarray:
        """The descriptor rows (what a prior's ``predict`` takes); same as ``compute``."""
        return self.compute(structures)

    def state(self) -> dict[str, np.ndarray]:
        with self._lock:
            return dict(self._cache)

    def load_state(self, cache: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._cache.update({k: np.asarray(v, dtype=np.float32) for k, v in cache.items()})


_SHARED: dict[tuple, PotentialFeatures] = {}
_SHARED_LOCK = threading.Lock()


def shared_features(model: str = DEFAULT_POTENTIAL, *, pooling: str = "site",
                    layers: Sequence[int] = DEFAULT_SITE_LAYERS) -> PotentialFeatures:
    """One ``PotentialFeatures`` per (model, pooling, layers) in this process.

    Why: a campaign retrains and reloads its surrogate many times over one candidate pool;
    each model (trained, fine-tuned or loaded from a checkpoint) that takes its featuriser
    from here shares one loaded network and one cache, so each structure of the pool goes
    through the potential once per process, not once per model."""
    key = (model, pooling, tuple(int(i) for i in layers))
    with _SHARED_LOCK:
        feats = _SHARED.get(key)
        if feats is None:
            feats = _SHARED[key] = PotentialFeatures(model, pooling=pooling, layers=key[2])
        return feats
