"""The demo campaign as a user gets it: targets made, replaced recipes that succeeded, wall and CPU.

Usage::

    python benchmarks/demo.py                       # the demo's own seed (7) on the bundled world
    python benchmarks/demo.py --seeds 7 1 2         # robustness: other lab/campaign seeds
    python benchmarks/demo.py --world old-demo.json # baseline: the same demo config on another world

Prints one JSON object per run: made, targets, experiments, replaced, replaced_succeeded, wall_s,
cpu_s (this process and the simulated stations' processes), load average before and after. The
config is exactly ``synthloop demo``'s (``controller.loop.demo.demo_config``); only the seed
(which seeds the lab too) and, for a baseline, the world file change.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from controller.loop import run_campaign  # noqa: E402
from controller.loop.demo import demo_outcome, prepare_demo, print_demo_summary  # noqa: E402
from controller.store import Store  # noqa: E402


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_one(seed: int | None, world: str | None, workdir: Path) -> dict:
    path = prepare_demo(workdir)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    if seed is not None:
        cfg["campaign"]["seed"] = seed
    if world is not None:
        cfg["lab"]["world"] = str(Path(world).resolve())
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), _cpu()
    result = run_campaign(workdir, live=False)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    with Store.for_campaign_dir(workdir, cfg["store"]["url"]) as store:
        out = demo_outcome(store, cfg["campaign"]["name"])
    return {
        "seed": cfg["campaign"]["seed"], "world": cfg["lab"]["world"],
        "made": len(out.made), "made_formulas": list(out.made), "targets": len(out.targets),
        "experiments": out.experiments, "replaced": out.replaced,
        "replaced_succeeded": out.replaced_succeeded, "stop_reason": result.summary.stop_reason,
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
        "load_before": round(load0, 1), "load_after": round(os.getloadavg()[0], 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[None],
                    help="campaign (and lab) seeds; default: the demo's own")
    ap.add_argument("--world", default=None, help="world file instead of the bundled demo (baseline)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep each campaign under KEEP/seed-N and print its closing summary to stderr")
    args = ap.parse_args()
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="synthloop-demo-bench-") as tmp:
            where = (args.keep / f"seed-{seed}") if args.keep else Path(tmp) / "demo"
            print(json.dumps(run_one(seed, args.world, where)), flush=True)
            if args.keep:
                from rich.console import Console

                print_demo_summary(where, Console(stderr=True, width=160))


if __name__ == "__main__":
    main()
