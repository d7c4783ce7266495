"""Literature knowledge: which precursors chemists use for similar targets, and how hot they fire.

Why: thermodynamics alone ranks exotic reagents first (metals, hydrides, peroxides: the most
exergonic reactions); the A-Lab's first recipes came from models of the text-mined literature
(He et al., Sci. Adv. 2023, precursors by target similarity; Huo et al., npj Comput. Mater.
2022, temperatures). This module is that knowledge as a compact, shipped table
(``data/literature.json.xz``: the training targets of Kononova et al. 2019's 29k text-mined
solid-state reactions; regenerate with ``python -m recipes._prepare_literature``).

The model (target similarity, no training loop):
- similarity of two targets = cosine of their element-fraction vectors, raised to
  ``SIM_POWER`` (sharpens towards the same chemistry: a phosphate's Li source is LiH2PO4 or
  Li2CO3, an oxide's Li2CO3 or LiOH);
- P(precursor p is the source of element e | target) = similarity-weighted share of the
  ``NEIGHBOURS`` most similar training targets containing e that used p for e, smoothed with the
  global share of p as a source of e (``SMOOTHING`` pseudo-targets) and a floor for powders no
  paper used for e;
- log-likelihood of a precursor set = Σ over the target's non-O elements of log P(the set's
  source of e | target) (the best source when several carry e), plus log(1 + paper sets of the
  neighbours equal to this set, similarity-weighted): chemists reuse whole recipes;
- heating temperature (``temperature``): a small tree ensemble over neighbour and precursor
  features (``recipes.temperature_model``; two kinds — ``calcination``, the step papers call
  calcination, and ``firing``, the highest step); without the shipped ensemble, the
  similarity-weighted median of the neighbours' temperatures, the weight of a neighbour
  reaction multiplied by (1 + ``SET_BONUS`` × Jaccard of its precursors with the set's): the
  same precursors fire alike.

Held-out split: by target, once, seeded (:func:`held_out`); those targets are not in the
shipped table, so a benchmark on them measures knowledge the planner never saw.
"""

from __future__ import annotations

import itertools
import json
import lzma
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

DATA_FILE = Path(__file__).with_name("data") / "literature.json.xz"
SPLIT_SEED = 20
HELD_OUT_FRACTION = 0.2
NEIGHBOURS = 40
SIM_POWER = 4.0
SMOOTHING = 0.5
FLOOR = 1e-3  # P of a powder no similar paper used as the source of an element
SET_BONUS = 2.0
MIN_SUPPORT = 3  # neighbour reactions with a temperature before the literature gives one


def held_out(target: str, seed: int = SPLIT_SEED, fraction: float = HELD_OUT_FRACTION) -> bool:
    """The fixed split by target: True for a held-out target (reduced formula)."""
    return zlib.crc32(f"{seed}:{target}".encode()) % 10000 < fraction * 10000


@lru_cache(maxsize=65536)
def _amounts(formula: str) -> dict[str, float]:
    from .thermo import amounts_of

    return amounts_of(formula)


@dataclass(frozen=True)
class TemperatureGuess:
    temperature_c: float
    hours: float | None
    support: int  # neighbour reactions that had a temperature
    nearest: str  # the most similar training target, for the rationale
    kind: str = "firing"  # "calcination" or "firing" (highest step)
    method: str = "neighbour median"  # or "tree ensemble"


class LiteratureModel:
    """Target-similarity recommender over the shipped training reactions (module docstring)."""

    def __init__(self, reactions: Sequence[tuple[str, tuple[str, ...], float | None, float | None]],
                 attribution: str = "", calcination: Sequence[float | None] | None = None,
                 temperature_models: dict[str, Any] | None = None) -> None:
        self.attribution = attribution
        self.reactions = list(reactions)
        # calcination °C per reaction (parallel to ``reactions``; None = no step so named)
        self.calcination = list(calcination) if calcination is not None else [None] * len(self.reactions)
        if len(self.calcination) != len(self.reactions):
            raise ValueError("calcination column must be parallel to the reactions")
        self.temperature_models = dict(temperature_models or {})
        self._features: dict[str, Any] = {}
        self._t_cache: dict[tuple[Any, ...], TemperatureGuess | None] = {}
        targets = sorted({t for t, _, _, _ in self.reactions})
        self.targets = targets
        self._t_index = {t: i for i, t in enumerate(targets)}
        elements = sorted({e for t in targets for e in _amounts(t)})
        self.elements = elements
        self._e_index = {e: i for i, e in enumerate(elements)}
        vec = np.zeros((len(targets), len(elements)))
        for i, t in enumerate(targets):
            a = _amounts(t)
            tot = sum(a.values())
            for e, x in a.items():
                vec[i, self._e_index[e]] = x / tot
        self._vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
        # per target: its reactions' precursor sets (with counts), temperatures
        self._sets: list[dict[tuple[str, ...], int]] = [dict() for _ in targets]
        self._rx_of: list[list[int]] = [[] for _ in targets]
        for k, (t, ps, _, _) in enumerate(self.reactions):
            i = self._t_index[t]
            self._sets[i][ps] = self._sets[i].get(ps, 0) + 1
            self._rx_of[i].append(k)
        # per element: which targets contain it, and the sources they used
        self._with: dict[str, np.ndarray] = {}
        self._sources: dict[str, list[dict[str, float]]] = {}
        self._global: dict[str, dict[str, float]] = {}
        has: dict[str, list[int]] = {e: [] for e in elements}
        for i, t in enumerate(targets):
            for e in _amounts(t):
                has[e].append(i)
        for e in elements:
            idx = has[e]
            self._with[e] = np.array(idx, dtype=int)
            src_list = []
            glob: dict[str, float] = {}
            for i in idx:
                counts: dict[str, float] = {}
                n = 0
                for ps, c in self._sets[i].items():
                    srcs = [p for p in ps if e in _amounts(p)]
                    if not srcs:
                        continue
                    n += c
                    for p in srcs:
                        counts[p] = counts.get(p, 0.0) + c / len(srcs)
                share = {p: v / n for p, v in counts.items()} if n else {}
                src_list.append(share)
                for p, v in share.items():
                    glob[p] = glob.get(p, 0.0) + v
            tot = sum(glob.values()) or 1.0
            self._global[e] = {p: v / tot for p, v in glob.items()}
            self._sources[e] = src_list
        self._cache: dict[tuple[str, str], dict[str, float]] = {}
        self._sim_cache: dict[tuple[Any, ...], tuple[Any, np.ndarray, np.ndarray]] = {}
        self._firing = [r[2] for r in self.reactions]
        # how often each powder, and each pair of powders together, appear in a reaction
        self._uses: dict[str, int] = {}
        self._pair_uses: dict[tuple[str, str], int] = {}
        for _, ps, _, _ in self.reactions:
            for p in set(ps):
                self._uses[p] = self._uses.get(p, 0) + 1
            for pq in itertools.combinations(sorted(set(ps)), 2):
                self._pair_uses[pq] = self._pair_uses.get(pq, 0) + 1

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: Path | str = DATA_FILE) -> LiteratureModel:
        path = Path(path)
        if not path.exists():
            from .types import RecipeError

            raise RecipeError(
                f"literature table {path} is missing; regenerate it with "
                "`python -m recipes._prepare_literature` (needs ../shared/data/recipes)")
        from .temperature_model import load_models

        doc = json.load(lzma.open(path, "rt"))
        precs = doc["precursors"]
        rows = [(r[0], tuple(precs[i] for i in r[1]), r[2], r[3]) for r in doc["reactions"]]
        calc = [r[4] if len(r) > 4 else None for r in doc["reactions"]]
        return cls(rows, doc.get("attribution", ""), calc, load_models())

    # ------------------------------------------------------------------ queries
    def _query(self, target: str) -> np.ndarray:
        a = _amounts(target)
        v = np.zeros(len(self.elements))
        tot = sum(a.values())
        for e, x in a.items():
            if e in self._e_index:
                v[self._e_index[e]] = x / tot
        n = np.linalg.norm(v)
        return v / n if n > 0 else v

    def _similar(self, target: str, among: np.ndarray | None = None, k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
        """Indices and weights of the ``k`` most similar training targets (the target itself
        excluded: a model must not recommend a target from its own papers). Memoised: the
        planner asks once per candidate set and per element, always for the same target (the
        arrays are shared, callers only read them)."""
        memo = (target, k, None if among is None else id(among))
        hit = self._sim_cache.get(memo)
        if hit is not None and hit[0] is among:
            return hit[1], hit[2]
        if len(self._sim_cache) > 4096:
            self._sim_cache.clear()
        idx, w = self._similar_uncached(target, among, k)
        self._sim_cache[memo] = (among, idx, w)
        return idx, w

    def _similar_uncached(self, target: str, among: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = self._query(target)
        idx = np.arange(len(self.targets)) if among is None else among
        if len(idx) == 0:
            return idx, np.zeros(0)
        sims = self._vec[idx] @ q
        own = self._t_index.get(target)
        if own is not None:
            sims = np.where(idx == own, -1.0, sims)
        top = np.argsort(-sims, kind="stable")[:k]
        top = top[sims[top] > 0]
        return idx[top], np.clip(sims[top], 0.0, 1.0) ** SIM_POWER

    def source_probabilities(self, target: str, element: str) -> dict[str, float]:
        """P(p is the source of ``element``) for every powder some paper used for it."""
        key = (target, element)
        if key in self._cache:
            return self._cache[key]
        glob = self._global.get(element, {})
        out: dict[str, float] = {p: SMOOTHING * v for p, v in glob.items()}
        with_e = self._with.get(element)
        if with_e is not None and len(with_e):
            idx, w = self._similar(target, with_e)
            pos = {int(t): j for j, t in enumerate(with_e)}
            for i, wi in zip(idx, w, strict=True):
                for p, share in self._sources[element][pos[int(i)]].items():
                    out[p] = out.get(p, 0.0) + wi * share
        tot = sum(out.values())
        res = {p: v / tot for p, v in out.items()} if tot > 0 else {}
        self._cache[key] = res
        return res

    def set_log_likelihood(self, target: str, formulas: Sequence[str]) -> tuple[float, list[tuple[str, str, float]]]:
        """Log-likelihood (nats) of ``formulas`` as the precursors of ``target``, and the
        per-element evidence (element, its source in the set, P) for the rationale."""
        pinned = sorted(set(_amounts(target)) - {"O"})
        total = 0.0
        notes = []
        for e in pinned:
            probs = self.source_probabilities(target, e)
            srcs = [f for f in formulas if e in _amounts(f)]
            p = max((probs.get(f, 0.0) for f in srcs), default=0.0)
            p = max(p, FLOOR)
            total += math.log(p)
            best = max(srcs, key=lambda f: probs.get(f, 0.0)) if srcs else "-"
            notes.append((e, best, p))
        exact = self.neighbour_set_weight(target, formulas)
        total += math.log1p(exact)
        return total, notes

    def set_evidence(self, target: str, formulas: Sequence[str]) -> tuple[dict[str, float], list[tuple[str, str, float]]]:
        """The parts of the literature evidence for ``formulas`` as the precursors of ``target``
        (the planner weighs them, ``recipes.planner.LITERATURE_WEIGHTS``), and the per-element
        evidence (element, its source in the set, P) for the rationale:

        - ``sources``: Σ over the target's non-O elements of log P(the set's source | target)
          (the first part of ``set_log_likelihood``);
        - ``same_set``: log(1 + similarity-weighted count of the neighbours' paper sets equal to
          this set) (its second part);
        - ``unknown_sources``: how many elements have a source no similar paper used (P at
          ``FLOOR``): the floor is a guess, this count lets the weights correct it;
        - ``pairs``: mean over the set's pairs of powders of log((reactions using both + ½) /
          (reactions using the rarer one + 1)) — chemists reuse combinations;
        - ``popularity``: mean log(1 + reactions using each powder);
        - ``compound_source``: 1 when the set has fewer powders than the target has non-O
          elements (one powder brings two of them, e.g. LiH2PO4, BaTiO3 for a doped titanate).
        """
        pinned = sorted(set(_amounts(target)) - {"O"})
        sources, notes = 0.0, []
        floor = 0
        for e in pinned:
            probs = self.source_probabilities(target, e)
            srcs = [f for f in formulas if e in _amounts(f)]
            p = max((probs.get(f, 0.0) for f in srcs), default=0.0)
            floor += p <= FLOOR
            p = max(p, FLOOR)
            sources += math.log(p)
            best = max(srcs, key=lambda f: probs.get(f, 0.0)) if srcs else "-"
            notes.append((e, best, p))
        uniq = sorted(set(formulas))
        pairs = [math.log((self._pair_uses.get(pq, 0) + 0.5) / (min(self._uses.get(pq[0], 0), self._uses.get(pq[1], 0)) + 1.0))
                 for pq in itertools.combinations(uniq, 2)]
        parts = {
            "sources": sources,
            "same_set": math.log1p(self.neighbour_set_weight(target, formulas)),
            "unknown_sources": float(floor),
            "pairs": float(np.mean(pairs)) if pairs else 0.0,
            "popularity": float(np.mean([math.log1p(self._uses.get(f, 0)) for f in uniq])) if uniq else 0.0,
            "compound_source": float(len(uniq) < len(pinned)),
        }
        return parts, notes

    def neighbour_set_weight(self, target: str, formulas: Sequence[str]) -> float:
        key = tuple(sorted(formulas))
        idx, w = self._similar(target)
        return float(sum(wi for i, wi in zip(idx, w, strict=True) if key in self._sets[int(i)]))

    def preferred_sources(self, target: str, element: str, k: int) -> list[str]:
        probs = self.source_probabilities(target, element)
        return [p for p, _ in sorted(probs.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]

    def column(self, kind: str) -> list[float | None]:
        """Per-reaction temperatures of one kind (``calcination`` or ``firing``)."""
        if kind == "firing":
            return self._firing
        if kind == "calcination":
            return self.calcination
        raise ValueError(f"unknown temperature kind {kind!r} (calcination or firing)")

    def features(self, kind: str) -> Any:
        """The ``TemperatureFeatures`` of one kind over every reaction (built once)."""
        from .temperature_model import TemperatureFeatures

        if kind not in self._features:
            other = "firing" if kind == "calcination" else "calcination"
            self._features[kind] = TemperatureFeatures(self, self.column(kind), self.column(other))
        return self._features[kind]

    def temperature(self, target: str, formulas: Sequence[str], kind: str = "calcination") -> TemperatureGuess | None:
        """Heating temperature of ``kind`` for ``formulas`` → ``target``: the shipped tree
        ensemble when present (``recipes.temperature_model``), else the similarity-weighted
        median of similar syntheses; None when fewer than ``MIN_SUPPORT`` neighbour reactions
        report one of that kind."""
        memo = (target, tuple(sorted(formulas)), kind, id(self.temperature_models.get(kind)))
        if memo in self._t_cache:  # the planner asks again for every condition it weighs
            return self._t_cache[memo]
        self._t_cache[memo] = guess = self._temperature(target, formulas, kind)
        return guess

    def _temperature(self, target: str, formulas: Sequence[str], kind: str) -> TemperatureGuess | None:
        temps_col = self.column(kind)
        idx, w = self._similar(target, k=NEIGHBOURS)
        fs = set(formulas)
        temps, weights, hours, hw = [], [], [], []
        for i, wi in zip(idx, w, strict=True):
            for k in self._rx_of[int(i)]:
                _, ps, _, h = self.reactions[k]
                t = temps_col[k]
                if t is None:
                    continue
                jac = len(fs & set(ps)) / len(fs | set(ps))
                ww = wi * (1.0 + SET_BONUS * jac)
                temps.append(t)
                weights.append(ww)
                if h is not None:
                    hours.append(h)
                    hw.append(ww)
        if len(temps) < MIN_SUPPORT:
            return None
        value, method = _weighted_median(temps, weights), "neighbour median"
        model = self.temperature_models.get(kind)
        if model is not None:
            value, method = float(model.predict(self.features(kind).row(target, tuple(formulas)))), "tree ensemble"
        return TemperatureGuess(value, _weighted_median(hours, hw) if hours else None,
                                len(temps), self.targets[int(idx[0])], kind, method)

    def precursor_counts(self) -> dict[str, int]:
        """How many training reactions use each powder (the literature's shelf)."""
        out: dict[str, int] = {}
        for _, ps, _, _ in self.reactions:
            for p in ps:
                out[p] = out.get(p, 0) + 1
        return out


def _weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    order = np.argsort(values)
    v = np.asarray(values, dtype=float)[order]
    w = np.asarray(weights, dtype=float)[order]
    c = np.cumsum(w)
    return float(v[np.searchsorted(c, 0.5 * c[-1])])


@lru_cache(maxsize=1)
def literature_model() -> LiteratureModel:
    """The shipped model (loaded once per process)."""
    return LiteratureModel.load()


def describe_source() -> dict[str, Any]:
    doc = json.load(lzma.open(DATA_FILE, "rt"))
    return {"attribution": doc["attribution"], "split": doc["split"], "counts": doc["counts"]}
