"""Discovery benchmark: rounds of acquisition on a pool with hidden DFT labels.

Pool: the 3,785 perovskites of data_perov_5_test; a candidate is a "hit" if its hidden
heat_ref is among the lowest 10 % of the pool. From a small random labelled seed set, each
round trains an ensemble on everything labelled so far, predicts the whole pool once into a
members × candidates table, selects q candidates (strategy), and reveals their labels.
Reports hits per round per strategy and the acceleration factor over random selection
(hits found by the strategy / hits found by random after the same number of experiments).

Usage: OMP_NUM_THREADS=1 python benchmarks/discovery.py [--rounds 5] [--q 32] [--seed-size 64]
       [--strategies random,greedy,qlogei,thompson] [--epochs 40] [--prior sevennet-kernel]

``--prior sevennet-kernel``: every model-based strategy runs twice in the same run, with the
plain ensemble (``qlogei``) and with the campaign's opt-in prior (``qlogei+prior``: the kernel
prior on site-pooled SevenNet-0 features + the ensemble on its out-of-fold residual, the
prior's spread added in quadrature, as ``surrogate.prior: sevennet_kernel`` trains it). The
pool's features come from artifacts/sevennet_perov5_site.npz when present
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
POOL = ROOT.parent / "shared" / "data" / "structures" / "data_perov_5_test.csv.gz"
SITE_CACHE = ROOT / "artifacts" / "sevennet_perov5_site.npz"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from surrogates import EnsembleConfig, read_structure_csv, select_batch, train_ensemble  # noqa: E402


def run(strategy: str, structures, y: np.ndarray, hit: np.ndarray, args,
        prior: bool = False) -> dict:
    rng = np.random.default_rng(args.seed)
    labelled = [int(i) for i in rng.choice(len(y), args.seed_size, replace=False)]
    found = [int(hit[labelled].sum())]
    t0, c0 = time.perf_counter(), time.process_time()
    coverage: list[float] = []
    mae: list[float] = []
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
                                             prior="kernel",
                                             combine_spread=args.prior_spread == "quadrature")
                model.ensemble.cache = shared_cache
                table = model.predict(structures)
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
        print(f"# {strategy}{'+prior' if prior else ''} round {r + 1}: hits {found[-1]} of {len(labelled)} labelled "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return {"hits_per_round": found, "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0, "pool_mae": mae, "coverage90": coverage}


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
    ap.add_argument("--prior-spread", choices=["quadrature", "members"], default="quadrature",
                    help="the prior run's e_form spread: members' + GP's in quadrature (the "
                         "campaign's), or the members' alone (ablation)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from surrogates import GraphCache

    structures, y, _ = read_structure_csv(POOL, "heat_ref")
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
            results[f"{strategy}+prior"] = run(strategy, structures, y, hit, args, prior=True)
    base = np.array(results["random"]["hits_per_round"], dtype=float) if "random" in results else None
    seed_hits = results[next(iter(results))]["hits_per_round"][0]
    out = {"pool": len(y), "hits_in_pool": int(hit.sum()), "seed_size": args.seed_size,
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
        if base is not None:
            out[name]["acceleration_vs_random"] = (float(new_hits / max(base[-1] - base[0], 1e-9)))
        out[name]["acceleration_vs_expected_random"] = float(
            new_hits / (hit.mean() * args.q * args.rounds))
    out["date"] = time.strftime("%Y-%m-%d %H:%M")
    out["machine"] = f"{os.cpu_count()} cores, torch {torch.__version__}, 1 thread"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
