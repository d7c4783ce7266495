"""Heating temperature of a precursor set from the literature: neighbours + a small tree ensemble.

Why: the nearest-target weighted median alone (``LiteratureModel`` before this module) was
off by ~150 °C against held-out papers — it ignores what the precursors themselves say
(nitrates and hydroxides fire lower than carbonates, refractory oxides higher; a set that many
papers used has a known temperature) and how far the nearest neighbours are. Huo et al. (npj
Comput. Mater. 2022) found the chosen heating temperature tracks the stability (melting
points, formation energies) of the precursors — an extension of Tammann's rule — so those
are features here too.

Model: ``FEATURES`` below are computed from the shipped training reactions only (element and
precursor "target encodings": the mean temperature of training reactions whose target holds
element e, or that used precursor p, shrunk towards the global mean by ``SHRINK``
pseudo-reactions; plus the neighbour estimates of ``LiteratureModel``), then a gradient-boosted
tree ensemble (scikit-learn ``HistGradientBoostingRegressor``, absolute-error loss, fitted by
``recipes._train_temperature`` with out-of-fold encodings so the trees never see a reaction's
own temperature in its features) maps them to °C. The trees ship as JSON
(``data/temperature_model.json.xz``) and are evaluated here in numpy: no scikit-learn at run
time, no download.

Two temperatures are modelled, because papers report several heating steps and they differ:
``calcination`` (the step the paper calls calcination — first reaction of the mixed powders;
what SyntMTE 2025 reports 98 °C MAE on) and ``firing`` (the highest heating step, often a
sintering of a pressed pellet).
"""

from __future__ import annotations

import json
import lzma
import math
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .literature import LiteratureModel

MODEL_FILE = Path(__file__).with_name("data") / "temperature_model.json.xz"
KINDS = ("calcination", "firing")
SHRINK = 5.0  # pseudo-reactions at the global mean in every target encoding
NONMETALS = {"O", "C", "H", "N", "F", "Cl", "Br", "I", "S", "Se", "Te", "P", "B", "Si"}

FEATURES = (
    "knn_median", "knn_mean", "knn_same_set", "nearest_similarity", "log_support",
    "knn_sharp", "nearest_temp", "same_set_nearest_temp", "same_set_nearest_similarity", "knn_other_kind",
    "prec_enc_max", "prec_enc_mean", "prec_enc_min", "prec_log_uses_min",
    "elem_enc_mean", "elem_enc_max", "elem_enc_min",
    "n_elements", "n_precursors", "oxygen_fraction",
    "cation_melting_mean_k", "cation_melting_max_k", "cation_melting_min_k", "electronegativity_mean",
    "alkali_fraction", "target_has_p", "target_has_b", "target_has_s", "target_has_f", "target_has_n",
    "n_carbonate", "n_nitrate", "n_hydroxide", "n_organic", "n_ammonium", "n_oxide", "n_metal", "n_halide",
)


_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*(?:\.\d+)?)")


def display_formula(formula: str) -> str:
    """``formula`` as a chemist writes it in a rationale, element order kept: stoichiometric 1s
    dropped (``Li1Co0.5Ni0.5P1O4`` -> ``LiCo0.5Ni0.5PO4``) and a per-atom or scaled-down
    composition brought back to whole numbers (``Ba0.06Ti0.06O0.18`` -> ``BaTiO3``). Why not
    pymatgen's ``reduced_formula``: it leaves both as they are and reorders doped formulas.
    Doping levels, atom-fraction alloys (amounts summing to 1) and bracketed formulas stay as
    given; only the text changes, never the composition the model saw."""
    tokens = _TOKEN.findall(formula)
    if not tokens or "".join(e + n for e, n in tokens) != formula:
        return formula  # brackets, hydrates, charges: not a flat formula, leave it
    amounts = [float(n) if n else 1.0 for _, n in tokens]
    if all(0 < a < 1 for a in amounts) and abs(sum(amounts) - 1.0) > 1e-6:
        scaled = [a / min(amounts) for a in amounts]
        if all(abs(x - round(x)) < 1e-6 * x and round(x) <= 24 for x in scaled):
            return "".join(e + (str(round(x)) if round(x) != 1 else "") for (e, _), x in zip(tokens, scaled, strict=True))
    return "".join(e + ("" if a == 1.0 else n) for (e, n), a in zip(tokens, amounts, strict=True))


@lru_cache(maxsize=65536)
def _amounts(formula: str) -> dict[str, float]:
    from .thermo import amounts_of

    return amounts_of(formula)


@lru_cache(maxsize=256)
def _element_data(symbol: str) -> tuple[float, float]:
    """(melting point K, Pauling electronegativity) of an element; NaN when unknown."""
    from pymatgen.core import Element

    el = Element(symbol)
    try:
        mp = float(el.melting_point) if el.melting_point is not None else math.nan
    except (TypeError, ValueError):
        mp = math.nan
    x = float(el.X) if el.X is not None and not math.isnan(float(el.X)) else math.nan
    return mp, x


def precursor_kind(formula: str) -> str:
    """Coarse family of a precursor from its composition (why: decomposition and reactivity
    set how hot a paper fires — nitrates and organics decompose at 200-400 °C, carbonates at
    700-1300 °C, oxides need diffusion)."""
    a = _amounts(formula)
    els = set(a)
    if len(els) == 1:
        return "metal" if els - NONMETALS else "other"
    if els & {"F", "Cl", "Br", "I"}:
        return "halide"
    if "N" in els and "H" in els and "C" not in els:
        return "ammonium"
    if "N" in els and "O" in els and "C" not in els:
        return "nitrate"
    if "C" in els and "O" in els and "H" not in els and "N" not in els and abs(a["O"] / a["C"] - 3.0) < 1e-6:
        return "carbonate"  # CO3; an oxalate (C2O4) decomposes like an organic salt
    if "C" in els:
        return "organic"  # acetates, oxalates, citrates: burn off at 300-450 °C
    if "H" in els and "O" in els:
        return "hydroxide"
    if "O" in els and "S" not in els:
        return "oxide"
    return "other"


class TemperatureFeatures:
    """Feature rows for (target, precursor set) from a literature model's reactions and one
    temperature column (``temps``, parallel to ``literature.reactions``; None = unreported)."""

    def __init__(self, literature: LiteratureModel, temps: Sequence[float | None],
                 other: Sequence[float | None] | None = None, exclude_targets: set[str] | None = None,
                 exclude_reactions: frozenset[int] = frozenset(), own_target: bool = False) -> None:
        """``exclude_targets`` leaves whole targets out (out-of-fold training by target, the
        shipped model). ``exclude_reactions`` (indices of ``literature.reactions``) and
        ``own_target`` serve a split by *reaction* (``benchmarks/recipes_temperature_split.py``):
        the left-out reactions count as unreported, and the target's own remaining papers are its
        nearest neighbour (similarity 1) — never so in the shipped model, whose queries are
        targets no training paper made."""
        self.lit = literature
        self.temps = [None if k in exclude_reactions else t for k, t in enumerate(temps)]
        # the other kind's column (firing for a calcination model and vice versa): a neighbour
        # that reports only its sintering still says how refractory the chemistry is
        self.other = ([None if k in exclude_reactions else t for k, t in enumerate(other)]
                      if other is not None else [None] * len(self.temps))
        self.exclude_reactions = exclude_reactions
        self.own_target = own_target
        vals = [t for t in self.temps if t is not None]
        self.global_mean = float(np.mean(vals)) if vals else 900.0
        self.exclude = exclude_targets or set()
        psum: dict[str, float] = {}
        pn: dict[str, int] = {}
        esum: dict[str, float] = {}
        en: dict[str, int] = {}
        for (t, ps, _, _), temp in zip(literature.reactions, self.temps, strict=True):
            if temp is None or t in self.exclude:
                continue
            for p in ps:
                psum[p] = psum.get(p, 0.0) + temp
                pn[p] = pn.get(p, 0) + 1
            for e in _amounts(t):
                esum[e] = esum.get(e, 0.0) + temp
                en[e] = en.get(e, 0) + 1
        g = self.global_mean
        self.prec_enc = {p: (psum[p] + SHRINK * g) / (pn[p] + SHRINK) for p in psum}
        self.prec_uses = pn
        self.elem_enc = {e: (esum[e] + SHRINK * g) / (en[e] + SHRINK) for e in esum}

    def neighbours(self, target: str, formulas: Sequence[str]) -> dict[str, Any]:
        """Temperatures and weights of the reactions of the most similar training targets
        (``LiteratureModel`` neighbours, precursor-overlap bonus), same-set temperatures, the
        nearest similarity — the summaries ``row`` turns into features. Why the sharp ones:
        doped series of one paper land on both sides of a by-target split, and a sibling
        composition at similarity 0.999 fired like the target."""
        from .literature import NEIGHBOURS, SET_BONUS, SIM_POWER

        # twice as many asked for, so that excluded targets (out-of-fold training) leave
        # the same number of neighbours as at run time
        idx, w = self.lit._similar(target, k=2 * NEIGHBOURS)
        own = self.lit._t_index.get(target)
        if self.own_target and own is not None:  # _similar leaves the target itself out
            idx, w = np.concatenate([[own], idx]), np.concatenate([[1.0], w])
        fs = set(formulas)
        temps, weights, same, sharp, other, ow = [], [], [], [], [], []
        nearest = 0.0
        nearest_temp = math.nan
        same_nearest, same_sim = math.nan, 0.0
        kept = 0
        for i, wi in zip(idx, w, strict=True):
            t_name = self.lit.targets[int(i)]
            if t_name in self.exclude or (t_name == target and not self.own_target):
                continue
            papers = [k for k in self.lit._rx_of[int(i)] if k not in self.exclude_reactions]
            if not papers:  # every paper of this target left out: as an excluded target
                continue
            kept += 1
            if kept > NEIGHBOURS:
                break
            sim = float(wi) ** (1.0 / SIM_POWER)
            nearest = max(nearest, sim)
            mine = []
            for k in papers:
                ps = set(self.lit.reactions[k][1])
                jac = len(fs & ps) / len(fs | ps)
                if self.other[k] is not None:
                    other.append(self.other[k])
                    ow.append(float(wi) * (1.0 + SET_BONUS * jac))
                temp = self.temps[k]
                if temp is None:
                    continue
                temps.append(temp)
                weights.append(float(wi) * (1.0 + SET_BONUS * jac))
                sharp.append((temp, sim ** 32 * (1.0 + 5.0 * jac)))
                mine.append((jac, temp))
                if ps == fs:
                    same.append(temp)
                    if sim > same_sim:
                        same_nearest, same_sim = temp, sim
            if mine and math.isnan(nearest_temp):
                best = max(j for j, _ in mine)
                nearest_temp = float(np.median([t for j, t in mine if j == best]))
        return {"temps": temps, "weights": weights, "same": same, "nearest": nearest, "sharp": sharp,
                "nearest_temp": nearest_temp, "same_nearest": same_nearest, "same_sim": same_sim,
                "other": other, "other_weights": ow}

    def row(self, target: str, formulas: Sequence[str]) -> np.ndarray:
        from .literature import _weighted_median

        nb = self.neighbours(target, formulas)
        temps, weights, same, nearest = nb["temps"], nb["weights"], nb["same"], nb["nearest"]
        sharp = nb["sharp"]
        g = self.global_mean
        a = _amounts(target)
        tot = sum(a.values())
        cations = {e: x for e, x in a.items() if e not in NONMETALS}
        ctot = sum(cations.values()) or 1.0
        penc = [self.prec_enc.get(p, g) for p in formulas]
        eenc = [self.elem_enc.get(e, g) for e in a]
        ew = [a[e] / tot for e in a]
        mps = [(_element_data(e)[0], x) for e, x in cations.items()]
        mps = [(m, x) for m, x in mps if not math.isnan(m)]
        xs = [(_element_data(e)[1], x) for e, x in a.items()]
        xs = [(v, x) for v, x in xs if not math.isnan(v)]
        kinds = [precursor_kind(p) for p in formulas]
        alkali = sum(x for e, x in cations.items() if e in {"Li", "Na", "K", "Rb", "Cs"}) / ctot
        nan = math.nan
        f = [
            _weighted_median(temps, weights) if temps else nan,
            float(np.average(temps, weights=weights)) if temps else nan,
            float(np.median(same)) if same else nan,
            nearest,
            math.log1p(len(temps)),
            _weighted_median([t for t, _ in sharp], [w for _, w in sharp]) if sharp and sum(w for _, w in sharp) > 0 else nan,
            nb["nearest_temp"], nb["same_nearest"], nb["same_sim"],
            _weighted_median(nb["other"], nb["other_weights"]) if nb["other"] else nan,
            max(penc), float(np.mean(penc)), min(penc),
            math.log1p(min(self.prec_uses.get(p, 0) for p in formulas)),
            float(np.dot(eenc, ew)), max(eenc), min(eenc),
            len(a), len(formulas), a.get("O", 0.0) / tot,
            float(np.average([m for m, _ in mps], weights=[x for _, x in mps])) if mps else nan,
            max((m for m, _ in mps), default=nan), min((m for m, _ in mps), default=nan),
            float(np.average([v for v, _ in xs], weights=[x for _, x in xs])) if xs else nan,
            alkali, float("P" in a), float("B" in a), float("S" in a), float("F" in a), float("N" in a),
            kinds.count("carbonate"), kinds.count("nitrate"), kinds.count("hydroxide"), kinds.count("organic"),
            kinds.count("ammonium"), kinds.count("oxide"), kinds.count("metal"), kinds.count("halide"),
        ]
        return np.asarray(f, dtype=float)


class TreeEnsemble:
    """A fitted ``HistGradientBoostingRegressor`` as plain arrays (JSON-serialisable)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.baseline = float(doc["baseline"])
        self.features = tuple(doc["features"])
        self.trees = [{k: np.asarray(v) for k, v in tree.items()} for tree in doc["trees"]]

    @classmethod
    def from_sklearn(cls, model: Any, features: Sequence[str]) -> TreeEnsemble:
        trees = []
        for (pred,) in model._predictors:
            n = pred.nodes
            trees.append({"feature": n["feature_idx"].tolist(), "threshold": n["num_threshold"].tolist(),
                          "left": n["left"].tolist(), "right": n["right"].tolist(),
                          "leaf": n["is_leaf"].astype(int).tolist(), "value": n["value"].tolist(),
                          "missing_left": n["missing_go_to_left"].astype(int).tolist()})
        return cls({"baseline": float(np.ravel(model._baseline_prediction)[0]), "features": list(features),
                    "trees": trees})

    def to_doc(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "features": list(self.features),
                "trees": [{k: v.tolist() for k, v in t.items()} for t in self.trees]}

    def predict(self, x: np.ndarray) -> float:
        out = self.baseline
        for t in self.trees:
            node = 0
            while not t["leaf"][node]:
                v = x[t["feature"][node]]
                go_left = bool(t["missing_left"][node]) if math.isnan(v) else v <= t["threshold"][node]
                node = int(t["left"][node] if go_left else t["right"][node])
            out += float(t["value"][node])
        return out


def load_models(path: Path | str = MODEL_FILE) -> dict[str, TreeEnsemble]:
    """The shipped ensembles by kind; empty when the file is missing (the literature model
    then falls back to its neighbour median)."""
    path = Path(path)
    if not path.exists():
        return {}
    doc = json.load(lzma.open(path, "rt"))
    models = {k: TreeEnsemble(v) for k, v in doc["models"].items()}
    for m in models.values():
        if m.features != FEATURES:
            raise ValueError(f"{path}: feature list differs from recipes.temperature_model.FEATURES; "
                             "retrain with `python -m recipes._train_temperature`")
    return models
