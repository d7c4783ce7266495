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
    p.add_argument("--parent-pid", type=int, default=None,
                   help="drain and exit once this process (the lab that started us) is gone")
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

    async def serve(stop: asyncio.Event) -> None:
        watch = [stop_when_orphaned(args.parent_pid, stop)] if args.parent_pid else []
        await asyncio.gather(*(d.serve(args.connect, stop=stop) for d in drivers), *watch)

    run_until_signal(serve)
    return 0


async def stop_when_orphaned(parent: int, stop: asyncio.Event, interval_s: float = 1.0) -> None:
    """Set ``stop`` once ``parent`` is no longer our parent process.

    Why: a controller that runs its simulated lab itself starts these stations as children; when
    it is SIGKILLed they are re-parented, not stopped, and the restarted controller would start a
    second set under the same identities while the first still answers. A real instrument
    outlives its controller; a simulated one belongs to the process that made it. Draining
    (not ``os._exit``) lets a running command finish into the ledger.
    """
    while not stop.is_set():
        if os.getppid() != parent:
            logging.getLogger("sim_lab.serve").warning("parent process %d is gone: draining and exiting",
                                                       parent)
            stop.set()
            return
        await asyncio.sleep(interval_s)


if __name__ == "__main__":
    sys.exit(main())
