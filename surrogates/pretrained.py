"""A pretrained universal interatomic potential as a prior for the graph ensemble.

Why: a few thousand labelled crystals are too few for a graph network to learn bonding from
scratch; a universal potential trained on ~10^6 DFT calculations already knows it. Here
SevenNet-0 (``sevenn``; its weights ship inside the wheel, nothing is downloaded) gives a
total energy per atom; a linear map of that energy and the element fractions is fitted on the
training labels (the per-element references differ between DFT set-ups and targets), and the
ensemble learns only the residual ("delta learning"). The lab's hidden oracle (CHGNet) is
never used here.

Cost: ~10-20 ms per small cell on one core, so it suits training sets and short lists, not a
10^6 pool (the plain ensemble scores those at > 1,000 cells/s).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymatgen.core import Structure

from .ensemble import Ensemble, EnsembleConfig, PredictionTable, train_ensemble
from .graphs import MAX_Z, structure_arrays, structure_key

DEFAULT_POTENTIAL = "7net-0"


class PretrainedUnavailable(ImportError):
    """The optional pretrained potential is not installed."""


class PretrainedEnergy:
    """Energies per atom from an offline universal potential, cached by structure hash."""

    def __init__(self, model: str = DEFAULT_POTENTIAL) -> None:
        self.model = model
        self._calc = None
        self._cache: dict[str, float] = {}
        self._lock = threading.Lock()

    def _calculator(self):
        if self._calc is None:
            from .relax import sevenn_calculator

            self._calc = sevenn_calculator(self.model, missing=PretrainedUnavailable(
                "the pretrained prior needs the optional 'sevenn' package "
                "(pip install 'synthloop[pretrained]')"))
        return self._calc

    def energies(self, structures: Sequence[Structure]) -> np.ndarray:
        """Energy per atom (eV) of each structure; a structure it cannot handle → ValueError."""
        from pymatgen.io.ase import AseAtomsAdaptor

        out = np.empty(len(structures))
        for i, s in enumerate(structures):
            key = structure_key(s, 0.0, 0)
            with self._lock:
                e = self._cache.get(key)
            if e is None:
                atoms = AseAtomsAdaptor.get_atoms(s)
                atoms.calc = self._calculator()
                try:
                    e = float(atoms.get_potential_energy()) / len(atoms)
                except Exception as exc:  # noqa: BLE001 - name the structure
                    raise ValueError(f"{self.model} failed on {s.composition.reduced_formula}: "
                                     f"{exc}") from exc
                with self._lock:
                    self._cache[key] = e
            out[i] = e
        return out

    def relax(self, structure: Structure, *, fmax: float = 0.05, steps: int = 200,
              cell: bool = True) -> tuple[Structure, float, int]:
        """Relax positions (and the cell, ``cell=True``) with the pretrained potential.

        Returns (relaxed structure, energy per atom eV, optimiser steps taken). Why: the
        controller's predicted structures of hypothetical targets are decorations with
        radius-scaled volumes; a relaxed cell is closer to what the lab makes, so its XRD
        reference peaks sit where the product's do. Oxidation-state decorations are dropped.
        """
        from .relax import Relaxer

        if steps < 1 or fmax <= 0:
            raise ValueError("steps must be >= 1 and fmax > 0")
        # one relaxation code path (surrogates.relax), on this prior's already-loaded model
        done = Relaxer(model=self.model, fmax=fmax, max_steps=steps, cell=cell,
                       calculator=self._calculator()).relax(structure)
        return done.structure, done.energy_per_atom, done.steps

    def descriptors(self, structures: Sequence[Structure]) -> np.ndarray:
        """``(n, 1)``: the energy per atom, the only descriptor this potential wrapper gives."""
        return self.energies(structures)[:, None]

    def state(self) -> dict[str, float]:
        return dict(self._cache)

    def load_state(self, cache: dict[str, float]) -> None:
        self._cache.update(cache)


def _features(structures: Sequence[Structure], energy: np.ndarray) -> np.ndarray:
    """[energy per atom, element fractions (MAX_Z columns), 1]."""
    x = np.zeros((len(structures), MAX_Z + 2))
    x[:, 0] = energy
    for i, s in enumerate(structures):
        z = structure_arrays(s)[2]
        np.add.at(x[i], z, 1.0 / len(z))
    x[:, MAX_Z + 1] = 1.0
    return x


@dataclass
class LinearPrior:
    """target ≈ a·E_pretrained + Σ_el x_el·μ_el + b, fitted by ridge least squares."""

    coef: np.ndarray
    ridge: float = 1e-3

    @classmethod
    def fit(cls, structures: Sequence[Structure], energy: np.ndarray, y: np.ndarray,
            ridge: float = 1e-3) -> LinearPrior:
        x = _features(structures, energy)
        ok = np.isfinite(y)
        if ok.sum() < 2:
            raise ValueError("need at least 2 finite labels to fit the pretrained prior")
        used = np.flatnonzero(np.abs(x[ok]).sum(axis=0) > 0)
        a = x[ok][:, used]
        coef_used = np.linalg.solve(a.T @ a + ridge * np.eye(len(used)), a.T @ y[ok])
        coef = np.zeros(x.shape[1])
        coef[used] = coef_used
        return cls(coef, ridge)

    def predict(self, structures: Sequence[Structure], energy: np.ndarray) -> np.ndarray:
        """``energy``: energies per atom, or descriptor rows whose first column is that energy."""
        energy = np.asarray(energy, dtype=np.float64)
        return _features(structures, energy[:, 0] if energy.ndim == 2 else energy) @ self.coef


class DeltaEnsemble:
    """Pretrained prior + graph ensemble on its residual; ``predict`` like an ``Ensemble``.

    ``prior``: a ``LinearPrior`` or ``KernelPrior`` (anything with ``predict(structures,
    descriptors)``); ``potential``: what gives the descriptors (``PretrainedEnergy`` for the
    energy alone, ``PotentialFeatures`` for mean- or site-pooled node features too)."""

    def __init__(self, prior: Any, ensemble: Ensemble, potential: Any):
        self.prior = prior
        self.ensemble = ensemble
        self.potential = potential

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.ensemble.outputs

    @property
    def metrics(self) -> dict[str, Any]:
        return self.ensemble.metrics

    @property
    def inflation(self) -> np.ndarray:
        return self.ensemble.inflation

    def prior_predict(self, structures: Sequence[Structure]) -> np.ndarray:
        """The prior alone (no ensemble): a baseline, and what the ensemble corrects."""
        return self.prior.predict(structures, self.potential.descriptors(structures))

    def predict(self, structures: Sequence[Structure], **kwargs: Any) -> PredictionTable:
        table = self.ensemble.predict(structures, **kwargs)
        base = self.prior_predict(structures)
        values = table.values.copy()
        values[:, :, 0] += base[None, :]
        return PredictionTable(values, table.outputs, table.inflation)


PRIORS = ("linear", "kernel")


def train_delta_ensemble(structures: Sequence[Structure], y: np.ndarray,
                         config: EnsembleConfig | None = None, *,
                         potential: Any | None = None, prior: str = "linear",
                         prior_options: dict[str, Any] | None = None, folds: int = 5,
                         progress=None) -> DeltaEnsemble:
    """Fit the prior on all labels, then the ensemble on the residuals (one output).

    ``prior="linear"``: ridge on the potential's energy and the element fractions; its
    residuals are in-sample (a hundred coefficients on thousands of rows hardly overfit).
    ``prior="kernel"``: ``KernelPrior`` on the potential's pooled features (site-pooled
    unless ``potential`` says otherwise); the ensemble learns
    out-of-fold residuals (``folds``), because in-sample ones are shrunk towards zero.
    The ensemble's own validation split calibrates the spread of the residual, which is the
    spread of the sum (the prior is deterministic)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(y) != len(structures):
        raise ValueError(f"{len(y)} labels for {len(structures)} structures")
    if prior not in PRIORS:
        raise ValueError(f"unknown prior {prior!r}; allowed: {PRIORS}")
    options = dict(prior_options or {})
    if prior == "linear":
        potential = potential or PretrainedEnergy()
        energy = potential.energies(structures)
        head: Any = LinearPrior.fit(structures, energy, y, **options)
        residual = y - head.predict(structures, energy)
    else:
        from .kernel_prior import KernelPrior, out_of_fold
        from .prior_features import PotentialFeatures

        potential = potential or PotentialFeatures(pooling="site")
        desc = potential.descriptors(structures)
        seed = config.seed if config is not None else 0
        residual = y - out_of_fold(structures, desc, y, folds=folds, seed=seed, **options)
        head = KernelPrior.fit(structures, desc, y, **options)
    ens = train_ensemble(structures, residual, config, progress=progress)
    return DeltaEnsemble(head, ens, potential)
