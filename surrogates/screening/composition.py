"""The funnel's cheap stages, vectorised over a chunk: charge balance, novelty, a composition model.

Why vectorised: at 10^6 candidates a 50 µs Python call per candidate and stage is a CPU-minute
per stage. A chunk's compositions are padded arrays (atomic numbers ``z`` and amounts, one row per
candidate, zeros beyond its elements), so each stage is a handful of numpy operations.

* charge balance: one common oxidation state per element makes the formula neutral — the rule
  of :func:`surrogates.descriptors.charge_balanced`, over the same pymatgen common oxidation states;
* novelty: the reduced composition is not a phase of the Materials Project table (the known
  compositions travel to the workers as a sorted array of 64-bit hashes, not as the table);
* composition model: a ridge regression of the formation energy on element fractions, their
  products with the mean electronegativity and with an ionicity term, and a few electronegativity
  statistics, fitted on the same table. It ranks; it does not replace the graph network.
  :func:`fit_composition_model` holds out whole chemical systems to report its error honestly.
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
import zlib
from dataclasses import dataclass, field
from functools import cache

import numpy as np

MAX_Z = 100
_MAX_STATES = 6


@cache
def element_tables() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(electronegativity[Z], common oxidation states[Z, 6] NaN-padded, symbol[Z]); row 0 unused."""
    from pymatgen.core import Element  # noqa: PLC0415

    chi = np.zeros(MAX_Z + 1)
    ox = np.full((MAX_Z + 1, _MAX_STATES), np.nan)
    symbols = [""]
    for z in range(1, MAX_Z + 1):
        el = Element.from_Z(z)
        with warnings.catch_warnings():  # noble gases: "no Pauling electronegativity"
            warnings.simplefilter("ignore")
            x = el.X
        chi[z] = x if x == x and x > 0 else 2.0  # as descriptors._electronegativity
        states = tuple(el.common_oxidation_states) or (0,)
        ox[z, : len(states[:_MAX_STATES])] = states[:_MAX_STATES]
        symbols.append(el.symbol)
    return chi, ox, tuple(symbols)


@cache
def _z_of() -> dict[str, int]:
    return {s: z for z, s in enumerate(element_tables()[2]) if s}


@dataclass
class CompositionBatch:
    """Padded compositions: ``z[i, j]`` atomic number (0 = padding), ``amount[i, j]`` (reduced)."""

    z: np.ndarray  # (m, k) int64
    amount: np.ndarray  # (m, k) float64

    @classmethod
    def from_dicts(cls, comps: list[dict[str, float]]) -> CompositionBatch:
        k = max((len(c) for c in comps), default=1)
        z = np.zeros((len(comps), k), dtype=np.int64)
        amount = np.zeros((len(comps), k))
        zof = _z_of()
        for i, comp in enumerate(comps):
            for j, (sym, amt) in enumerate(sorted(comp.items())):
                z[i, j] = zof[sym]
                amount[i, j] = amt
        return cls(z, amount)

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def take(self, mask: np.ndarray) -> CompositionBatch:
        return CompositionBatch(self.z[mask], self.amount[mask])

    @property
    def fraction(self) -> np.ndarray:
        return self.amount / self.amount.sum(axis=1, keepdims=True)

    def formulas(self) -> list[str]:
        """Reduced formulas in pymatgen's order (most electropositive first)."""
        from ..formulas import reduced_formula  # noqa: PLC0415

        symbols = element_tables()[2]
        out = []
        for zs, amts in zip(self.z, self.amount, strict=True):
            text = "".join(f"{symbols[z]}{_num(a)}" for z, a in zip(zs, amts, strict=True) if z)
            out.append(reduced_formula(text))
        return out


def _num(a: float) -> str:
    return str(int(a)) if float(a).is_integer() else f"{a:.6g}"


def charge_balanced(batch: CompositionBatch) -> np.ndarray:
    """True where one common oxidation state per element gives a neutral formula (an element
    alone is always balanced), as :func:`surrogates.descriptors.charge_balanced`."""
    _, ox, _ = element_tables()
    m, k = batch.z.shape
    states = ox[batch.z]  # (m, k, S)
    states[batch.z == 0] = np.nan
    states[batch.z == 0, 0] = 0.0  # padding contributes 0 once
    n_el = (batch.z > 0).sum(axis=1)
    out = n_el <= 1
    n_states = np.isfinite(states).sum(axis=2).max(axis=0)  # per column
    for combo in itertools.product(*(range(int(s)) for s in n_states)):
        total = np.zeros(m)
        for j, s in enumerate(combo):
            total = total + states[:, j, s] * batch.amount[:, j]
        out |= np.abs(np.nan_to_num(total, nan=1.0)) < 1e-6
    return out


def _composition_key(symbols_amounts: list[tuple[str, float]]) -> int:
    total = sum(a for _, a in symbols_amounts)
    text = ";".join(f"{s}:{round(a / total, 6)}" for s, a in sorted(symbols_amounts) if a > 0)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def composition_keys(batch: CompositionBatch) -> np.ndarray:
    """64-bit hash of each reduced composition (fractions rounded to 1e-6, as the MP index)."""
    symbols = element_tables()[2]
    return np.fromiter((_composition_key([(symbols[z], a) for z, a in zip(zs, amts, strict=True) if z])
                        for zs, amts in zip(batch.z, batch.amount, strict=True)),
                       dtype=np.int64, count=len(batch))


def known_composition_keys() -> np.ndarray:
    """Sorted hashes of every multi-element composition of the Materials Project table."""
    from ..thermo import known_phases  # noqa: PLC0415

    keys = [_composition_key(list(amounts.items()))
            for bucket in known_phases()._index().values() for amounts, *_ in bucket.values()]
    return np.unique(np.array(keys, dtype=np.int64))


def is_novel(batch: CompositionBatch, known_keys: np.ndarray) -> np.ndarray:
    """True where the composition is not a known phase (an element alone is never novel)."""
    keys = composition_keys(batch)
    pos = np.clip(np.searchsorted(known_keys, keys), 0, max(len(known_keys) - 1, 0))
    known = (known_keys[pos] == keys) if len(known_keys) else np.zeros(len(keys), dtype=bool)
    return ~known & ((batch.z > 0).sum(axis=1) > 1)


# ----------------------------------------------------------------------------- composition model


def _features(batch: CompositionBatch) -> tuple[np.ndarray, np.ndarray]:
    """(per-element design blocks (m, k, 3), global features (m, 5)).

    The design is linear in per-element weights: for each element of a candidate the row adds
    ``f_e * [1, ionicity, mean_chi]`` to that element's three coefficients.
    """
    chi, _, _ = element_tables()
    f = batch.fraction
    x = chi[batch.z] * (batch.z > 0)
    mean = (f * x).sum(axis=1)
    spread = np.sqrt((f * (x - mean[:, None]) ** 2).sum(axis=1))
    present = batch.z > 0
    xmax = np.where(present, x, -np.inf).max(axis=1)
    xmin = np.where(present, x, np.inf).min(axis=1)
    ion = (f[:, :, None] * f[:, None, :] * np.abs(x[:, :, None] - x[:, None, :])).sum(axis=(1, 2))
    per = np.stack([f, f * ion[:, None], f * mean[:, None]], axis=2)
    glob = np.stack([mean, spread, xmax - xmin, ion, ion**2], axis=1)
    return per, glob


@dataclass
class CompositionModel:
    """Ridge regression of formation energy (eV/atom) on composition features."""

    element_weights: np.ndarray  # (MAX_Z + 1, 3)
    global_weights: np.ndarray  # (5,)
    intercept: float
    metrics: dict = field(default_factory=dict)

    def predict(self, batch: CompositionBatch) -> np.ndarray:
        per, glob = _features(batch)
        w = self.element_weights[batch.z]  # (m, k, 3); row 0 is zero
        return (per * w).sum(axis=(1, 2)) + glob @ self.global_weights + self.intercept

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"element_weights": self.element_weights, "global_weights": self.global_weights,
                "intercept": np.array([self.intercept])}

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray], metrics: dict | None = None) -> CompositionModel:
        return cls(np.asarray(d["element_weights"]), np.asarray(d["global_weights"]),
                   float(np.asarray(d["intercept"]).reshape(-1)[0]), dict(metrics or {}))


def _design(batch: CompositionBatch) -> np.ndarray:
    per, glob = _features(batch)
    m = len(batch)
    design = np.zeros((m, (MAX_Z + 1) * 3))
    rows = np.repeat(np.arange(m), batch.z.shape[1])
    for c in range(3):
        np.add.at(design, (rows, batch.z.reshape(-1) * 3 + c), per[:, :, c].reshape(-1))
    return np.concatenate([design, glob, np.ones((m, 1))], axis=1)


def fit_composition_model(ridge: float = 1e-2, holdout_fold: int = 0, folds: int = 5) -> CompositionModel:
    """Fit on the Materials Project table; report MAE on held-out chemical systems, then refit.

    The split is by chemical system (crc32 of ``"A-B-C"`` modulo ``folds``; fold ``holdout_fold``
    held out), so a held-out composition shares no system with the fit — as a screened candidate
    in a new system would. The mean-predictor baseline is scored on the same split.
    """
    from ..thermo import known_phases  # noqa: PLC0415

    comps, energies, systems = [], [], []
    for key, bucket in known_phases()._index().items():
        system = "-".join(sorted(key))
        for amounts, e_form, *_ in bucket.values():
            comps.append(amounts)
            energies.append(e_form)
            systems.append(system)
    y = np.array(energies)
    fold = np.array([zlib.crc32(s.encode()) % folds for s in systems])
    design = _design(CompositionBatch.from_dicts(comps))

    def solve(rows: np.ndarray) -> np.ndarray:
        a = design[rows]
        gram = a.T @ a + ridge * np.eye(a.shape[1])
        return np.linalg.solve(gram, a.T @ y[rows])

    held = fold == holdout_fold
    w = solve(~held)
    mae = float(np.abs(design[held] @ w - y[held]).mean())
    baseline = float(np.abs(y[~held].mean() - y[held]).mean())
    w = solve(np.ones(len(y), dtype=bool))
    n_el = (MAX_Z + 1) * 3
    return CompositionModel(w[:n_el].reshape(MAX_Z + 1, 3), w[n_el:n_el + 5], float(w[-1]),
                            {"n_fit": int((~held).sum()), "n_heldout": int(held.sum()),
                             "heldout_mae_ev": mae, "baseline_mean_mae_ev": baseline,
                             "split": f"chemical systems, fold {holdout_fold} of {folds} held out"})
