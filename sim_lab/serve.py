"""One simulated instrument as its own process: ``python -m sim_lab.serve ROLE --connect EP ...``.

``SimLab.start(processes=True)`` and ``synthloop sim-lab serve`` launch one of these per
instrument; they share the lab's SQLite sample store in ``--workdir``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from drivers import run_until_signal

from .instruments import ROLES, instrument_class
from .lab import FaultConfig
from .world import WorldError, load_world


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim_lab.serve")
    p.add_argument("role", choices=sorted(ROLES))
    p.add_argument("--connect", required=True, help="controller ROUTER endpoint")
    p.add_argument("--identity", required=True, help="identity (with --count > 1: prefix, -1..-N)")
    p.add_argument("--count", type=int, default=1, help="drivers of this role in this process")
    p.add_argument("--world", required=True, help="bundled world name or world file")
    p.add_argument("--workdir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speedup", type=float, default=1e6)
    p.add_argument("--heartbeat", type=float, default=1.0)
    p.add_argument("--lost-after", type=int, default=5)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--timeout-rate", type=float, default=0.0)
    p.add_argument("--drop-rate", type=float, default=0.0)
    p.add_argument("--duplicate-rate", type=float, default=0.0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--crash-after", type=int, default=None)
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        world = load_world(args.world)
    except WorldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    faults = FaultConfig(
        instrument_error_rate=args.error_rate, timeout_rate=args.timeout_rate,
        drop_rate=args.drop_rate, duplicate_rate=args.duplicate_rate, delay_ms=args.delay_ms,
        crash_after_commands=args.crash_after, seed=args.fault_seed,
    )
    workdir = Path(args.workdir)
    cls = instrument_class(args.role, world)
    identities = [args.identity] if args.count == 1 and args.role != "furnace" else [
        f"{args.identity}-{i + 1}" for i in range(args.count)
    ]
    drivers = [
        cls(
            ident, workdir / f"{ident}.ledger.sqlite",
            world=world, workdir=workdir, speedup=args.speedup, seed=args.seed,
            instrument_error_rate=faults.instrument_error_rate, timeout_rate=faults.timeout_rate,
            crash_after_commands=faults.crash_after_commands, allow_crash=True,
            heartbeat_s=args.heartbeat, lost_after=args.lost_after,
            faults=faults.transport(ident),
        )
        for ident in identities
    ]

    run_until_signal(lambda stop: asyncio.gather(*(d.serve(args.connect, stop=stop) for d in drivers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
