"""Fit ``recipes/data/temperature_model.json.xz``: the heating-temperature tree ensembles.

Trains on the shipped training reactions only (``data/literature.json.xz``: the held-out
targets of ``literature.held_out`` are not in it), one ensemble per kind (``calcination``,
``firing``). Features are out-of-fold: the training targets are split in ``FOLDS`` by a hash
of the formula, and a reaction's features come from the other folds only (neighbours and
encodings) — otherwise a reaction's own temperature leaks into its precursor encoding and the
trees learn to trust it. At run time the features use every training reaction.

Hyper-parameters (``PARAMS``) were chosen on a validation fold of the training targets
(``benchmarks/recipes_literature.py --validation``), never on the held-out targets.
Needs scikit-learn (a development dependency); the shipped JSON is read without it.

Run: ``.venv/bin/python -m recipes._train_temperature``
"""

from __future__ import annotations

import argparse
import json
import lzma
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .literature import LiteratureModel
from .temperature_model import FEATURES, KINDS, MODEL_FILE, TemperatureFeatures, TreeEnsemble

FOLDS = 5
SEED = 0
PARAMS = {"loss": "absolute_error", "learning_rate": 0.05, "max_iter": 300, "max_leaf_nodes": 31,
          "min_samples_leaf": 20}


def out_of_fold(lit: LiteratureModel, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and temperatures of every reaction of ``lit`` with a ``kind`` temperature,
    each row built without its own fold's targets."""
    temps = lit.column(kind)
    other = lit.column("firing" if kind == "calcination" else "calcination")
    fold = {t: zlib.crc32(f"oof:{t}".encode()) % FOLDS for t in lit.targets}
    xs, ys = [], []
    for k in range(FOLDS):
        excluded = {t for t, f in fold.items() if f == k}
        feats = TemperatureFeatures(lit, temps, other, exclude_targets=excluded)
        for (t, ps, _, _), temp in zip(lit.reactions, temps, strict=True):
            if temp is not None and fold[t] == k:
                xs.append(feats.row(t, ps))
                ys.append(temp)
    return np.asarray(xs), np.asarray(ys)


def fit(lit: LiteratureModel, kinds: Sequence[str] = KINDS) -> dict[str, TreeEnsemble]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    out = {}
    for kind in kinds:
        x, y = out_of_fold(lit, kind)
        model = HistGradientBoostingRegressor(random_state=SEED, **PARAMS).fit(x, y)
        out[kind] = TreeEnsemble.from_sklearn(model, FEATURES)
        print(f"{kind}: {len(y)} training reactions, {len(out[kind].trees)} trees", flush=True)
    return out


def _compact(doc: dict) -> dict:
    """Leaf values to 0.01 °C, thresholds to 7 significant digits (thresholds are midpoints
    between the training values of a feature, so this moves no training point across one):
    the file is read on every planner start, half the size this way."""
    for tree in doc["trees"]:
        tree["value"] = [round(v, 2) for v in tree["value"]]
        tree["threshold"] = [float(f"{t:.7g}") for t in tree["threshold"]]
    return doc


def save(models: dict[str, TreeEnsemble], out: Path = MODEL_FILE) -> None:
    doc = {"about": "heating-temperature tree ensembles (recipes/temperature_model.py); trained by "
                    "recipes/_train_temperature.py on the training reactions of literature.json.xz",
           "params": PARAMS, "models": {k: _compact(m.to_doc()) for k, m in models.items()}}
    with lzma.open(out, "wt", preset=9) as fh:
        json.dump(doc, fh, separators=(",", ":"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=MODEL_FILE)
    args = ap.parse_args()
    lit = LiteratureModel.load()
    lit.temperature_models = {}
    save(fit(lit), args.out)
    print(f"-> {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
