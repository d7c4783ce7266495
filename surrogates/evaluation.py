"""Held-out evaluation of an ensemble on labelled structure tables (``bench surrogate``).

Why a library function: the CLI command, ``benchmarks/surrogate.py`` and the controller's
model reports must compute MAE, coverage and throughput the same way.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .datasets import read_structure_csv
from .ensemble import EnsembleConfig, coverage, train_ensemble


def evaluate_regression(train_csv: str | Path, test_csv: str | Path, target: str,
                        config: EnsembleConfig | None = None, *,
                        progress=None) -> dict[str, Any]:
    """Train on ``train_csv``, predict ``test_csv``; one flat dict of figures.

    ``predict_per_s`` counts graph construction (empty cache) plus all members' inference;
    ``baseline_mae`` is the MAE of predicting the training mean.
    """
    cfg = config or EnsembleConfig()
    s_train, y_train, _ = read_structure_csv(train_csv, target)
    s_test, y_test, _ = read_structure_csv(test_csv, target)
    for name, y in (("train", y_train), ("test", y_test)):
        if not np.isfinite(y).all():
            raise ValueError(f"{name} file has non-finite values in column {target!r}")
    t0 = time.perf_counter()
    ens = train_ensemble(s_train, y_train, cfg, progress=progress)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    table = ens.predict(s_test, use_cache=False)
    predict_s = time.perf_counter() - t1
    mean = table.mean[:, 0]
    err = mean - y_test
    return {
        "target": target,
        "n_train": len(s_train),
        "n_test": len(s_test),
        "architecture": cfg.architecture,
        "members": cfg.members,
        "epochs": cfg.epochs,
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "coverage_90": coverage(table, y_test, 0.9),
        "coverage_68": coverage(table, y_test, 0.6827),
        "baseline_mae": float(np.mean(np.abs(y_test - y_train.mean()))),
        "member_mae": [float(np.mean(np.abs(table.values[k, :, 0] - y_test)))
                       for k in range(table.values.shape[0])],
        "inflation": float(ens.inflation[0]),
        "best_epochs": ens.metrics.get("best_epochs"),
        "train_s": train_s,
        "predict_s": predict_s,
        "predict_per_s": len(s_test) / predict_s,
    }
