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


def _widen(column: np.ndarray, target: np.ndarray, inflation: float) -> np.ndarray:
    """Members x structures values of one output, spread around their mean so their
    calibrated spread (``inflation`` x member std) becomes ``target``; the mean is unchanged.

    Why rescale the members rather than report a separate std: acquisition reads the members
    (``objective_table`` spreads them by ``inflation``), so only a rescaled member table makes
    it see the combined uncertainty. Members that agree exactly get a fixed symmetric pattern."""
    m = column.shape[0]
    if m < 2:
        return column
    mean = column.mean(axis=0)
    dev = column - mean
    raw = dev.std(axis=0, ddof=1)
    target = np.asarray(target, dtype=np.float64) / max(inflation, 1e-12)
    pattern = np.arange(m) - (m - 1) / 2.0
    pattern = pattern / pattern.std(ddof=1)
    flat = raw <= 1e-12
    scaled = np.where(flat[None, :], pattern[:, None] * target[None, :],
                      dev * (target / np.where(flat, 1.0, raw))[None, :])
    return mean[None, :] + scaled


#: how ``train_delta_ensemble`` combines the members' and the kernel prior's spreads
#: (``fit_spread``); ``True`` means ``DEFAULT_SPREAD``
SPREADS = ("quadrature", "members", "scaled", "excess", "excess-scaled", "nll", "map")
DEFAULT_SPREAD = "map"
_LEVEL = 0.9
Z90 = 1.6448536269514722  # two-sided 90 % normal quantile (the level the spreads are fitted at)


@dataclass(frozen=True)
class SpreadWeights:
    """Combined variance = ``member`` · (members' calibrated std)²
    + ``prior`` · max(0, (prior's calibrated std)² − ``floor``).

    The defaults (1, 1, 0) are the plain quadrature sum: what checkpoints saved before the
    weights existed used, so they load with the spread they were trained with."""

    member: float = 1.0
    prior: float = 1.0
    floor: float = 0.0  # (eV/atom)², GP variance already counted in the members' calibration

    def combine(self, member_std: np.ndarray, prior_std: np.ndarray) -> np.ndarray:
        return np.sqrt(self.member * np.asarray(member_std) ** 2 + self.prior_term(prior_std) ** 2)

    def prior_term(self, prior_std: np.ndarray) -> np.ndarray:
        """The prior's part of the combined spread, as a standard deviation."""
        return np.sqrt(self.prior * np.maximum(np.asarray(prior_std) ** 2 - self.floor, 0.0))

    def to_dict(self) -> dict[str, float]:
        return {"member": self.member, "prior": self.prior, "floor": self.floor}


def _coverage_scale(err: np.ndarray, std: np.ndarray) -> float:
    """The factor c for which 90 % of |err| lie within c · 1.645 · std (as
    ``Ensemble.calibrate`` fits the members' inflation)."""
    ratio = np.abs(err) / np.maximum(std, 1e-12)
    return max(float(np.quantile(ratio, _LEVEL)) / Z90, 1e-6)


def fit_spread(method: str, err: np.ndarray, member_std: np.ndarray, prior_std: np.ndarray,
               prior_std_all: np.ndarray) -> SpreadWeights:
    """Weights of the combined spread, fitted on held-back rows.

    ``err``: the combined prediction's error on rows no member trained on and whose prior
    prediction is out-of-fold (the ensemble's validation split); ``member_std``: the members'
    calibrated spread there; ``prior_std``: the kernel prior's calibrated out-of-fold spread
    there; ``prior_std_all``: the same for every labelled row (all out-of-fold).

    Why not the plain sum: the members learn the residual of the *out-of-fold* prior, and
    their inflation is fitted on it, so their calibrated spread already contains the prior's
    typical error; adding the prior's variance counts it twice (the perov_5 pool's 90 %
    interval covered 0.98-0.995). Methods:

    - ``quadrature``: (1, 1, 0), the plain sum; ``members``: the members' spread alone;
    - ``scaled``: one factor on the plain sum, so ``_LEVEL`` of the held-back errors fall in;
    - ``excess``: the members' spread plus only the prior variance beyond its mean over the
      labelled rows' out-of-fold spreads (what the members' calibration already saw), so
      near the training data the spread is the members' and far from it the GP widens it;
    - ``excess-scaled``: ``excess`` with one factor refitted on the held-back errors;
    - ``nll``: member and prior weights by the Gaussian log-likelihood of the held-back
      errors (a proper scoring rule), floor 0;
    - ``map``: ``nll`` with a log-normal prior on each weight (median 1/2, factor e): if each
      spread alone is calibrated, (1/2, 1/2) calibrates their sum; a few held-back rows (a
      10 % split of 64-112 labels holds 6-11) then move the weights without zeroing one.
    """
    err, member_std, prior_std = (np.asarray(a, dtype=np.float64)
                                  for a in (err, member_std, prior_std))
    ok = np.isfinite(err) & np.isfinite(member_std) & np.isfinite(prior_std)
    err, member_std, prior_std = err[ok], member_std[ok], prior_std[ok]
    prior_std_all = np.asarray(prior_std_all, dtype=np.float64)
    prior_std_all = prior_std_all[np.isfinite(prior_std_all)]
    if method not in SPREADS:
        raise ValueError(f"unknown spread {method!r}; allowed: {SPREADS}")
    if method == "quadrature":
        return SpreadWeights()
    if method == "members":
        return SpreadWeights(1.0, 0.0, 0.0)
    floor = float(np.mean(prior_std_all ** 2)) if len(prior_std_all) else 0.0
    if method == "excess":
        return SpreadWeights(1.0, 1.0, floor)
    if len(err) < 2:  # nothing to fit on: the unscaled rule, or the prior's median
        if method == "map":
            return SpreadWeights(0.5, 0.5, 0.0)
        return SpreadWeights(1.0, 1.0, floor if method == "excess-scaled" else 0.0)
    if method in ("scaled", "excess-scaled"):
        base = SpreadWeights(1.0, 1.0, floor if method == "excess-scaled" else 0.0)
        c2 = _coverage_scale(err, base.combine(member_std, prior_std)) ** 2
        return SpreadWeights(c2, c2, base.floor)
    from scipy.optimize import minimize

    m2, g2, e2 = member_std ** 2, prior_std ** 2, err ** 2

    def nll(theta: np.ndarray) -> float:
        var = np.exp(theta[0]) * m2 + np.exp(theta[1]) * g2 + 1e-12
        return float(np.sum(np.log(var) + e2 / var))

    centre = np.log(0.5)

    def penalised(theta: np.ndarray) -> float:  # 2 x (negative log-posterior)
        return nll(theta) + (float(np.sum((theta - centre) ** 2)) if method == "map" else 0.0)

    start = np.full(2, centre) if method == "map" else np.zeros(2)
    res = minimize(penalised, start, method="L-BFGS-B", bounds=[(-9.0, 4.0)] * 2)
    return SpreadWeights(float(np.exp(res.x[0])), float(np.exp(res.x[1])), 0.0)


class DeltaEnsemble:
    """Pretrained prior + graph ensemble on its residual; ``predict`` like an ``Ensemble``.

    ``prior``: a ``LinearPrior`` or ``KernelPrior`` (anything with ``predict(structures,
    descriptors)``); ``potential``: what gives the descriptors (``PretrainedEnergy`` for the
    energy alone, ``PotentialFeatures`` for mean- or site-pooled node features too).
    ``output``: the ensemble output the prior adds to (default the first); the others pass
    through (a campaign's yield head). ``combine_spread``: widen that output's member spread
    by the prior's calibrated GP spread (``KernelPrior.std``) in quadrature — the members only
    know the residual's uncertainty where they were trained, the GP also knows how far a
    crystal lies from every training crystal. ``spread`` weighs the two (``SpreadWeights``,
    fitted on held-back rows by ``train_delta_ensemble``; the default is the plain quadrature
    sum, which over-covers near the training data because the members' calibration already
    holds the prior's typical error). ``spread_metrics``: how the weights were fitted."""

    def __init__(self, prior: Any, ensemble: Ensemble, potential: Any, *,
                 output: str | None = None, combine_spread: bool = False,
                 spread: SpreadWeights | None = None,
                 spread_metrics: dict[str, Any] | None = None):
        if output is not None and output not in ensemble.outputs:
            raise ValueError(f"no output {output!r}; the ensemble has {list(ensemble.outputs)}")
        self.prior = prior
        self.ensemble = ensemble
        self.potential = potential
        self.output = output
        self.combine_spread = bool(combine_spread)
        self.spread = spread or SpreadWeights()
        self.spread_metrics: dict[str, Any] = dict(spread_metrics or {})
        self.spread_fit_rows: dict[str, np.ndarray] | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.ensemble.outputs

    @property
    def output_name(self) -> str:
        return self.output or self.ensemble.outputs[0]

    @property
    def metrics(self) -> dict[str, Any]:
        """The ensemble's metrics, and how the combined spread was fitted (``spread_*``)."""
        return {**self.ensemble.metrics, **self.spread_metrics}

    @property
    def inflation(self) -> np.ndarray:
        return self.ensemble.inflation

    def prior_predict(self, structures: Sequence[Structure]) -> np.ndarray:
        """The prior alone (no ensemble): a baseline, and what the ensemble corrects."""
        return self.prior.predict(structures, self.potential.descriptors(structures))

    def prior_std(self, structures: Sequence[Structure]) -> np.ndarray:
        """The prior's part of the combined spread: ``spread.prior_term`` of its calibrated GP
        spread (the whole GP spread under the default weights; zeros for a prior without one,
        e.g. ``LinearPrior``). ``predict``'s std is hypot(members' std·√member, this)."""
        if not hasattr(self.prior, "std"):
            return np.zeros(len(structures))
        return self.spread.prior_term(self.prior.std(structures,
                                                     self.potential.descriptors(structures)))

    def predict(self, structures: Sequence[Structure], **kwargs: Any) -> PredictionTable:
        table = self.ensemble.predict(structures, **kwargs)
        if len(structures) == 0:
            return table
        j = self.outputs.index(self.output_name)
        desc = self.potential.descriptors(structures)
        values = table.values.copy()
        values[:, :, j] += self.prior.predict(structures, desc)[None, :]
        if self.combine_spread and hasattr(self.prior, "std"):
            infl = float(table.inflation[j])
            own = values[:, :, j].std(axis=0, ddof=1) * infl if len(values) > 1 else 0.0
            target = self.spread.combine(own, self.prior.std(structures, desc))
            values[:, :, j] = _widen(values[:, :, j], target, infl)
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
                             combine_spread=self.combine_spread, spread=self.spread,
                             spread_metrics=self.spread_metrics)

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

        meta: dict[str, Any] = {"output": self.output, "combine_spread": self.combine_spread,
                                "spread": self.spread.to_dict(),
                                "spread_metrics": {k: v for k, v in self.spread_metrics.items()
                                                   if isinstance(v, (int, float, str, bool))}}
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
        # files saved before the weights existed: the plain quadrature sum they used
        spread = SpreadWeights(**meta["spread"]) if "spread" in meta else None
        return cls(prior, ensemble, potential, output=meta["output"],
                   combine_spread=meta["combine_spread"], spread=spread,
                   spread_metrics=meta.get("spread_metrics"))


PRIORS = ("linear", "kernel")


def train_delta_ensemble(structures: Sequence[Structure], y: np.ndarray | dict[str, Any],
                         config: EnsembleConfig | None = None, *,
                         potential: Any | None = None, prior: str = "linear",
                         prior_options: dict[str, Any] | None = None, folds: int = 5,
                         output: str | None = None, combine_spread: bool | str = False,
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
    The ensemble's own validation split calibrates the spread of the residual.
    ``combine_spread`` (kernel prior only) widens the members' spread by the prior's: a
    ``SPREADS`` method (``True``: ``DEFAULT_SPREAD``), its ``SpreadWeights`` fitted by
    ``fit_spread`` on the ensemble's validation rows (no member trained on them, their prior
    predictions are out-of-fold) — ``"quadrature"`` is the plain sum of earlier versions."""
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
    method = DEFAULT_SPREAD if combine_spread is True else combine_spread or None
    if method is not None and method not in SPREADS:
        raise ValueError(f"unknown combine_spread {combine_spread!r}; allowed: {SPREADS}")
    options = dict(prior_options or {})
    prior_std_oof = None
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
        head, oof, prior_std_oof = KernelPrior.fit_calibrated(
            structures, desc, y, folds=folds, seed=seed, return_std=True, **options)
        residual = y - oof
    if targets is not None:
        targets[output] = residual
    ens = train_ensemble(structures, residual if targets is None else targets, config,
                         progress=progress, member_map=member_map)
    model = DeltaEnsemble(head, ens, potential, output=output if targets is not None else None,
                          combine_spread=method is not None)
    if method is not None and prior_std_oof is not None:
        held = held_back(model, structures, residual, prior_std_oof, config)
        model.spread_fit_rows = held  # not saved: lets a benchmark refit other SPREADS
        fitted = fit_spread(method, **held)
        combined = fitted.combine(held["member_std"], held["prior_std"])
        # the members' weight goes into their inflation (what acquisition scales them by), so
        # the combined spread stays hypot(members' std, prior_std) for every reader
        j = model.outputs.index(model.output_name)
        ens.inflation[j] *= np.sqrt(fitted.member)
        model.spread = SpreadWeights(1.0, fitted.prior, fitted.floor)
        ok = np.isfinite(held["err"])
        model.spread_metrics = {
            "spread": method, "spread_n_fit": int(ok.sum()),
            **{f"spread_{k}": v for k, v in fitted.to_dict().items()},
            "spread_fit_coverage_90": float(np.mean(np.abs(held["err"][ok])
                                                    <= Z90 * combined[ok]))
            if ok.any() else float("nan")}
    return model


def held_back(model: DeltaEnsemble, structures: Sequence[Structure], residual: np.ndarray,
              prior_std_oof: np.ndarray, config: EnsembleConfig | None) -> dict[str, np.ndarray]:
    """``fit_spread``'s inputs from a freshly trained kernel ``DeltaEnsemble``: on the
    ensemble's validation rows (``validation_split``), the combined prediction's error with
    the prior's out-of-fold prediction (= the out-of-fold residual minus the members' mean),
    the members' calibrated spread and the prior's out-of-fold spread; and that spread on
    every labelled row. Public so a benchmark can compare ``SPREADS`` on one trained model
    (call it before the members' weight is folded into their inflation)."""
    from .ensemble import validation_split

    val, _ = validation_split(len(structures), config or EnsembleConfig())
    table = model.ensemble.predict([structures[i] for i in val])
    j = model.outputs.index(model.output_name)
    return {"err": np.asarray(residual, dtype=np.float64)[val] - table.mean[:, j],
            "member_std": table.std[:, j], "prior_std": np.asarray(prior_std_oof)[val],
            "prior_std_all": np.asarray(prior_std_oof)[np.isfinite(residual)]}
