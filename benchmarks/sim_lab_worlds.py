"""World statistics benchmark: build a world (CHGNet, slow) or load one, print its statistics, and
optionally sweep reaction-model parameters over the same phases (truth search only, fast).

Usage::

    python benchmarks/sim_lab_worlds.py --build Na-Fe-P-O,Sr-Co-O,Ca-V-O --out /tmp/three.json.bz2
    python benchmarks/sim_lab_worlds.py --world /tmp/three.json.bz2 \
        --sweep driving_force_half_mev=60,90,120 --sweep rate_prefactor_per_min=0.03,0.01

Prints one JSON object per line: the world's figures (``sim_lab.world_stats``), then one per
kinetics variant (``sim_lab.recalibrate_world``), each with machine, date and seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_lab import build_world, load_world, recalibrate_world, world_stats  # noqa: E402

KEYS = ("targets", "makeable_share", "recipe_success_share", "precursor_dependent_share",
        "precursor_dependent", "precursor_dependent_strict_share", "makeable",
        "failed_set_causes_in_strictly_dependent")


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}, {date.today()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", help="bundled name or world file")
    ap.add_argument("--build", help="comma-separated systems to build a world for")
    ap.add_argument("--out", type=Path, help="where the built world goes")
    ap.add_argument("--name", default=None)
    ap.add_argument("--relax-steps", type=int, default=40)
    ap.add_argument("--max-e-hull", type=float, default=0.06)
    ap.add_argument("--relax-cache", type=Path, default=None)
    ap.add_argument("--sweep", action="append", default=[], help="param=v1,v2 (kinetics); repeatable")
    ap.add_argument("--save-best", type=Path, help="save the last sweep variant's world here")
    ap.add_argument("--full", action="store_true", help="print all figures, not the headline ones")
    args = ap.parse_args()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    if args.build:
        world = build_world(args.build.split(","), args.out, name=args.name, relax_steps=args.relax_steps,
                            max_e_hull=args.max_e_hull, relax_cache=args.relax_cache,
                            log=lambda m: print(m, file=sys.stderr, flush=True))
    else:
        world = load_world(args.world)
    figures = world_stats(world)
    head = figures if args.full else {k: figures[k] for k in KEYS}
    print(json.dumps({"world": world.name, **head, "machine": machine(),
                      "wall_s": round(time.perf_counter() - t0, 1),
                      "cpu_s": round(time.process_time() - cpu0, 1)}), flush=True)
    grid = []
    for item in args.sweep:
        key, values = item.split("=", 1)
        grid.append([(key, float(v)) for v in values.split(",")])
    last = None
    for combo in itertools.product(*grid) if grid else []:
        t1 = time.perf_counter()
        kin = dict(combo)
        variant = recalibrate_world(world, name=f"{world.name}-sweep", kinetics=kin)
        f = world_stats(variant)
        print(json.dumps({"kinetics": kin, **{k: f[k] for k in KEYS}, "wall_s": round(time.perf_counter() - t1, 1)}),
              flush=True)
        last = variant
    if args.save_best and last is not None:
        last.save(args.save_best)


if __name__ == "__main__":
    main()
