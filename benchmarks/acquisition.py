"""Acquisition speed over large discrete pools (members × candidates table precomputed).

Usage: OMP_NUM_THREADS=1 python benchmarks/acquisition.py [--sizes 100000,1000000] [--q 8]
       [--pending 16] [--members 5]
Prints one JSON object: seconds per strategy and pool size (goal: q = 8 over 1e5 candidates
with 16 pending in <= 2 s), and that no pending candidate was proposed.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--q", type=int, default=8)
    ap.add_argument("--pending", type=int, default=16)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
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
    out["date"] = time.strftime("%Y-%m-%d %H:%M")
    out["machine"] = f"{os.cpu_count()} cores, torch {torch.__version__}, 1 thread"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
