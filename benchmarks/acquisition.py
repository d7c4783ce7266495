"""Acquisition speed over large discrete pools (members × candidates table precomputed).

Usage: OMP_NUM_THREADS=1 python benchmarks/acquisition.py [--sizes 100000,1000000] [--q 8]
       [--pending 16] [--members 5]
Prints one JSON object: seconds per strategy and pool size (goal: q = 8 over 1e5 candidates
with 16 pending in <= 2 s), and that no pending candidate was proposed. ``--multiobjective``
adds 2-objective EHVI (qNEHVI with members enumerated; cost none / constraint / per-cost)
and BoTorch's optimize_acqf_discrete + qLogNEHVI on 2,000 candidates for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from surrogates import STRATEGIES, PredictionTable, select_batch  # noqa: E402


def multiobjective(args) -> dict:
    """2-objective cost-aware EHVI (surrogates.multiobjective) over the same pool sizes, with
    100 measured candidates (the fronts' baseline) and ``--pending`` in flight; BoTorch's
    optimize_acqf_discrete + qLogNEHVI on a 2,000-candidate pool for comparison."""
    from botorch.optim import optimize_acqf_discrete

    from surrogates.multiobjective import botorch_qlognehvi, select_pareto_batch

    res: dict = {}
    for n in (int(x) for x in args.sizes.split(",")):
        rng = np.random.default_rng(args.seed)
        angle = rng.uniform(0, np.pi / 2, n)  # a trade-off: stability vs makeability
        radius = rng.beta(5, 2, n)
        centre = np.stack([np.cos(angle), np.sin(angle)], axis=1) * radius[:, None]
        values = centre[None] + 0.05 * rng.normal(size=(args.members, n, 2))
        cost = rng.lognormal(0.0, 0.5, n)  # e.g. precursor cost per experiment
        order = rng.permutation(n)
        baseline, pending = order[:100], order[100:100 + args.pending]
        for mode, kw in (("none", {}), ("constraint", {"max_cost": float(np.median(cost))}),
                         ("per_cost", {})):
            t0 = time.perf_counter()
            picks = select_pareto_batch(values, q=args.q, baseline=baseline, pending=pending,
                                        cost=cost, cost_mode=mode, **kw)
            dt = time.perf_counter() - t0
            idx = {p.index for p in picks}
            assert len(idx) == args.q and not idx & (set(pending.tolist()) | set(baseline.tolist()))
            res[f"ehvi_{mode}_s_n{n}"] = round(dt, 4)
        ref = values.min(axis=(0, 1)) - 0.01 * np.ptp(values.reshape(-1, 2), axis=0)
        acqf = botorch_qlognehvi(values, baseline=baseline, pending=pending, ref_point=ref)
        x = torch.tensor([p.index for p in picks], dtype=torch.float64).view(1, -1, 1)
        with torch.no_grad():
            res[f"botorch_qlognehvi_of_per_cost_batch_n{n}"] = round(float(acqf(x)), 4)
    n_small = 2000
    rng = np.random.default_rng(args.seed)
    angle = rng.uniform(0, np.pi / 2, n_small)
    vals = (np.stack([np.cos(angle), np.sin(angle)], axis=1) * rng.beta(5, 2, n_small)[:, None])[None]
    vals = vals + 0.05 * rng.normal(size=(args.members, n_small, 2))
    order = rng.permutation(n_small)
    base, pend = order[:100], order[100:100 + args.pending]
    ref = vals.min(axis=(0, 1)) - 0.01 * np.ptp(vals.reshape(-1, 2), axis=0)
    t0 = time.perf_counter()
    ours = [p.index for p in select_pareto_batch(vals, q=args.q, baseline=base, pending=pend,
                                                 ref_point=ref)]
    res["ehvi_s_n2000"] = round(time.perf_counter() - t0, 4)
    acqf = botorch_qlognehvi(vals, baseline=base, pending=pend, ref_point=ref)
    choices = torch.from_numpy(np.setdiff1d(np.arange(n_small), np.concatenate([base, pend])))
    t0 = time.perf_counter()
    x, _ = optimize_acqf_discrete(acqf, q=args.q, choices=choices.double().view(-1, 1),
                                  max_batch_size=16384)
    res["botorch_optimize_acqf_discrete_qlognehvi_s_n2000"] = round(time.perf_counter() - t0, 2)
    theirs = [int(v) for v in x.view(-1).round().tolist()]
    res["same_picks_as_botorch_n2000"] = f"{len(set(ours) & set(theirs))}/{args.q}"
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--q", type=int, default=8)
    ap.add_argument("--pending", type=int, default=16)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--multiobjective", action="store_true",
                    help="also 2-objective cost-aware EHVI (surrogates.multiobjective)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict = {"q": args.q, "pending": args.pending, "members": args.members}
    for n in (int(x) for x in args.sizes.split(",")):
        rng = np.random.default_rng(args.seed)
        values = rng.normal(size=(1, n, 1)) + 0.2 * rng.normal(size=(args.members, n, 1))
        table = PredictionTable(values, ("e_form",), np.array([1.5]))
        pending = set(rng.choice(n, args.pending, replace=False).tolist())
        select_batch(table, strategy="greedy", q=1)  # warm-up (imports, allocations)
        for strategy in STRATEGIES:
            t0 = time.perf_counter()
            picks = select_batch(table, strategy=strategy, q=args.q, pending=pending,
                                 objective="-e_form", seed=args.seed)
            dt = time.perf_counter() - t0
            idx = {p.index for p in picks}
            assert len(idx) == args.q and not idx & pending
            out[f"{strategy}_s_n{n}"] = round(dt, 4)
    if args.multiobjective:
        out.update(multiobjective(args))
    out["date"] = time.strftime("%Y-%m-%d %H:%M")
    out["machine"] = f"{os.cpu_count()} cores, torch {torch.__version__}, 1 thread"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
