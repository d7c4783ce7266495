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


class PotentialFeaturesUnavailable(ImportError):
    """The optional pretrained potential (``sevenn``) is not installed."""


def layout(width: int) -> dict[str, slice]:
    """Column blocks of a descriptor row whose node features have ``width`` channels."""
    return {"energy": slice(0, 1), "mean": slice(1, 1 + width),
            "std": slice(1 + width, 1 + 2 * width),
            "atomic_energy": slice(1 + 2 * width, 4 + 2 * width)}


class PotentialFeatures:
    """Per structure: [energy per atom, mean and std over atoms of the node features, mean /
    std / range of the per-atom energies], from one forward pass of the potential."""

    def __init__(self, model: str = DEFAULT_POTENTIAL, batch_size: int = 32) -> None:
        self.model = model
        self.batch_size = int(batch_size)
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
        """Descriptor rows (float64, ``(n, 4 + 2·width)``); a failing structure → ValueError."""
        keys = [structure_key(s, 0.0, 0) for s in structures]
        with self._lock:
            todo = [i for i, k in enumerate(keys) if k not in self._cache]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            rows = self._forward([structures[i] for i in chunk])
            with self._lock:
                for i, row in zip(chunk, rows, strict=True):
                    self._cache[keys[i]] = row
        with self._lock:
            return np.stack([self._cache[k] for k in keys]).astype(np.float64)

    def _forward(self, structures: Sequence[Structure]) -> list[np.ndarray]:
        import torch
        from pymatgen.io.ase import AseAtomsAdaptor
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph
        from torch_geometric.loader import DataLoader

        net = self._network()
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
        hook = net._modules[FEATURE_MODULE].register_forward_hook(
            lambda _m, _i, out: captured.__setitem__("x", out["x"].detach().clone()))
        try:
            batch = next(iter(DataLoader(graphs, batch_size=len(graphs), shuffle=False)))
            with torch.no_grad():
                out = net(batch)
        finally:
            hook.remove()
        x = captured["x"].double()
        ea = out["atomic_energy"].detach().double().reshape(-1)
        owner = batch["batch"]
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
