"""Discovery benchmark: rounds of acquisition on a pool with hidden DFT labels.

Pool: the 3,785 perovskites of data_perov_5_test (``--pool val``: the 3,787 of
data_perov_5_val, where the kernel prior's defaults were tuned — choose settings there and
report on test once); a candidate is a "hit" if its hidden
heat_ref is among the lowest 10 % of the pool. From a small random labelled seed set, each
round trains an ensemble on everything labelled so far, predicts the whole pool once into a
members × candidates table, selects q candidates (strategy), and reveals their labels.
Reports hits per round per strategy and the acceleration factor over random selection
(hits found by the strategy / hits found by random after the same number of experiments).

Usage: OMP_NUM_THREADS=1 python benchmarks/discovery.py [--rounds 5] [--q 32] [--seed-size 64]
       [--strategies random,greedy,qlogei,thompson] [--epochs 40] [--prior sevennet-kernel]
       [--prior-spread map,quadrature] [--pool test|val]

``--prior sevennet-kernel``: every model-based strategy runs twice in the same run, with the
plain ensemble (``qlogei``) and with the campaign's opt-in prior (``qlogei+prior``: the kernel
prior on site-pooled SevenNet-0 features + the ensemble on its out-of-fold residual, the
spreads combined by ``--prior-spread``, default the campaign's ``DEFAULT_SPREAD``, as
``surrogate.prior: sevennet_kernel`` trains it). Each round of a prior run also logs, from the
same trained model, the unlabelled pool's 90 % coverage and mean interval width of every
``pretrained.SPREADS`` combination (weights fitted on the ensemble's validation rows), so one
run compares them at equal members. The pool's features come from artifacts/sevennet_perov5_site.npz when present
(``perov5_site_kernel.py features``), else are computed once (~2 min CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
POOLS = {name: ROOT.parent / "shared" / "data" / "structures" / f"data_perov_5_{name}.csv.gz"
         for name in ("val", "test")}
SITE_CACHE = ROOT / "artifacts" / "sevennet_perov5_site.npz"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from surrogates import EnsembleConfig, read_structure_csv, select_batch, train_ensemble  # noqa: E402


def run(strategy: str, structures, y: np.ndarray, hit: np.ndarray, args,
        prior: str | None = None) -> dict:
    """One strategy's rounds; ``prior``: None (plain ensemble) or the kernel prior run's
    ``--prior-spread`` method."""
    rng = np.random.default_rng(args.seed)
    labelled = [int(i) for i in rng.choice(len(y), args.seed_size, replace=False)]
    found = [int(hit[labelled].sum())]
    t0, c0 = time.perf_counter(), time.process_time()
    coverage: list[float] = []
    mae: list[float] = []
    spreads: list[dict] = []
    for r in range(args.rounds):
        if strategy == "random":
            from surrogates import PredictionTable

            dummy = PredictionTable(np.zeros((1, len(y), 1)), ("e_form",), np.ones(1))
            picks = select_batch(dummy, strategy="random", q=args.q, exclude=labelled, seed=args.seed + r)
        else:
            cfg = EnsembleConfig(members=args.members, epochs=args.epochs, hidden=args.hidden,
                                 layers=args.layers, batch_size=32, patience=15, workers=1,
                                 seed=args.seed + r)
            if prior:
                from surrogates.pretrained import train_delta_ensemble

                model = train_delta_ensemble([structures[i] for i in labelled], y[labelled], cfg,
                                             prior="kernel", combine_spread=prior)
                model.ensemble.cache = shared_cache
                table = model.predict(structures)
                rest = np.setdiff1d(np.arange(len(y)), labelled)  # hidden labels
                spreads.append(compare_spreads(model, [structures[i] for i in rest], y[rest]))
            else:
                ens = train_ensemble([structures[i] for i in labelled], y[labelled], cfg)
                ens.cache = shared_cache  # pool graphs are built once and reused every round
                table = ens.predict(structures)
            rest = np.setdiff1d(np.arange(len(y)), labelled)  # evaluation only: hidden labels
            lo, hi = table.interval(0.9, "e_form")
            coverage.append(float(np.mean((y[rest] >= lo[rest]) & (y[rest] <= hi[rest]))))
            mae.append(float(np.abs(table.mean[rest, 0] - y[rest]).mean()))
            picks = select_batch(table, strategy=strategy, q=args.q, exclude=labelled,
                                 objective="-e_form", seed=args.seed + r,
                                 best_f=float(-y[labelled].min()))
        new = [p.index for p in picks]
        assert not set(new) & set(labelled)
        labelled += new
        found.append(int(hit[labelled].sum()))
        print(f"# {strategy}{'+prior:' + prior if prior else ''} round {r + 1}: hits {found[-1]} of {len(labelled)} labelled "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return {"hits_per_round": found, "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0, "pool_mae": mae, "coverage90": coverage,
            "spreads": spreads}


def compare_spreads(model, structures, y: np.ndarray) -> dict:
    """Per ``SPREADS`` method, refitted on this kernel ``DeltaEnsemble``'s held-back rows:
    90 % coverage, mean 90 % interval width (eV/atom) and mean Gaussian NLL on ``structures``
    (labels the model never saw: evaluation only), plus the fitted weights."""
    from surrogates.pretrained import SPREADS, Z90, fit_spread

    members = model.ensemble.predict(structures)
    j = model.outputs.index(model.output_name)
    mean = members.mean[:, j] + model.prior_predict(structures)
    # the members' own calibration (train_delta_ensemble folds the fitted member weight into
    # the inflation the table carries; ``metrics["inflation"]`` is the one fitted on them)
    own = members.raw_std[:, j] * model.ensemble.metrics["inflation"][j]
    gp = model.prior.std(structures, model.potential.descriptors(structures))
    err = y - mean
    out = {"n_fit": int(np.isfinite(model.spread_fit_rows["err"]).sum()),
           "mae": round(float(np.abs(err).mean()), 4)}
    for name in SPREADS:
        w = fit_spread(name, **model.spread_fit_rows)
        std = np.maximum(w.combine(own, gp), 1e-9)
        out[name] = {"coverage90": round(float(np.mean(np.abs(err) <= Z90 * std)), 3),
                     "width90": round(float(2 * Z90 * std.mean()), 4),
                     "nll": round(float(np.mean(0.5 * np.log(2 * np.pi * std ** 2)
                                                + 0.5 * (err / std) ** 2)), 3),
                     "weights": [round(v, 5) for v in w.to_dict().values()]}
    return out


shared_cache = None


def main() -> None:
    global shared_cache
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--q", type=int, default=32)
    ap.add_argument("--seed-size", type=int, default=64)
    ap.add_argument("--strategies", default="random,greedy,qlogei,thompson")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prior", choices=["none", "sevennet-kernel"], default="none",
                    help="also run each model-based strategy with the SevenNet kernel prior")
    from surrogates.pretrained import DEFAULT_SPREAD, SPREADS

    ap.add_argument("--prior-spread", default=DEFAULT_SPREAD,
                    help="the prior run's e_form spread (acquisition reads it): one or several "
                         f"(comma-separated, each its own run) of {', '.join(SPREADS)}; "
                         "default the campaign's")
    ap.add_argument("--pool", choices=["test", "val"], default="test",
                    help="val: the split the kernel prior's defaults were tuned on (choose "
                         "settings here); test: held out, report once")
    args = ap.parse_args()
    if not set(args.prior_spread.split(",")) <= set(SPREADS):
        ap.error(f"--prior-spread: choose from {SPREADS}")
    torch.set_num_threads(1)
    from surrogates import GraphCache

    structures, y, _ = read_structure_csv(POOLS[args.pool], "heat_ref")
    shared_cache = GraphCache(8.0, 12)
    shared_cache.graphs(structures)
    hit = y <= np.quantile(y, 0.10)
    results = {}
    if args.prior != "none":
        from surrogates.prior_features import shared_features

        feats = shared_features(pooling="site")
        if SITE_CACHE.exists():  # the same rows PotentialFeatures computes (keys included)
            blob = np.load(SITE_CACHE)
            feats.load_state(dict(zip(blob["keys"].tolist(), blob["rows"], strict=True)))
        c0 = time.process_time()
        feats.descriptors(structures)
        print(f"# pool features: {time.process_time() - c0:.0f} s CPU", file=sys.stderr, flush=True)
    for strategy in args.strategies.split(","):
        results[strategy] = run(strategy, structures, y, hit, args)
        if args.prior != "none" and strategy != "random":
            for spread in args.prior_spread.split(","):
                name = f"{strategy}+prior" + ("" if "," not in args.prior_spread else f":{spread}")
                results[name] = run(strategy, structures, y, hit, args, prior=spread)
    base = np.array(results["random"]["hits_per_round"], dtype=float) if "random" in results else None
    seed_hits = results[next(iter(results))]["hits_per_round"][0]
    out = {"pool": len(y), "pool_split": args.pool, "prior_spread": args.prior_spread,
           "hits_in_pool": int(hit.sum()), "seed_size": args.seed_size,
           "q": args.q, "rounds": args.rounds, "seed_hits": seed_hits,
           "expected_random_hits_per_pick": float(hit.mean())}
    for name, res in results.items():
        found = np.array(res["hits_per_round"], dtype=float)
        new_hits = found[-1] - found[0]
        out[name] = {"hits_per_round": res["hits_per_round"], "new_hits": int(new_hits),
                     "seconds": round(res["seconds"], 1),
                     "cpu_seconds": round(res["cpu_seconds"], 1)}
        if res["pool_mae"]:  # per round, on the unlabelled pool (hidden labels, evaluation only)
            out[name]["pool_mae"] = [round(v, 4) for v in res["pool_mae"]]
            out[name]["coverage90"] = [round(v, 3) for v in res["coverage90"]]
        if res["spreads"]:
            out[name]["spreads_per_round"] = res["spreads"]
        if base is not None:
            out[name]["acceleration_vs_random"] = (float(new_hits / max(base[-1] - base[0], 1e-9)))
        out[name]["acceleration_vs_expected_random"] = float(
            new_hits / (hit.mean() * args.q * args.rounds))
    out["date"] = time.strftime("%Y-%m-%d %H:%M")
    out["machine"] = f"{os.cpu_count()} cores, torch {torch.__version__}, 1 thread"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
