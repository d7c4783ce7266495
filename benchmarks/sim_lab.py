"""Simulated-lab benchmark: CPU cost of the lab side of a 355-experiment campaign, and the
fraction of truly makeable targets in the bundled ``alab-like`` world.

Lab side = what the simulated instruments compute per experiment: dosing (mass errors, sample
store), firing (reaction physics), recovery, and the XRD pattern (per-phase caches), including
the SQLite sample store and the execution ledger. Two ways are measured:

* ``direct``: the instruments' code called without sockets (the lab's own cost);
* ``protocol``: the same experiments through a real Dispatcher and the in-process SimLab over
  ZeroMQ at full speed-up (adds the driver SDK and the controller-side dispatcher, same process).

Usage: ``python benchmarks/sim_lab.py [--experiments 355] [--world alab-like] [--skip-protocol]
[--verify-truth]``. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers import Command, Dispatcher  # noqa: E402
from sim_lab import SimLab, instrument_class, load_world, precursor_masses, target_truth  # noqa: E402


def plan(world, n: int, seed: int) -> list[tuple[str, dict[str, float], list[dict[str, float]]]]:
    """n experiments like a campaign's: a target, a shelf precursor set, a temperature."""
    from pymatgen.core import Composition

    rng = random.Random(seed)
    targets = world.target_formulas()
    out = []
    for i in range(n):
        target = targets[i % len(targets)]
        cations = [el.symbol for el in Composition(target) if el.symbol != "O"]
        pset = []
        for el in cations:
            opts = [p for p in world.precursors
                    if {e.symbol for e in Composition(p)} - {"O", "C", "H", "N"} == {el}]
            pset.append(rng.choice(opts))
        masses = precursor_masses(target, pset)
        profile = [{"ramp_c_per_min": 5.0, "setpoint_c": float(rng.choice(range(600, 1250, 50))),
                    "dwell_min": float(rng.choice((240, 480, 720)))}]
        out.append((target, masses, profile))
    return out


def commands(i: int, masses, profile) -> list[Command]:
    sid = f"S{i:04d}"
    return [
        Command(capability="dose_mix", sample_ids=[sid], deadline_s=120, params={
            "sample_id": sid, "precursors": [{"formula": f, "target_mass_g": m} for f, m in masses.items()]}),
        Command(capability="heat", sample_ids=[sid], deadline_s=120,
                params={"sample_ids": [sid], "profile": profile, "atmosphere": "air"}),
        Command(capability="recover", sample_ids=[sid], deadline_s=120, params={"sample_id": sid, "grind": True}),
        Command(capability="xrd", sample_ids=[sid], deadline_s=120, params={
            "sample_id": sid, "two_theta_start": 10.0, "two_theta_end": 80.0, "step": 0.02, "scan_time_min": 8.0}),
    ]


async def _noop(_f: float, _m: str) -> None:
    return None


def run_direct(world, experiments, workdir: Path) -> tuple[float, float, int, float]:
    drivers = {
        role: instrument_class(role, world)(f"bench-{role}", workdir / f"bench-{role}.ledger", world=world,
                                            workdir=workdir, speedup=1e12, seed=0)
        for role in ("dosing", "furnace", "xrd")
    }
    by_cap = {"dose_mix": drivers["dosing"], "heat": drivers["furnace"], "recover": drivers["xrd"],
              "xrd": drivers["xrd"]}

    async def main() -> float:
        sim_min = 0.0
        for i, (_t, masses, profile) in enumerate(experiments):
            for cmd in commands(i, masses, profile):
                result = await by_cap[cmd.capability].execute(cmd, _noop)
                sim_min += result["sim_time_min"]
        return sim_min

    cpu0, wall0 = time.process_time(), time.perf_counter()
    sim_min = asyncio.run(main())
    made = sum(
        drivers["xrd"].store.get(f"S{i:04d}").weight_fractions().get(t, 0) >= 0.5
        for i, (t, _m, _p) in enumerate(experiments)
    )
    return time.process_time() - cpu0, time.perf_counter() - wall0, made, sim_min


def run_protocol(world, experiments, workdir: Path) -> tuple[float, float, int]:
    lab = SimLab(world, seed=0, speedup=1e12, workdir=workdir)

    async def main() -> int:
        d = Dispatcher("tcp://127.0.0.1:*", heartbeat_s=1.0, lost_after=30)
        await d.start()
        ok = 0
        try:
            lab.start(d.endpoint, processes=False)
            await d.wait_for({"dose_mix", "heat", "recover", "xrd"}, 60)
            sem = asyncio.Semaphore(4)

            async def one(i, masses, profile) -> bool:
                async with sem:
                    for cmd in commands(i, masses, profile):
                        out = await d.submit(cmd)
                        if out.status != "succeeded":
                            return False
                    return True

            results = await asyncio.gather(*(one(i, m, p) for i, (_t, m, p) in enumerate(experiments)))
            ok = sum(results)
        finally:
            lab.stop()
            await d.close()
        return ok

    cpu0, wall0 = time.process_time(), time.perf_counter()
    ok = asyncio.run(main())
    return time.process_time() - cpu0, time.perf_counter() - wall0, ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", type=int, default=355)
    ap.add_argument("--world", default="alab-like")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-protocol", action="store_true")
    ap.add_argument("--verify-truth", action="store_true", help="recompute every target's truth")
    args = ap.parse_args()
    world = load_world(args.world)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"world {world.name!r}: {len(world.phase_formulas())} phases, {len(world.target_formulas())} targets")
    truths = {t: world.truth(t) for t in world.target_formulas()}
    makeable = sum(1 for t in truths.values() if t is not None and t.makeable)
    print(f"makeable targets in {world.name}: {makeable}/{len(truths)} = {makeable / len(truths):.2f}")
    if args.verify_truth:
        t0 = time.process_time()
        again = sum(target_truth(world, t)["makeable"] for t in truths)
        print(f"recomputed makeable targets: {again}/{len(truths)} ({time.process_time() - t0:.0f} s CPU)")
    experiments = plan(world, args.experiments, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        cpu, wall, made, sim_min = run_direct(world, experiments, Path(tmp))
    print(f"lab side, direct: {args.experiments} experiments in {cpu:.1f} s CPU ({wall:.1f} s wall), "
          f"{cpu / args.experiments * 1000:.0f} ms CPU per experiment; "
          f"{sim_min / 60 / 24:.1f} instrument-days simulated; target >= 50 % in {made} samples")
    if not args.skip_protocol:
        with tempfile.TemporaryDirectory() as tmp:
            cpu, wall, ok = run_protocol(world, experiments, Path(tmp))
        print(f"lab + protocol in one process: {args.experiments} experiments ({ok} completed) in "
              f"{cpu:.1f} s CPU ({wall:.1f} s wall)")


if __name__ == "__main__":
    main()
