"""Replay on recorded outcomes: full planner vs driving-force order vs random order.

Tables: for each target of a bundled simulated world, the world's own truth search
(``sim_lab.target_truth``'s protocol, rebuilt here from the public ``sim_lab.simulate`` and
``sim_lab.precursor_masses``): every single-cation precursor per cation of the shelf, crossed
(at most 24 sets), at 700, 850, 1000 and 1150 °C for 8 h — the true weight fractions are the
recorded products. Benchmarks may read truth; the planner only sees the table's answers.

Each strategy replays each table through ``synthloop recipes replay``'s code path
(``controller.cli.recipes_cmds.replay_outcomes``: the campaign's ``AskTell`` face, the planner
restricted to the table's rows), budget = all rows. Scored on targets with at least one
successful row: experiments to the first success and to every successful set (a set counts
as found when one of its rows reaches 50 %); the random order's expectation is computed
exactly (first success) or from 4,000 draws (all sets). Seeds: the random strategy's order
and the sample of targets (``--targets``); ``full`` and ``driving_force`` are deterministic on
a table, so each table is replayed once for them and reused for every seed.

Split: the planner's temperature rule (literature firing temperature raised to the Tammann
rule's) was chosen on ``alab-like``; ``alab-like-v2`` (other targets, CHGNet energies, more
precursor-dependent) is the report world — run it without changing anything in between.

Note: the ``random`` strategy draws the precursor set at random but fires it at the Tammann
rule's temperature (nearest recorded row), so it is a stronger baseline than a uniformly
random row; the uniformly random order is the ``random (expected)`` line.

Run: ``nice -n 10 .venv/bin/python benchmarks/recipes_replay.py --world alab-like-v2 --seeds 0 1 2 3 4``
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from pymatgen.core import Composition  # noqa: E402

from controller.cli.recipes_cmds import replay_outcomes  # noqa: E402
from recipes import Outcome  # noqa: E402

TEMPERATURES_C = (700.0, 850.0, 1000.0, 1150.0)
DWELL_MIN = 480.0
MAX_SETS = 24


def truth_table(world: Any, target: str) -> list[Outcome]:
    """The world's truth search as recorded outcomes (one row per set and temperature)."""
    import sim_lab

    key = Composition(target).reduced_formula
    cations = sorted(el.symbol for el in Composition(key) if el.symbol != "O")
    choices = []
    for el in cations:
        opts = [p for p in world.precursors
                if {e.symbol for e in Composition(p)} - {"O", "C", "H", "N"} == {el}]
        if not opts:
            return []
        choices.append(opts)
    rows = []
    for pset in list(itertools.product(*choices))[:MAX_SETS]:
        masses = sim_lab.precursor_masses(key, pset)
        for t in TEMPERATURES_C:
            profile = [{"ramp_c_per_min": 5.0, "setpoint_c": t, "dwell_min": DWELL_MIN}]
            fr = sim_lab.simulate(world, masses, profile, seed=None).weight_fractions()
            products = {Composition(f).reduced_formula: round(float(w), 4) for f, w in fr.items() if w >= 0.005}
            precs = tuple(sorted(Composition(p).reduced_formula for p in pset))
            rows.append(Outcome(precs, t, DWELL_MIN, products, len(rows) + 2))
    return rows


def cached_tables(world: Any, name: str) -> dict[str, list[Outcome]]:
    """Tables of the targets with a successful row, memoised on disk (temp dir, keyed by the
    world file's size and mtime and this module's): a truth search is minutes to build and
    tuning replays the same tables many times."""
    import hashlib
    import pickle
    import tempfile

    src = Path(__file__).resolve().parents[1] / "sim_lab" / "data" / "worlds"
    files = sorted(src.glob(f"{name}.*"))
    stamp = "|".join(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files)
    stamp += hashlib.sha1(Path(__file__).read_bytes().split(b"def cached_tables")[0]).hexdigest()
    cache = Path(tempfile.gettempdir()) / f"synthloop-replay-{name}-{hashlib.sha1(stamp.encode()).hexdigest()[:12]}.pkl"
    if files and cache.exists():
        return pickle.loads(cache.read_bytes())
    tables: dict[str, list[Outcome]] = {}
    for tgt in sorted(world.target_formulas()):
        rows = truth_table(world, tgt)
        if any(o.yield_of(tgt) >= 0.5 for o in rows):
            tables[tgt] = rows
    if files:
        cache.write_bytes(pickle.dumps(tables))
    return tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default="alab-like")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--targets", type=int, default=None, help="a seeded sample of N targets per seed")
    ap.add_argument("--strategies", nargs="+", default=["random", "driving_force", "full"])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--set", nargs="*", default=[],
                    help="planner constants NAME=VALUE (tuning on alab-like only, never on the report world)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import recipes.planner as planner_module

    for item in args.set:
        name, value = item.split("=")
        setattr(planner_module, name, type(getattr(planner_module, name))(eval(value)))  # noqa: S307
    import sim_lab

    t0 = time.perf_counter()
    world = sim_lab.load_world(args.world)
    tables = cached_tables(world, args.world)
    print(f"# world {world.name}: {len(world.target_formulas())} targets, {len(tables)} with a successful "
          f"recorded set; tables built in {time.perf_counter() - t0:.0f} s "
          f"({sum(len(v) for v in tables.values())} rows)", flush=True)
    results: dict[str, dict[int, list[dict[str, Any]]]] = {s: {} for s in [*args.strategies, "random (expected)"]}
    names = sorted(tables)
    cache: dict[tuple[str, str], dict[str, Any]] = {}
    for seed in args.seeds:
        order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
        sample = order[: args.targets] if args.targets else order
        for strategy in args.strategies:
            recs = []
            t1 = time.perf_counter()
            for tgt in sample:
                rows = tables[tgt]
                if strategy != "random" and (strategy, tgt) in cache:  # deterministic: same every seed
                    recs.append(cache[(strategy, tgt)])
                    continue
                r = replay_outcomes(rows, tgt, strategy=strategy, seed=seed, random_draws=1)
                recs.append({"target": tgt, "rows": len(rows), "first": r["first_success_at"] or len(rows) + 1,
                             "all": r["experiments_to_all_successes"] or len(rows) + 1,
                             "found": r["successful_sets_found"], "total": r["successful_sets_total"],
                             "stopped": r["stopped"]})
                cache[(strategy, tgt)] = recs[-1]
            results[strategy][seed] = recs
            print(f"seed {seed} {strategy:>13}: first success {np.mean([x['first'] for x in recs]):.2f}  "
                  f"all successes {np.mean([x['all'] for x in recs]):.2f}  "
                  f"({time.perf_counter() - t1:.0f} s)", flush=True)
        exp = []
        for tgt in sample:
            r = replay_outcomes(tables[tgt], tgt, strategy="random", budget=1, seed=seed)
            exp.append({"target": tgt, "first": r["random"]["first_success_at_expected"],
                        "all": r["random"]["experiments_to_all_successes_expected"]})
        results["random (expected)"][seed] = exp
    print("\n| order | experiments to first success | experiments to all successful sets | per seed (first / all) |")
    print("|---|---|---|---|")
    for name, per_seed in results.items():
        firsts = [np.mean([x["first"] for x in recs]) for recs in per_seed.values()]
        alls = [np.mean([x["all"] for x in recs]) for recs in per_seed.values()]
        print(f"| {name} | {np.mean(firsts):.2f} | {np.mean(alls):.2f} | "
              + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(firsts, alls, strict=True)) + " |")
    n_rows = np.mean([len(v) for v in tables.values()])
    print(f"\n# {len(tables)} tables, {n_rows:.1f} rows each on average; total {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({k: {str(s): v for s, v in d.items()} for k, d in results.items()}, indent=1))
    if args.set:
        print(f"# planner constants set: {' '.join(args.set)}")


if __name__ == "__main__":
    main()
