"""Recipe planning on the simulated ``alab-like`` world: random sets vs driving force vs full planner.

What it measures, per strategy, on the same targets in the same order and the same seeds:
- first-recipe success: targets whose first experiment reached the yield threshold (50 %);
- success within five: targets made within ``--max-attempts`` (5) experiments;
- experiments until success (made targets), total experiments, and the recipe success rate
  (experiments ≥ threshold / all experiments; the A-Lab: 37 %).

Protocol (the controller's, without the sockets): a campaign-wide history; for each target the
planner proposes its initial recipes, the first is "run" with ``sim_lab.simulate_recipe`` (true
weight fractions of the hidden world, plus XRD-like noise of 1 wt % and a 2 wt % detection
limit), and while the yield stays below the threshold ``planner.replace`` proposes the next
experiment (the baselines take the next set of their own ranking). Targets are given to the
planner as TargetSpec(formula) without energy: hypothetical ones are placed on the hull.

Strategies: (a) ``random`` stocked sets that balance, (b) ``driving_force`` ranking without
learning, (c) ``full`` planner with replacement.

Run: ``.venv/bin/python benchmarks/recipe_strategies.py --seeds 0 1 2`` (add ``--targets N`` to bound
the run, ``--json FILE`` to keep per-target records). ``--world`` also takes a world file;
``--build-systems Li-Mn-O Ba-Ti-O ... --save FILE`` builds one with ``sim_lab.build_world``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from pymatgen.core import Composition  # noqa: E402

from recipes import Exhausted, Observation, RecipeError, RecipePlanner, TargetSpec  # noqa: E402


def _world(name: str, systems: list[str] | None, seed: int, save: Path | None = None) -> Any:
    import sim_lab

    try:
        return sim_lab.load_world(name)
    except sim_lab.WorldError as exc:
        if not systems:
            raise SystemExit(f"world {name!r} is not available ({exc}); pass --build-systems to build one") from None
        print(f"# world {name!r} not bundled ({exc}); building one over {systems}", flush=True)
        return sim_lab.build_world(systems, save, seed=seed, name=f"bench-{'_'.join(systems)}")


def _observe(fractions: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    """XRD-like view of the truth: 1 wt % noise, 2 wt % detection limit."""
    out = {}
    for f, w in fractions.items():
        v = float(w + rng.normal(0.0, 0.01))
        if v >= 0.02:
            out[Composition(f).reduced_formula] = min(v, 1.0)
    return out


def run_strategy(world: Any, targets: list[str], strategy: str, seed: int, max_attempts: int,
                 threshold: float) -> list[dict[str, Any]]:
    import sim_lab

    planner = RecipePlanner(stock=list(world.precursors), strategy=strategy, seed=seed,
                            max_recipes=5, max_attempts=max_attempts, yield_threshold=threshold)
    history: list[Observation] = []
    records: list[dict[str, Any]] = []
    for target in targets:
        rec: dict[str, Any] = {"target": target, "experiments": 0, "made": False, "first": False,
                               "yields": [], "recipes": [], "stop": ""}
        t0 = time.perf_counter()
        try:
            recipes = planner.initial_recipes(TargetSpec(target), history)
        except RecipeError as exc:
            rec["stop"] = f"no recipe: {exc}"
            records.append(rec)
            continue
        recipe = recipes[0]
        rng = np.random.default_rng([seed, zlib.crc32(target.encode()), zlib.crc32(strategy.encode())])
        while rec["experiments"] < max_attempts:
            masses = {Composition(p.formula).reduced_formula: p.mass_g for p in recipe.precursors}
            sim_seed = int(rng.integers(0, 2**31 - 1))
            truth = sim_lab.simulate_recipe(world, masses, [s.to_dict() for s in recipe.profile],
                                            sim_seed, atmosphere=recipe.atmosphere)
            phases = _observe(truth, rng)
            y = phases.get(Composition(target).reduced_formula, 0.0)
            obs = Observation(recipe, phases, min(max(y, 0.0), 1.0))
            history.append(obs)
            rec["experiments"] += 1
            rec["yields"].append(round(y, 3))
            rec["recipes"].append(f"{'+'.join(recipe.precursor_formulas)}@{recipe.temperature_c:.0f}C/"
                                  f"{recipe.dwell_min:.0f}min")
            if y >= threshold:
                rec["made"] = True
                rec["first"] = rec["experiments"] == 1
                break
            nxt = planner.replace(recipe, obs, history)
            if isinstance(nxt, Exhausted):
                rec["stop"] = nxt.reason
                break
            recipe = nxt
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        records.append(rec)
    return records


def summarise(records: list[dict[str, Any]]) -> dict[str, float]:
    n = len(records)
    made = [r for r in records if r["made"]]
    exps = sum(r["experiments"] for r in records)
    good = sum(1 for r in records for y in r["yields"] if y >= 0.5)
    return {
        "targets": n,
        "first_recipe_success": sum(r["first"] for r in records) / n if n else 0.0,
        "made_within_budget": len(made) / n if n else 0.0,
        "made": len(made),
        "experiments": exps,
        "experiments_until_success_mean": float(np.mean([r["experiments"] for r in made])) if made else float("nan"),
        "experiments_per_made_target": exps / len(made) if made else float("inf"),
        "recipe_success_rate": good / exps if exps else 0.0,
        "planner_seconds": float(sum(r.get("seconds", 0.0) for r in records)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default="alab-like")
    ap.add_argument("--build-systems", nargs="*", default=None,
                    help="if the world is not bundled, build one over these systems (e.g. Li-Mn-O)")
    ap.add_argument("--build-seed", type=int, default=1, help="seed of a built world")
    ap.add_argument("--save", type=Path, default=None, help="save a built world here (reuse with --world)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--targets", type=int, default=None, help="first N targets (seeded order)")
    ap.add_argument("--strategies", nargs="+", default=["random", "driving_force", "full"])
    ap.add_argument("--max-attempts", type=int, default=5)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    world = _world(args.world, args.build_systems, seed=args.build_seed, save=args.save)
    all_targets = sorted(world.target_formulas())
    print(f"# world {world.name}: {len(all_targets)} targets, {len(world.precursors)} precursors on the shelf")
    results: dict[str, dict[int, list[dict[str, Any]]]] = {s: {} for s in args.strategies}
    for seed in args.seeds:
        order = [all_targets[i] for i in np.random.default_rng(seed).permutation(len(all_targets))]
        targets = order[: args.targets] if args.targets else order
        for strategy in args.strategies:
            t0 = time.perf_counter()
            recs = run_strategy(world, targets, strategy, seed, args.max_attempts, args.threshold)
            results[strategy][seed] = recs
            s = summarise(recs)
            print(f"seed {seed} {strategy:>13}: first {s['first_recipe_success']:.2f}  "
                  f"made {s['made']}/{s['targets']}  experiments {s['experiments']}  "
                  f"until success {s['experiments_until_success_mean']:.2f}  "
                  f"recipe success {s['recipe_success_rate']:.2f}  ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    print("\n| strategy | first-recipe success | made within 5 | experiments | experiments until success (made) | experiments per made target | recipe success rate |")
    print("|---|---|---|---|---|---|---|")
    for strategy in args.strategies:
        recs = [r for seed in args.seeds for r in results[strategy][seed]]
        s = summarise(recs)
        per_seed = [summarise(results[strategy][seed])["made"] for seed in args.seeds]
        print(f"| {strategy} | {s['first_recipe_success']:.1%} | {s['made']}/{s['targets']} "
              f"({s['made_within_budget']:.1%}; per seed {per_seed}) | {s['experiments']} | "
              f"{s['experiments_until_success_mean']:.2f} | {s['experiments_per_made_target']:.2f} | "
              f"{s['recipe_success_rate']:.1%} |")
    if args.json:
        args.json.write_text(json.dumps({s: {str(k): v for k, v in d.items()} for s, d in results.items()}, indent=1))


if __name__ == "__main__":
    main()
