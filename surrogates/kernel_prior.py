"""A kernel-ridge head on a pretrained potential's pooled features, used as the ensemble's prior.

Why: a linear map of the potential's energy and the element fractions (``LinearPrior``) cannot
correct errors that depend on the bonding environment (e.g. which cation sits on which site of
a perovskite, or a nitrogen-for-oxygen swap the potential's training data rarely saw). The
potential's last-layer features describe those environments; a Gaussian-kernel ridge
regression on them (a GP posterior mean) learns the map from a few thousand labels without
training a network. The graph ensemble then learns what is left (``pretrained``).

Which features: ``PotentialFeatures(pooling="site")`` rows (A-site, B-site and anion means
of blocks 0-3) by default: they keep which element sits on which site, which a mean over all
atoms averages away (perov_5 tune split: 0.0655 → 0.057 eV/atom).

Why out-of-fold residuals: kernel ridge nearly interpolates its training labels, so in-sample
residuals are far smaller than on new crystals; an ensemble trained (and calibrated) on them
would learn nothing and be over-confident. ``out_of_fold`` gives each training row the
prediction of a head that did not see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure
from scipy.linalg import cho_factor, cho_solve

from .graphs import MAX_Z
from .pretrained import LinearPrior, _features
from .prior_features import layout

#: kernel settings chosen on the perov_5 tune split (``perov5_site_kernel.py grid``), for
#: ``PotentialFeatures(pooling="site")`` rows; ``features`` = every column after the energy
DEFAULT_BLOCKS: tuple[str, ...] = ("features",)
DEFAULT_LENGTHSCALE = 1.4
DEFAULT_COMPOSITION_SCALE: float | None = 0.6
DEFAULT_RIDGE = 1e-2
Z90 = 1.6448536269514722  # two-sided 90 % normal quantile


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _fractions(structures: Sequence[Structure]) -> np.ndarray:
    """Element fractions (``MAX_Z`` columns, index = Z)."""
    return _features(structures, np.zeros(len(structures)))[:, 1:MAX_Z + 1]


def _columns(width_total: int, blocks: Sequence[str]) -> np.ndarray:
    if tuple(blocks) == ("features",):  # every column after the energy, any layout
        if width_total < 2:
            raise ValueError(f"descriptor rows of {width_total} columns have no features")
        return np.arange(1, width_total)
    if (width_total - 4) % 2 or width_total < 6:
        raise ValueError(f"descriptor rows of {width_total} columns are not potential features "
                         "(expected 4 + 2·width)")
    parts = layout((width_total - 4) // 2)
    unknown = set(blocks) - set(parts)
    if unknown or not blocks:
        raise ValueError(f"unknown descriptor blocks {sorted(unknown)}; allowed: "
                         f"{sorted(parts)} or ('features',)")
    return np.concatenate([np.arange(width_total)[parts[b]] for b in blocks])


@dataclass
class KernelPrior:
    """target ≈ LinearPrior(energy, fractions) + GP posterior mean with the kernel
    exp(−|z − z'|² / 2ℓ²d) · exp(−|c − c'|² / 2w²), z the standardised potential features
    (d columns of ``blocks``; the default takes every column after the energy, so it works on
    mean-pooled and site-pooled rows alike), c the element fractions.

    Why the composition factor: two crystals whose atoms sit in similar environments but hold
    different elements should not share a correction; on the perov_5 tune split it took the
    prior alone from 0.084 to 0.065 eV/atom (``benchmarks/surrogate_arch.py --heads-only``).
    ``composition_scale=None`` drops the factor. ``std`` gives the GP's predictive spread,
    scaled on out-of-fold residuals when fitted through ``fit_calibrated``.
    """

    linear: LinearPrior
    columns: np.ndarray
    mu: np.ndarray
    sd: np.ndarray
    z_train: np.ndarray
    c_train: np.ndarray
    alpha: np.ndarray
    chol: np.ndarray
    offset: float
    amplitude: float
    lengthscale: float
    composition_scale: float | None
    ridge: float
    inflation: float = 1.0

    @classmethod
    def fit(cls, structures: Sequence[Structure], desc: np.ndarray, y: np.ndarray, *,
            blocks: Sequence[str] = DEFAULT_BLOCKS, lengthscale: float = DEFAULT_LENGTHSCALE,
            composition_scale: float | None = DEFAULT_COMPOSITION_SCALE,
            ridge: float = DEFAULT_RIDGE) -> KernelPrior:
        desc = np.asarray(desc, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if desc.ndim != 2 or len(desc) != len(y) or len(y) != len(structures):
            raise ValueError(f"{len(y)} labels, {len(structures)} structures, "
                             f"descriptors of shape {desc.shape}")
        if lengthscale <= 0 or ridge <= 0 or (composition_scale is not None
                                              and composition_scale <= 0):
            raise ValueError("lengthscale, composition_scale and ridge must be > 0")
        ok = np.flatnonzero(np.isfinite(y))
        cols = _columns(desc.shape[1], blocks)
        kept = [structures[i] for i in ok]
        linear = LinearPrior.fit(kept, desc[ok, 0], y[ok])
        r = y[ok] - linear.predict(kept, desc[ok, 0])
        x = desc[ok][:, cols]
        mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-8
        z = (x - mu) / sd
        c = _fractions(kept)
        head = cls(linear, cols, mu, sd, z, c, np.empty(0), np.empty((0, 0)), 0.0, 1.0,
                   float(lengthscale), composition_scale, float(ridge))
        k = head._kernel(z, c)
        k[np.diag_indices_from(k)] += ridge
        head.chol = cho_factor(k, lower=True)[0]
        head.offset = float(r.mean())
        head.alpha = cho_solve((head.chol, True), r - head.offset)
        # maximum-likelihood signal variance for this kernel shape (GP with noise = ridge)
        head.amplitude = float(max((r - head.offset) @ head.alpha / len(r), 1e-12))
        return head

    @classmethod
    def fit_calibrated(cls, structures: Sequence[Structure], desc: np.ndarray, y: np.ndarray,
                       *, folds: int = 5, seed: int = 0, return_std: bool = False,
                       **options):
        """Fit on all rows, and scale ``std`` so the 90 % interval covers 90 % of the
        out-of-fold residuals. Returns (head, out-of-fold predictions), with ``return_std``
        also each row's out-of-fold spread scaled by the same inflation (what ``head.std``
        would say of that row had it not been trained on it): (head, predictions, spreads).
        ``DeltaEnsemble`` calibrates its combined spread on these."""
        oof, oof_std = out_of_fold(structures, desc, y, folds=folds, seed=seed,
                                   return_std=True, **options)
        head = cls.fit(structures, desc, y, **options)
        ok = np.isfinite(y)
        ratio = np.abs(oof[ok] - y[ok]) / np.maximum(oof_std[ok], 1e-12)
        head.inflation = float(np.quantile(ratio, 0.9) / Z90)
        return (head, oof, head.inflation * oof_std) if return_std else (head, oof)

    _ARRAYS = ("columns", "mu", "sd", "z_train", "c_train", "alpha", "chol")
    _SCALARS = ("offset", "amplitude", "lengthscale", "ridge", "inflation")

    def state(self) -> dict[str, np.ndarray]:
        """Plain arrays (no pickle) that ``from_state`` turns back into the same head: its
        predictions and spreads are bit-identical (a campaign checkpoint stores these)."""
        out = {f"kp_{k}": np.asarray(getattr(self, k)) for k in self._ARRAYS}
        out.update({f"kp_{k}": np.array(float(getattr(self, k))) for k in self._SCALARS})
        out["kp_composition_scale"] = np.array(np.nan if self.composition_scale is None
                                                else float(self.composition_scale))
        out["kp_linear_coef"] = np.asarray(self.linear.coef)
        out["kp_linear_ridge"] = np.array(float(self.linear.ridge))
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> KernelPrior:
        try:
            arrays = {k: np.array(state[f"kp_{k}"]) for k in cls._ARRAYS}
            scalars = {k: float(state[f"kp_{k}"]) for k in cls._SCALARS}
            scale = float(state["kp_composition_scale"])
            linear = LinearPrior(np.array(state["kp_linear_coef"]),
                                 float(state["kp_linear_ridge"]))
        except KeyError as exc:
            raise ValueError(f"not a saved KernelPrior: missing {exc}") from None
        return cls(linear=linear, composition_scale=None if np.isnan(scale) else scale,
                   **arrays, **scalars)

    def _kernel(self, z: np.ndarray, c: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        ell2 = self.lengthscale ** 2 * len(self.columns)
        arg = _sqdist(z, self.z_train[rows]) / (2.0 * ell2)
        if self.composition_scale is not None:
            arg += _sqdist(c, self.c_train[rows]) / (2.0 * self.composition_scale ** 2)
        return np.exp(-arg)

    def _inputs(self, structures: Sequence[Structure], desc: np.ndarray):
        desc = np.asarray(desc, dtype=np.float64)
        return desc, (desc[:, self.columns] - self.mu) / self.sd, _fractions(structures)

    def predict(self, structures: Sequence[Structure], desc: np.ndarray) -> np.ndarray:
        desc, z, c = self._inputs(structures, desc)
        out = self.linear.predict(structures, desc[:, 0]) + self.offset
        for start in range(0, len(z), 2048):  # bounded memory for large pools
            part = slice(start, start + 2048)
            out[part] += self._kernel(z[part], c[part]) @ self.alpha
        return out

    def std(self, structures: Sequence[Structure], desc: np.ndarray) -> np.ndarray:
        """GP predictive standard deviation (noise included) times ``inflation``."""
        _, z, c = self._inputs(structures, desc)
        var = np.empty(len(z))
        for start in range(0, len(z), 2048):
            part = slice(start, start + 2048)
            k = self._kernel(z[part], c[part])
            v = cho_solve((self.chol, True), k.T)
            var[part] = 1.0 + self.ridge - np.einsum("ij,ji->i", k, v)
        return self.inflation * np.sqrt(self.amplitude * np.maximum(var, 0.0))


def out_of_fold(structures: Sequence[Structure], desc: np.ndarray, y: np.ndarray, *,
                folds: int = 5, seed: int = 0, return_std: bool = False, **options):
    """Prediction for every row by a ``KernelPrior`` fitted on the other folds (random folds);
    with ``return_std`` also the (uninflated) GP spread: (predictions, spreads)."""
    if folds < 2:
        raise ValueError("folds must be >= 2")
    n = len(y)
    fold = np.random.default_rng(seed).permutation(n) % folds
    out, spread = np.empty(n), np.empty(n)
    for f in range(folds):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        head = KernelPrior.fit([structures[i] for i in tr], desc[tr], y[tr], **options)
        out[te] = head.predict([structures[i] for i in te], desc[te])
        if return_std:
            spread[te] = head.std([structures[i] for i in te], desc[te])
    return (out, spread) if return_std else out
