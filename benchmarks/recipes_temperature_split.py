"""Heating-temperature MAE under a by-reaction split (the anchors' kind) beside the by-target split.

Why: issue 20's temperature goal (≤ 90 °C) sits below the anchors (SyntMTE 98 °C calcination,
language models ~126 °C), which are measured on random splits of *reactions*: a held-out paper's
target may have other papers in training. Our figure (benchmarks/recipes_literature.py) holds out
whole *targets*, which is harder. This study says how much of the gap is the split: it takes the
shipped training reactions (the held-out targets of ``recipes.literature.held_out`` are not in
them, so this never touches them), holds out ``--fraction`` of the reactions at random, and
trains the shipped model's 38 features + trees (``recipes._train_temperature.PARAMS``) on the rest
with out-of-fold features by reaction. Two feature modes on the same test reactions:

* by-reaction: a test reaction may use its own target's *other* papers (what a random split allows);
* by-target:   the target's own papers are left out (the shipped model's rule).

Run: ``OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/recipes_temperature_split.py``
(~2 CPU-min; needs scikit-learn, a development dependency).
"""
import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recipes._train_temperature import PARAMS  # noqa: E402
from recipes.literature import LiteratureModel  # noqa: E402
from recipes.temperature_model import FEATURES, TemperatureFeatures  # noqa: E402

FOLDS = 5


def r25(t: float) -> float:
    """Rounded to the planner's 25 °C grid and clipped, as the held-out benchmark does."""
    return min(max(round(t / 25.0) * 25.0, 300.0), 1300.0)


def study(full: LiteratureModel, test: set[int], kind: str) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    n = len(full.reactions)
    col = full.column(kind)
    oth = full.column("firing" if kind == "calcination" else "calcination")
    train_idx = [k for k in range(n) if k not in test and col[k] is not None]
    test_idx = [k for k in sorted(test) if col[k] is not None]
    yt = np.array([col[k] for k in test_idx])
    fold = {k: zlib.crc32(f"rx:{k}".encode()) % FOLDS for k in train_idx}
    res: dict[str, float] = {"train": len(train_idx), "test": len(test_idx)}
    for mode, own in (("by-reaction", True), ("by-target", False)):
        xs, ys = [], []
        for f in range(FOLDS):  # out-of-fold features: a row never sees its own temperature
            feats = TemperatureFeatures(full, col, oth, own_target=own,
                                        exclude_reactions=frozenset(test | {k for k in train_idx if fold[k] == f}))
            for k in train_idx:
                if fold[k] == f:
                    xs.append(feats.row(full.reactions[k][0], full.reactions[k][1]))
                    ys.append(col[k])
        model = HistGradientBoostingRegressor(random_state=0, **PARAMS).fit(np.array(xs), np.array(ys))
        feats = TemperatureFeatures(full, col, oth, exclude_reactions=frozenset(test), own_target=own)
        xt = np.array([feats.row(full.reactions[k][0], full.reactions[k][1]) for k in test_idx])
        res[f"trees {mode}"] = float(np.mean(np.abs([r25(p) - y for p, y in zip(model.predict(xt), yt, strict=True)])))
        knn = xt[:, FEATURES.index("knn_median")]
        ok = ~np.isnan(knn)
        res[f"neighbour median {mode}"] = float(np.mean(np.abs([r25(v) for v in knn[ok]] - yt[ok])))
    res["training median"] = float(np.mean(np.abs(np.median([col[k] for k in train_idx]) - yt)))
    seen = {full.reactions[k][0] for k in train_idx}
    res["share of test reactions whose target has a training paper"] = float(
        np.mean([full.reactions[k][0] in seen for k in test_idx]))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fraction", type=float, default=0.2)
    args = ap.parse_args()
    full = LiteratureModel.load()
    full.temperature_models = {}
    rng = np.random.default_rng(args.seed)
    test = set(rng.permutation(len(full.reactions))[: int(len(full.reactions) * args.fraction)].tolist())
    t0 = time.process_time()
    for kind in ("calcination", "firing"):
        res = study(full, test, kind)
        print(f"\n**{kind}** ({res.pop('train'):.0f} training / {res.pop('test'):.0f} test reactions, "
              f"seed {args.seed}; {time.process_time() - t0:.0f} CPU-s so far)\n")
        print("| predictor | MAE (°C) |\n|---|---|")
        for k, v in res.items():
            print(f"| {k} | {v:.3f} |" if v < 1 else f"| {k} | {v:.1f} |")


if __name__ == "__main__":
    main()
