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

import io
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


#: first bytes of a saved ``DeltaEnsemble`` (an ``Ensemble`` checkpoint is a bare torch zip)
DELTA_MAGIC = b"synthloop-delta-ensemble\x00v1\n"


def _widen(column: np.ndarray, extra: np.ndarray, inflation: float) -> np.ndarray:
    """Members x structures values of one output, spread around their mean so the calibrated
    spread (``inflation`` x member std) becomes sqrt(own² + extra²); the mean is unchanged.

    Why rescale the members rather than report a separate std: acquisition reads the members
    (``objective_table`` spreads them by ``inflation``), so only a wider member table makes it
    see the extra uncertainty. Members that agree exactly get a fixed symmetric pattern."""
    m = column.shape[0]
    if m < 2:
        return column
    mean = column.mean(axis=0)
    dev = column - mean
    raw = dev.std(axis=0, ddof=1)
    target = np.sqrt(raw ** 2 + (np.asarray(extra, dtype=np.float64) / max(inflation, 1e-12)) ** 2)
    pattern = np.arange(m) - (m - 1) / 2.0
    pattern = pattern / pattern.std(ddof=1)
    flat = raw <= 1e-12
    scaled = np.where(flat[None, :], pattern[:, None] * target[None, :],
                      dev * (target / np.where(flat, 1.0, raw))[None, :])
    return mean[None, :] + scaled


class DeltaEnsemble:
    """Pretrained prior + graph ensemble on its residual; ``predict`` like an ``Ensemble``.

    ``prior``: a ``LinearPrior`` or ``KernelPrior`` (anything with ``predict(structures,
    descriptors)``); ``potential``: what gives the descriptors (``PretrainedEnergy`` for the
    energy alone, ``PotentialFeatures`` for mean- or site-pooled node features too).
    ``output``: the ensemble output the prior adds to (default the first); the others pass
    through (a campaign's yield head). ``combine_spread``: widen that output's member spread
    by the prior's calibrated GP spread (``KernelPrior.std``) in quadrature — the members only
    know the residual's uncertainty where they were trained, the GP also knows how far a
    crystal lies from every training crystal; the two are treated as independent errors, so
    their variances add."""

    def __init__(self, prior: Any, ensemble: Ensemble, potential: Any, *,
                 output: str | None = None, combine_spread: bool = False):
        if output is not None and output not in ensemble.outputs:
            raise ValueError(f"no output {output!r}; the ensemble has {list(ensemble.outputs)}")
        self.prior = prior
        self.ensemble = ensemble
        self.potential = potential
        self.output = output
        self.combine_spread = bool(combine_spread)

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.ensemble.outputs

    @property
    def output_name(self) -> str:
        return self.output or self.ensemble.outputs[0]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.ensemble.metrics

    @property
    def inflation(self) -> np.ndarray:
        return self.ensemble.inflation

    def prior_predict(self, structures: Sequence[Structure]) -> np.ndarray:
        """The prior alone (no ensemble): a baseline, and what the ensemble corrects."""
        return self.prior.predict(structures, self.potential.descriptors(structures))

    def prior_std(self, structures: Sequence[Structure]) -> np.ndarray:
        """The prior's calibrated spread (zeros for a prior without one, e.g. ``LinearPrior``)."""
        if not hasattr(self.prior, "std"):
            return np.zeros(len(structures))
        return self.prior.std(structures, self.potential.descriptors(structures))

    def predict(self, structures: Sequence[Structure], **kwargs: Any) -> PredictionTable:
        table = self.ensemble.predict(structures, **kwargs)
        if len(structures) == 0:
            return table
        j = self.outputs.index(self.output_name)
        desc = self.potential.descriptors(structures)
        values = table.values.copy()
        values[:, :, j] += self.prior.predict(structures, desc)[None, :]
        if self.combine_spread and hasattr(self.prior, "std"):
            values[:, :, j] = _widen(values[:, :, j], self.prior.std(structures, desc),
                                     float(table.inflation[j]))
        return PredictionTable(values, table.outputs, table.inflation)

    def fine_tune(self, structures: Sequence[Structure], targets: dict[str, Any],
                  **kwargs: Any) -> DeltaEnsemble:
        """``Ensemble.fine_tune`` on the members (the prior is kept): labels of the prior's
        output become residuals, the other outputs (e.g. campaign yields) pass through."""
        targets = dict(targets)
        name = self.output_name
        if name in targets:
            y = np.asarray(targets[name], dtype=np.float64).reshape(-1)
            targets[name] = y - self.prior_predict(structures)
        return DeltaEnsemble(self.prior, self.ensemble.fine_tune(structures, targets, **kwargs),
                             self.potential, output=self.output,
                             combine_spread=self.combine_spread)

    # ------------------------------------------------------------------ checkpoints
    @staticmethod
    def is_checkpoint(data: bytes) -> bool:
        return bytes(data[:len(DELTA_MAGIC)]) == DELTA_MAGIC

    def to_bytes(self) -> bytes:
        """Prior arrays, potential settings and the ensemble's own bytes in one npz (no pickle)
        after ``DELTA_MAGIC``; ``from_bytes`` restores identical predictions. The potential's
        feature cache is not saved (~16 kB per structure): a restarted process featurises its
        pool again, once (``prior_features.shared_features``)."""
        import json

        from .kernel_prior import KernelPrior
        from .prior_features import PotentialFeatures

        meta: dict[str, Any] = {"output": self.output, "combine_spread": self.combine_spread}
        if isinstance(self.prior, KernelPrior):
            meta["prior"], arrays = "kernel", self.prior.state()
        elif isinstance(self.prior, LinearPrior):
            meta["prior"] = "linear"
            arrays = {"lp_coef": np.asarray(self.prior.coef),
                      "lp_ridge": np.array(float(self.prior.ridge))}
        else:
            raise TypeError(f"cannot save a {type(self.prior).__name__} prior")
        if isinstance(self.potential, PotentialFeatures):
            meta["potential"] = {"kind": "features", "model": self.potential.model,
                                 "pooling": self.potential.pooling,
                                 "layers": list(self.potential.layers)}
        elif isinstance(self.potential, PretrainedEnergy):
            meta["potential"] = {"kind": "energy", "model": self.potential.model}
        else:
            raise TypeError(f"cannot save a {type(self.potential).__name__} potential")
        arrays["ensemble"] = np.frombuffer(self.ensemble.to_bytes(), dtype=np.uint8)
        arrays["meta"] = np.array(json.dumps(meta))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return DELTA_MAGIC + buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> DeltaEnsemble:
        import json

        from .kernel_prior import KernelPrior
        from .prior_features import shared_features

        if not cls.is_checkpoint(data):
            raise ValueError("not a saved surrogates.DeltaEnsemble")
        try:
            with np.load(io.BytesIO(bytes(data[len(DELTA_MAGIC):])), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays.pop("meta")))
            blob = arrays.pop("ensemble").tobytes()
        except Exception as exc:  # noqa: BLE001 - truncated or foreign bytes
            raise ValueError(f"not a saved surrogates.DeltaEnsemble: {exc}") from exc
        ensemble = Ensemble.from_bytes(blob)
        prior: Any = (KernelPrior.from_state(arrays) if meta["prior"] == "kernel"
                      else LinearPrior(arrays["lp_coef"], float(arrays["lp_ridge"])))
        pot = meta["potential"]
        potential: Any = (shared_features(pot["model"], pooling=pot["pooling"],
                                          layers=pot["layers"])
                          if pot["kind"] == "features" else PretrainedEnergy(pot["model"]))
        return cls(prior, ensemble, potential, output=meta["output"],
                   combine_spread=meta["combine_spread"])


PRIORS = ("linear", "kernel")


def train_delta_ensemble(structures: Sequence[Structure], y: np.ndarray | dict[str, Any],
                         config: EnsembleConfig | None = None, *,
                         potential: Any | None = None, prior: str = "linear",
                         prior_options: dict[str, Any] | None = None, folds: int = 5,
                         output: str | None = None, combine_spread: bool = False,
                         member_map=None, progress=None) -> DeltaEnsemble:
    """Fit the prior on all labels, then the ensemble on the residuals.

    ``y``: labels of one output, or a dict of outputs (like ``train_ensemble``'s targets)
    whose ``output`` (default: the first) gets the prior; the others train as they are.
    ``prior="linear"``: ridge on the potential's energy and the element fractions; its
    residuals are in-sample (a hundred coefficients on thousands of rows hardly overfit).
    ``prior="kernel"``: ``KernelPrior`` on the potential's pooled features (site-pooled,
    from the process-wide ``shared_features``, unless ``potential`` says otherwise); the
    ensemble learns out-of-fold residuals (``folds``), because in-sample ones are shrunk
    towards zero, and the head's ``std`` is scaled on them (``fit_calibrated``).
    The ensemble's own validation split calibrates the spread of the residual;
    ``combine_spread`` adds the kernel prior's spread in quadrature (``DeltaEnsemble``)."""
    targets: dict[str, np.ndarray] | None = None
    if isinstance(y, dict):
        targets = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in y.items()}
        if not targets:
            raise ValueError("no targets")
        output = output or next(iter(targets))
        if output not in targets:
            raise ValueError(f"no target {output!r}; targets are {list(targets)}")
        y = targets[output]
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
        from .kernel_prior import KernelPrior
        from .prior_features import shared_features

        potential = potential or shared_features(pooling="site")
        desc = potential.descriptors(structures)
        seed = config.seed if config is not None else 0
        folds = max(2, min(folds, int(np.isfinite(y).sum())))
        head, oof = KernelPrior.fit_calibrated(structures, desc, y, folds=folds, seed=seed,
                                               **options)
        residual = y - oof
    if targets is not None:
        targets[output] = residual
    ens = train_ensemble(structures, residual if targets is None else targets, config,
                         progress=progress, member_map=member_map)
    return DeltaEnsemble(head, ens, potential, output=output if targets is not None else None,
                         combine_spread=combine_spread)
