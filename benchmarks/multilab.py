"""Two simulated labs on one PostgreSQL campaign against one lab alone (issue 24, part B).

Campaigns with the same world, seed, budget and stations per lab, each in a fresh PostgreSQL
database:

1. ``one``: baseline, one lab, one controller (no lab id: the single-controller path);
2. ``one-shared``: one lab with a lab id — the several-labs rules (per-lab round sizes, new
   targets started in the round they are chosen) with no second lab: the control that separates
   what the second lab adds from what those rules add;
3. ``two``: two labs, one controller each, sharing the campaign (claims, one decider per round);
4. ``two-kill``: the same two labs, with lab A's controller SIGKILLed mid-campaign and restarted
   after one lease.

Printed per run: lab days (the replay of the executed steps over each lab's own stations, see
``controller/loop/labtime.py``), experiments per lab, duplicate executions (each lab's ledger:
a command executed twice; across labs: a sample worked on by two labs), lost experiments
(proposed but gone, or a sample a lab worked on that the store does not know), open
experiments at the end, takeovers, and wall time. The goal: two labs finish the budget in
<= 0.6x the lab days of one, with 0 duplicates and 0 lost, also through the SIGKILL.

    .venv/bin/python benchmarks/multilab.py [--world alab-like-v2] [--budget 36] [--seed 0]

The PostgreSQL server comes from ``SYNTHLOOP_PG_URL`` (default the test server,
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each run gets its own database, dropped
afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG = os.environ.get("SYNTHLOOP_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="alab-like-v2")
    ap.add_argument("--budget", type=int, default=36)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--furnaces", type=int, default=1, help="furnaces per lab (world capacity each)")
    ap.add_argument("--lease-s", type=float, default=3.0)
    ap.add_argument("--runs", default="one,one-shared,two,two-kill",
                    help="comma list of one, one-shared, two, two-kill")
    ap.add_argument("--timeout-s", type=float, default=2400.0)
    ap.add_argument("--free-running", action="store_true",
                    help="controllers decide as results arrive (real instruments' default), not in rounds")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from controller.loop.multilab import run_multilab
    from controller.store import scratch_database

    plan = {"one": dict(labs=1), "one-shared": dict(labs=1, shared=True), "two": dict(labs=2),
            "two-kill": dict(labs=2, kill_lab=0, kill_after_steps=6)}
    results: dict[str, dict] = {}
    for name in args.runs.split(","):
        t0 = time.monotonic()
        load_before = round(os.getloadavg()[0], 2)
        with scratch_database(PG, prefix="synthloop_ml_") as url, tempfile.TemporaryDirectory(prefix=f"multilab-{name}-") as tmp:
            report = run_multilab(Path(tmp), url, world=args.world, seed=args.seed, budget=args.budget,
                                  furnaces=args.furnaces, lease_s=args.lease_s, timeout_s=args.timeout_s,
                                  free_running=args.free_running,
                                  log=lambda m: print(f"  {m}", file=sys.stderr, flush=True),
                                  **plan[name])
        d = report.to_dict()
        d["load_before"], d["load_after"] = load_before, round(os.getloadavg()[0], 2)
        d["mode"] = "free-running" if args.free_running else "lockstep"
        results[name] = d
        print(json.dumps({"run": name, **d}), flush=True)
        print(f"  ({time.monotonic() - t0:.0f} s wall)", file=sys.stderr, flush=True)
    for ref in ("one", "one-shared"):
        base = results.get(ref, {}).get("lab_days")
        for name in ("two", "two-kill"):
            if name in results and base:
                r = results[name]
                ratio = r["lab_days"] / base
                print(f"{name} vs {ref}: {r['lab_days']:.2f} lab days vs {base:.2f} = {ratio:.2f}x "
                      f"(goal <= 0.6: {'met' if ratio <= 0.6 else 'NOT met'}); "
                      f"{r['experiments']} vs {results[ref]['experiments']} experiments; "
                      f"duplicates {r['duplicate_executions']} + {r['cross_lab_duplicates']} across labs, "
                      f"lost {r['lost_experiments']}, open {r['open_experiments']}, "
                      f"takeovers {r['takeovers']}, kills {r['kills']}, ok {r['ok']}")


if __name__ == "__main__":
    main()
