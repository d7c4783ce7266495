"""Fit the full strategy's score weights (``recipes.planner.LITERATURE_WEIGHTS``,
``THERMO_NATS_PER_100MEV``, ``DIVERSITY_NATS``) on TUNE dumps, never on the held-out targets.

Data: dumps of ``benchmarks/recipes_literature.py --validation --dump … --set
PRUNE_SLACK_NATS=3`` — the validation fold of the training targets (``held_out(t, seed=21)``),
scored by a literature model refitted without that fold; every evaluated candidate's raw terms
(the slack keeps sets up to 3 nats below the picks, so re-weighting has something to promote).
The literature parts are recomputed here with that same refitted model
(``LiteratureModel.set_evidence``, the planner's own code), so the fit sees what the planner sees.

Model: a conditional logit (softmax over each target's candidate sets; a candidate is positive
when it equals a set a paper used), linear in the score terms, L2-regularised; the handling
penalties are a chemist's preference and stay fixed (``HANDLING_NATS``), the thermodynamic term
keeps its form (``PRIOR_WEIGHT``, cap) and only its nats per 100 meV/atom are learned. Features
and regularisation are chosen by 5-fold cross-validation by target on top-5 recall with the
planner's own diverse pick (``benchmarks/recipes_rescore.py``'s replica of ``_diverse``).

Needs scipy (a runtime dependency already); prints the constants to paste into planner.py.

Run: ``.venv/bin/python -m recipes._train_ranker /tmp/tune1000.json /tmp/tune_rest.json``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import pickle
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from . import planner as P
from ._prepare_literature import DEFAULT_SOURCE, parse_reactions_full
from .literature import SPLIT_SEED, LiteratureModel, held_out

PARTS = ("sources", "same_set", "unknown_sources", "pairs", "popularity", "compound_source")
FOLDS = 5


def validation_model(source: Path = DEFAULT_SOURCE) -> LiteratureModel:
    """The literature model of ``benchmarks/recipes_literature.py --validation`` (training
    targets minus the validation fold)."""
    st = source.stat()
    cache = Path(tempfile.gettempdir()) / f"synthloop-reactions-{st.st_size}-{int(st.st_mtime)}.pkl"
    rows = pickle.loads(cache.read_bytes()) if cache.exists() else list(parse_reactions_full(source))
    train = [r for r in rows if not held_out(r[0])]
    fit_rows = [r for r in train if not held_out(r[0], seed=SPLIT_SEED + 1)]
    return LiteratureModel([r[:4] for r in fit_rows], calcination=[r[4] for r in fit_rows])


def design(rows: list[dict[str, Any]], model: LiteratureModel, names: tuple[str, ...]) -> list[tuple]:
    """Per reachable target: (target, candidates, X, y, offset) — X the learned features
    (literature parts, thermodynamic meV/100), offset the fixed handling term."""
    out = []
    for r in rows:
        if not r["reachable"]:
            continue
        cands = r["planners"]["full + literature"].get("cands") or []
        xs, off = [], []
        for c in cands:
            parts, _ = model.set_evidence(r["target"], c["k"].split("+"))
            evidence = min(c["step"], P.THERMO_CAP_MEV)
            prior = min(c["prior"], c["df"], P.THERMO_CAP_MEV)
            thermo = ((1 - P.PRIOR_WEIGHT) * evidence + P.PRIOR_WEIGHT * prior) / 100.0
            feats = {**parts, "thermodynamics": thermo}
            xs.append([feats[n] for n in names])
            off.append(-sum(P.HANDLING_NATS.get(h, 0.0) for h in c["flags"]))
        out.append((r["target"], cands, np.array(xs).reshape(len(cands), len(names)),
                    np.array([c["paper"] for c in cands], dtype=bool), np.array(off)))
    return out


def _nll(w: np.ndarray, stack: tuple, l2: float) -> tuple[float, np.ndarray]:
    x, y, off, seg = stack
    s = x @ w + off
    m = np.full(seg.max() + 1, -np.inf)
    np.maximum.at(m, seg, s)
    e = np.exp(s - m[seg])
    z, zp = np.bincount(seg, e), np.bincount(seg, e * y)
    loss = -(np.log(zp) - np.log(z)).sum()
    grad = -((e * y / zp[seg] - e / z[seg]) @ x)
    return loss + 0.5 * l2 * float(w @ w), grad + l2 * w


def fit(data: list[tuple], l2: float, bounds: list[tuple]) -> np.ndarray:
    from scipy.optimize import minimize

    use = [d for d in data if d[3].any()]
    stack = (np.vstack([d[2] for d in use]), np.concatenate([d[3] for d in use]),
             np.concatenate([d[4] for d in use]), np.concatenate([np.full(len(d[3]), i) for i, d in enumerate(use)]))
    return minimize(_nll, np.zeros(use[0][2].shape[1]), args=(stack, l2), jac=True, method="L-BFGS-B",
                    bounds=bounds).x


def _rescore_module() -> Any:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes_rescore.py"
    spec = importlib.util.spec_from_file_location("recipes_rescore", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def recall(data: list[tuple], w: np.ndarray, diversity: float) -> tuple[int, int, int]:
    """Top-5 and top-1 hits with the planner's diverse pick, over the reachable targets."""
    pick = _rescore_module().pick_scored
    hits = hits1 = 0
    for _, cands, x, _, off in data:
        if not cands:
            continue
        chosen = pick(cands, list(x @ w + off), 5, diversity)
        hits += any(c["paper"] for c in chosen)
        hits1 += chosen[0]["paper"]
    return hits, hits1, len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dumps", type=Path, nargs="+")
    ap.add_argument("--l2", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    ap.add_argument("--diversity", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    args = ap.parse_args()
    rows = [r for d in args.dumps for r in json.loads(d.read_text())]
    model = validation_model()
    feature_sets = {
        "sources + same set (the hand-weighted likelihood's parts)": ("sources", "same_set"),
        "+ unknown sources, compound source": ("sources", "same_set", "unknown_sources", "compound_source"),
        "+ pairs, popularity (all parts)": PARTS,
    }
    full = design(rows, model, (*PARTS, "thermodynamics"))
    hand = np.array([1.0, 1.0, 0, 0, 0, 0, P.THERMO_NATS_PER_100MEV])
    print(f"# {len(full)} reachable tune targets; {sum(d[3].any() for d in full)} with a paper set among the candidates")
    print("| features | L2 | " + " | ".join(f"top-5, diversity {d:g}" for d in args.diversity) + " | top-1 |")
    print("|---|---|" + "---|" * (len(args.diversity) + 1))
    for d in args.diversity:
        k, k1, n = recall(full, hand, d)
        print(f"| hand-weighted (shipped before), diversity {d:g} | — | {k}/{n} = {k / n:.1%} | top-1 {k1 / n:.1%} |")
    for label, names in feature_sets.items():
        idx = [PARTS.index(n) for n in names] + [len(PARTS)]
        data = [(t, c, x[:, idx], y, o) for t, c, x, y, o in full]
        bounds = [(None, None)] * len(names) + [(0.0, None)]
        for l2 in args.l2:
            res = {d: [0, 0, 0] for d in args.diversity}
            for k in range(FOLDS):
                train = [r for r in data if zlib.crc32(r[0].encode()) % FOLDS != k]
                test = [r for r in data if zlib.crc32(r[0].encode()) % FOLDS == k]
                w = fit(train, l2, bounds)
                for d in args.diversity:
                    h, h1, n = recall(test, w, d)
                    res[d][0] += h
                    res[d][1] += h1
                    res[d][2] += n
            cells = " | ".join(f"{v[0]}/{v[2]} = {v[0] / v[2]:.1%}" for v in res.values())
            v0 = next(iter(res.values()))
            print(f"| {label} | {l2:g} | {cells} | {v0[1] / v0[2]:.1%} |", flush=True)
        w = fit(data, 1.0, bounds)
        print("|   weights (L2 1, all tune targets) | " + ", ".join(
            f"{n} {x:.3f}" for n, x in zip((*names, "thermodynamics"), w, strict=True)) + " |")
        if not math.isfinite(float(w.sum())):
            raise SystemExit("fit diverged")


if __name__ == "__main__":
    main()
