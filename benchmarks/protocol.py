"""Protocol benchmark: round-trip latency and throughput on loopback, and a decoder fuzz run.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/protocol.py            # 1, 4, 16 drivers + fuzz
    .venv/bin/python benchmarks/protocol.py --drivers 16 --fuzz 0 --cpu 0 --hosts 2
    .venv/bin/python benchmarks/protocol.py --drivers 16 --seconds 5 --ledger-sync normal
    .venv/bin/python benchmarks/protocol.py --fuzz-only --fuzz 100000

What is measured. The controller (one :class:`drivers.Dispatcher`, this process) and N echo
drivers (separate processes, multiprocessing spawn, each a real :class:`drivers.Driver` with its
durable SQLite ledger) talk over tcp loopback. A command's round trip is ``submit`` → command
frame → ledger insert (committed) → execute → ledger update (committed) → result frame →
``Outcome``. Every configuration runs twice: one process per driver (the baseline) and the same
drivers spread over ``--hosts`` host processes (:class:`drivers.DriverHost`: one event loop,
one ZeroMQ context and one shared ledger file per host), then the ratio of the two and the
goal check (MET/MISSED) of each 16-driver figure are printed.

* closed loop: one command outstanding per driver, p50/p99 of the round trips (with N drivers
  N commands are in flight, so by Little's law p50 ≈ N / commands per second of that phase);
* open loop: ``--rate`` commands/s offered on a fixed schedule, round-robin over the drivers,
  each round trip measured from its *scheduled* send time (a stall delays no later send
  without being counted: no coordinated omission); one pacer task sends every due command with
  ``Dispatcher.submit_nowait`` (no bound on commands outstanding). The goal check also prints
  how late the pacer itself sent (asyncio timers wake in whole milliseconds unless a socket
  wakes the loop first): that lateness is counted in the figures, not subtracted;
* throughput: ``window`` commands outstanding per driver, completed commands per second.

Each phase also reports CPU µs per command of the dispatcher process (which includes the
submitting client) and of all driver processes (``/proc``), which moves much less than wall
figures when other jobs share the cores.

Floors (``benchmarks/floors.py``, first, in the same run; ``--no-floors`` skips them): a bare
ZeroMQ ROUTER/DEALER echo with 16 and 1 in flight and the disk's fdatasync latency — what this
machine gives with none of our code in the path; the goal check prints the protocol's closed
loop against it.

Fuzz: ``--fuzz`` seeded cases (random bytes, bit flips / truncations / splices of valid frames,
random JSON shaped like messages) through :func:`drivers.decode`; any exception other than
ProtocolError is a failure (exit code 1).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import floors  # noqa: E402  (benchmarks/floors.py: this machine's bare ZeroMQ and fsync floors)

from drivers import (  # noqa: E402
    MESSAGE_TYPES,
    Command,
    Dispatcher,
    Driver,
    ProgressFn,
    ProtocolError,
    decode,
    encode,
    example_params,
)


class EchoDriver(Driver):
    """Does no physical work: the benchmark measures the protocol, SDK and ledger."""

    capabilities: ClassVar[tuple[str, ...]] = ("echo",)
    capacity: ClassVar[int] = 64
    version: ClassVar[str] = "echo 1"

    async def execute(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        return {"echo": command.params.get("i")}


def _driver_main(endpoint: str, identity: str, ledger: str, sync: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    EchoDriver(identity, ledger, heartbeat_s=0.5, ledger_sync=sync).run(endpoint)  # type: ignore[arg-type]


def _host_main(endpoint: str, identities: list[str], ledger: str, sync: str) -> None:
    """One host process serving several echo instances over one shared ledger file."""
    os.environ["OMP_NUM_THREADS"] = "1"
    from drivers import DriverHost

    base = Path(ledger).parent
    drivers = [EchoDriver(ident, base / f"{ident}.own.sqlite", heartbeat_s=0.5,
                          ledger_sync=sync)  # type: ignore[arg-type]
               for ident in identities]
    DriverHost(drivers, ledger=ledger).run(endpoint)


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_percentile = floors.percentile


async def _run_config(n: int, seconds: float, window: int, sync: str, workdir: Path,
                      rate: float, hosts: int = 0) -> dict:
    """One configuration: ``n`` drivers, each its own process (``hosts=0``, the baseline) or
    spread round-robin over ``hosts`` host processes (:class:`drivers.DriverHost`, one shared
    ledger per host)."""
    d = Dispatcher("tcp://127.0.0.1:*", heartbeat_s=0.5, lost_after=20)
    await d.start()
    ctx = mp.get_context("spawn")
    run = workdir / f"run-{n}-{hosts}-{uuid.uuid4().hex[:6]}"
    run.mkdir()
    if hosts:
        procs = [
            ctx.Process(target=_host_main,
                        args=(d.endpoint, [f"echo-{i}" for i in range(h, n, hosts)],
                              str(run / f"host-{h}.sqlite"), sync))
            for h in range(min(hosts, n))
        ]
    else:
        procs = [
            ctx.Process(target=_driver_main,
                        args=(d.endpoint, f"echo-{i}", str(run / f"echo-{i}.sqlite"), sync))
            for i in range(n)
        ]
    for p in procs:
        p.start()
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 60
        while sum(x.alive for x in d.drivers()) < n:
            if loop.time() > end:
                raise TimeoutError(f"only {len(d.drivers())} of {n} drivers registered")
            await asyncio.sleep(0.05)
        pids = [p.pid for p in procs if p.pid is not None]
        idents = [f"echo-{i}" for i in range(n)]
        fails: list[str] = []
        counter = 0

        def cmd() -> Command:
            nonlocal counter
            counter += 1
            return Command(capability="echo", params={"i": counter}, deadline_s=30)

        async def worker(stop_at: float, lat: list[float] | None) -> int:
            done = 0
            while loop.time() < stop_at:
                t0 = time.perf_counter()
                out = await d.submit(cmd())
                if lat is not None:
                    lat.append(time.perf_counter() - t0)
                if out.status != "succeeded":
                    fails.append(f"{out.status}: {out.error}")
                done += 1
            return done

        def cpu_now() -> tuple[float, float, float]:
            return (time.perf_counter(), time.process_time(),
                    sum(_proc_cpu_s(pid) for pid in pids))

        def cpu_since(c0: tuple[float, float, float], done: int) -> dict[str, float]:
            # CPU of every process of the benchmark during one phase, per command: this
            # process (dispatcher + the submitting client) and all driver processes
            t1, me1, drv1 = cpu_now()
            done = max(1, done)
            return {"seconds": t1 - c0[0], "dispatcher_cpu_us": 1e6 * (me1 - c0[1]) / done,
                    "drivers_cpu_us": 1e6 * (drv1 - c0[2]) / done}

        # warm-up (JIT-free Python, but sockets, pages and SQLite files warm up)
        await asyncio.gather(*[worker(loop.time() + 0.5, None) for _ in range(n)])

        # 1. closed loop: one command outstanding per driver
        lat: list[float] = []
        c0 = cpu_now()
        counts = await asyncio.gather(*[worker(loop.time() + seconds, lat) for _ in range(n)])
        closed = {"p50_ms": 1000 * statistics.median(lat),
                  "p99_ms": 1000 * _percentile(lat, 0.99), "samples": len(lat),
                  **cpu_since(c0, sum(counts))}
        closed["cmd_s"] = sum(counts) / closed["seconds"]

        # 2. open loop: commands scheduled at a fixed rate, round-robin over the drivers;
        # latency counts from the *scheduled* send time, so a stall of the benchmark or the
        # dispatcher shows up in the figures instead of delaying the next sends
        # (no coordinated omission)
        opened: dict[str, Any] = {}
        if rate > 0:
            total = int(rate * seconds)
            olat: list[float] = []
            # how late the load generator itself sent each command (asyncio sleeps in whole
            # milliseconds when no socket wakes the loop first): part of every open-loop figure
            late: list[float] = []
            start = loop.time() + 0.01
            pstart = time.perf_counter() + (start - loop.time())
            finished = loop.create_future()
            left = [total]

            def record(i: int, fut: asyncio.Future[Any]) -> None:
                out = fut.result()
                olat.append(time.perf_counter() - (pstart + i / rate))
                if out.status != "succeeded":
                    fails.append(f"{out.status}: {out.error}")
                left[0] -= 1
                if not left[0]:
                    finished.set_result(None)

            async def pacer() -> None:
                # one task sends every command whose slot has come (several per wake-up when
                # behind) with Dispatcher.submit_nowait: the load generator costs one timer per
                # wake-up, not a task and a timer per command, so the figures are the system's
                i = 0
                while i < total:
                    now = loop.time()
                    while i < total and start + i / rate <= now:
                        late.append(time.perf_counter() - (pstart + i / rate))
                        fut = d.submit_nowait(cmd(), driver=idents[i % n])
                        fut.add_done_callback(functools.partial(record, i))
                        i += 1
                    if i < total:
                        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
                await finished

            c0 = cpu_now()
            await pacer()
            opened = {"rate": rate, "p50_ms": 1000 * statistics.median(olat),
                      "p99_ms": 1000 * _percentile(olat, 0.99),
                      "max_ms": 1000 * max(olat), "samples": len(olat),
                      "sent_late_p50_ms": 1000 * statistics.median(late),
                      "sent_late_p99_ms": 1000 * _percentile(late, 0.99),
                      **cpu_since(c0, total)}
            opened["cmd_s"] = total / opened["seconds"]

        # 3. throughput: ``window`` commands outstanding per driver
        c0 = cpu_now()
        counts = await asyncio.gather(
            *[worker(loop.time() + seconds, None) for _ in range(n * window)]
        )
        thr = cpu_since(c0, sum(counts))
        return {
            "drivers": n,
            "hosts": hosts,
            "closed": closed,
            "open": opened,
            "dispatcher_cpu_us": thr["dispatcher_cpu_us"],
            "drivers_cpu_us": thr["drivers_cpu_us"],
            "latency_samples": closed["samples"],
            "p50_ms": closed["p50_ms"],
            "p99_ms": closed["p99_ms"],
            "throughput_cmd_s": sum(counts) / thr["seconds"],
            "throughput_commands": sum(counts),
            "failures": len(fails),
            "first_failure": fails[0] if fails else None,
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        await d.close()


async def cpu_per_command(commands: int, sync: str, workdir: Path) -> dict:
    """Dispatcher and one driver in THIS process: CPU seconds per command (both sides)."""
    d = Dispatcher("tcp://127.0.0.1:*", heartbeat_s=0.5)
    await d.start()
    drv = EchoDriver("echo-cpu", workdir / "cpu.sqlite", heartbeat_s=0.5,
                     ledger_sync=sync)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(drv.serve(d.endpoint, stop=stop))
    try:
        await d.wait_for({"echo"}, 30)

        async def worker(n: int) -> None:
            for _ in range(n):
                await d.submit(Command(capability="echo", deadline_s=30))

        await asyncio.gather(*[worker(20) for _ in range(8)])  # warm-up
        per = max(1, commands // 16)
        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*[worker(per) for _ in range(16)])
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        return {"commands": per * 16, "cpu_us_per_command": 1e6 * cpu / (per * 16),
                "wall_cmd_s": per * 16 / wall}
    finally:
        stop.set()
        await task
        await d.close()


# ---- fuzz -----------------------------------------------------------------------------------

def _valid_frames() -> list[bytes]:
    from drivers import (
        Ack,
        Error,
        Goodbye,
        Heartbeat,
        Progress,
        Register,
        Result,
        StatusQuery,
        StatusReply,
    )

    cid = str(uuid.uuid4())
    msgs = [
        Register(identity="f", capabilities=["heat"], capacity=2, version="1"),
        Heartbeat(running=[cid]),
        Command(command_id=cid, capability="heat", params=example_params("heat"), deadline_s=9),
        Command(command_id=cid, capability="xrd", params=example_params("xrd"), deadline_s=9),
        Ack(command_id=cid),
        Progress(command_id=cid, fraction=0.3, message="m"),
        Result(command_id=cid, status="succeeded", result={"x": [1.0, 2.0]}),
        StatusQuery(command_ids=[cid]),
        StatusReply(query_id="q", statuses={cid: "running"}),
        Error(code="busy", detail="d", command_id=cid),
        Goodbye(reason="r"),
    ]
    return [encode(m) for m in msgs]


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.4:
        return rng.choice([None, True, False, rng.randint(-10**12, 10**12), rng.uniform(-1e9, 1e9),
                           "", "heat", str(uuid.UUID(int=rng.getrandbits(128))), "x" * rng.randint(0, 50)])
    if r < 0.7:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    fields = ["v", "type", "command_id", "capability", "params", "deadline_s", "status", "result",
              "capabilities", "capacity", "identity", "statuses", "fraction", "code", "detail"]
    obj = {rng.choice(fields): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))}
    if rng.random() < 0.7:
        obj["v"] = rng.choice([1, 1, 1, 2, 0])
        obj["type"] = rng.choice([*MESSAGE_TYPES, "nope"])
    return obj


def fuzz(cases: int, seed: int) -> dict:
    rng = random.Random(seed)
    valid = _valid_frames()
    accepted = rejected = 0
    failures: list[str] = []
    t0 = time.perf_counter()
    for i in range(cases):
        kind = i % 4
        if kind == 0:
            frame = rng.randbytes(rng.randint(0, 200))
        elif kind == 1:
            frame = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 4)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
            frame = bytes(frame)
        elif kind == 2:
            a, b = rng.choice(valid), rng.choice(valid)
            frame = a[: rng.randint(0, len(a))] + b[rng.randint(0, len(b)):]
        else:
            try:
                frame = json.dumps(_random_json(rng)).encode()
            except ValueError:
                frame = b"{}"
        try:
            decode(frame)
            accepted += 1
        except ProtocolError:
            rejected += 1
        except Exception as exc:  # noqa: BLE001 - this is what the benchmark hunts for
            failures.append(f"{type(exc).__name__}: {exc} for {frame[:80]!r}")
    elapsed = time.perf_counter() - t0
    return {"cases": cases, "accepted": accepted, "rejected": rejected,
            "escaped_exceptions": len(failures), "seconds": elapsed,
            "cases_per_s": cases / elapsed, "first_failure": failures[0] if failures else None}


def _mode(res: dict) -> str:
    return f"{res['hosts']}h" if res["hosts"] else "procs"


def _row(res: dict) -> str:
    """One table line of a configuration."""
    c, o = res["closed"], res["open"]
    line = (f"{res['drivers']:7d} {_mode(res):5s}  {c['p50_ms']:12.2f} {c['p99_ms']:6.2f} "
            f"{c['cmd_s']:5.0f} {c['dispatcher_cpu_us']:.0f}+{c['drivers_cpu_us']:.0f}".ljust(52))
    if o:
        line += (f"{o['rate']:5.0f} {o['p50_ms']:6.2f} {o['p99_ms']:6.2f} {o['max_ms']:6.2f} "
                 f"{o['dispatcher_cpu_us']:.0f}+{o['drivers_cpu_us']:.0f}").ljust(46)
    else:
        line += "-".ljust(46)
    return line + (f"{res['throughput_cmd_s']:5.0f} {res['throughput_commands']} "
                   f"{res['dispatcher_cpu_us']:.0f}+{res['drivers_cpu_us']:.0f}  "
                   f"{res['failures']:6d}   load {res['load_avg_1min']:.1f}")


def _ratio(base: dict, hosted: dict) -> str:
    """Hosted against one-process-per-driver, same driver count and run."""
    def cpu(r: dict, phase: dict | None = None) -> float:
        ph = phase if phase is not None else r
        return ph["dispatcher_cpu_us"] + ph["drivers_cpu_us"]

    bc, hc = base["closed"], hosted["closed"]
    return (f"ratio {base['drivers']} drivers, {_mode(hosted)} / procs: throughput "
            f"x{hosted['throughput_cmd_s'] / base['throughput_cmd_s']:.2f}, closed-loop cmd/s "
            f"x{hc['cmd_s'] / bc['cmd_s']:.2f}, closed p99 {bc['p99_ms']:.2f} -> "
            f"{hc['p99_ms']:.2f} ms, CPU/command closed {cpu(base, bc):.0f} -> "
            f"{cpu(hosted, hc):.0f} us (x{cpu(hosted, hc) / cpu(base, bc):.2f}), throughput "
            f"{cpu(base):.0f} -> {cpu(hosted):.0f} us (x{cpu(hosted) / cpu(base):.2f})")


def _goal(res: dict, sync: str, floor: dict | None = None) -> str:
    """MET/MISSED of issue 3's goal for one 16-driver configuration (``floor``: the bare
    ZeroMQ round trip with 16 in flight on this machine, for scale)."""
    c, o, thr = res["closed"], res["open"], res["throughput_cmd_s"]

    def verdict(good: bool) -> str:
        return "MET" if good else "MISSED"

    lines = [f"goal (16 drivers, 2 cores: p99 < 5 ms and >= 5000 cmd/s), ledger sync={sync}, "
             f"mode {_mode(res)}:",
             f"  throughput {thr:.0f} cmd/s: {verdict(thr >= 5000)}",
             f"  closed-loop p99 {c['p99_ms']:.2f} ms (16 in flight, {c['cmd_s']:.0f} cmd/s): "
             f"{verdict(c['p99_ms'] < 5 and c['cmd_s'] >= 5000)}"
             + (f" (bare ZeroMQ floor p99 {floor['p99_ms']:.2f} ms, p50 {floor['p50_ms']:.2f}"
                f" ms: protocol p50 x{c['p50_ms'] / floor['p50_ms']:.1f})" if floor else "")]
    if o:
        good = o["p99_ms"] < 5 and o["rate"] >= 5000 and o["cmd_s"] >= 0.98 * o["rate"]
        lines.append(f"  open-loop p99 {o['p99_ms']:.2f} ms at {o['rate']:.0f} cmd/s offered "
                     f"({o['cmd_s']:.0f} cmd/s served): {verdict(good)} (the load generator "
                     f"sent p50 {o['sent_late_p50_ms']:.2f} / p99 {o['sent_late_p99_ms']:.2f} ms "
                     "after the scheduled time; counted in the figure)")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--drivers", type=int, nargs="*", default=[1, 4, 16])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--window", type=int, default=8, help="outstanding commands per driver")
    p.add_argument("--rate", type=float, default=5000.0,
                   help="offered load of the open-loop phase, commands/s over all drivers "
                   "(0: skip the phase)")
    p.add_argument("--ledger-sync", choices=["full", "normal"], default="full")
    p.add_argument("--fuzz", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fuzz-only", action="store_true")
    p.add_argument("--cpu", type=int, default=8000,
                   help="commands for the in-process CPU-per-command measurement (0: skip)")
    p.add_argument("--hosts", type=int, default=2,
                   help="also measure the drivers spread over this many host processes "
                   "(drivers.DriverHost, one shared ledger each); 0: only one process per driver")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the one-process-per-driver baseline")
    p.add_argument("--no-floors", action="store_true",
                   help="skip measuring this machine's bare ZeroMQ and fsync floors")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = p.parse_args()
    print(f"# machine: {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, ledger sync={args.ledger_sync}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average at start "
          f"{os.getloadavg()[0]:.1f} (other processes share the cores)")
    ok = True
    floor16: dict | None = None
    if args.drivers and not args.fuzz_only and not args.no_floors:
        # same process, same run: what the machine gives with none of our code in the path
        floor16 = floors.zmq_round_trip(16, max(1, args.hosts), min(args.seconds, 3.0))
        floor1 = floors.zmq_round_trip(1, 1, min(args.seconds, 3.0))
        with tempfile.TemporaryDirectory(prefix="synthloop-bench-") as tmp:
            disk = floors.fsync_latency(Path(tmp))
        print(json.dumps({"floors": {"zmq16": floor16, "zmq1": floor1, "fsync": disk}})
              if args.json else floors.describe(floor16, floor1, disk))
    if args.drivers and not args.fuzz_only:
        modes = ([] if args.no_baseline else [0]) + ([args.hosts] if args.hosts > 0 else [])
        print("closed loop (1 outstanding per driver) | open loop (fixed offered rate, "
              "from scheduled time) | throughput (window outstanding per driver); "
              "cpu = us per command, dispatcher process + driver processes; "
              "mode: procs = one process per driver, Nh = drivers spread over N host processes")
        print("drivers mode   closed: p50_ms p99_ms cmd/s cpu      open: rate p50_ms p99_ms "
              "max_ms cpu      thr: cmd/s n cpu        failures")
        results = []
        with tempfile.TemporaryDirectory(prefix="synthloop-bench-") as tmp:
            for n in args.drivers:
                for hosts in modes:
                    res = asyncio.run(_run_config(n, args.seconds, args.window,
                                                  args.ledger_sync, Path(tmp), args.rate, hosts))
                    res["load_avg_1min"] = os.getloadavg()[0]
                    results.append(res)
                    ok &= res["failures"] == 0
                    if args.json:
                        print(json.dumps(res))
                        continue
                    print(_row(res))
        for n in sorted({r["drivers"] for r in results}):
            base = next((r for r in results if r["drivers"] == n and r["hosts"] == 0), None)
            hosted = next((r for r in results if r["drivers"] == n and r["hosts"] > 0), None)
            if base is not None and hosted is not None:
                print(_ratio(base, hosted))
        for res in results:
            if res["drivers"] == 16:
                print(_goal(res, args.ledger_sync, floor16))
    if args.cpu and not args.fuzz_only:
        with tempfile.TemporaryDirectory(prefix="synthloop-bench-") as tmp:
            res = asyncio.run(cpu_per_command(args.cpu, args.ledger_sync, Path(tmp)))
        print(json.dumps(res) if args.json else
              f"cpu: {res['cpu_us_per_command']:.0f} us of CPU per command (dispatcher + driver "
              f"in one process, {res['commands']} commands, {res['wall_cmd_s']:.0f} cmd/s wall)")
    if args.fuzz:
        res = fuzz(args.fuzz, args.seed)
        ok &= res["escaped_exceptions"] == 0
        print(json.dumps(res) if args.json else
              f"fuzz: {res['cases']} cases (seed {args.seed}) in {res['seconds']:.1f} s "
              f"({res['cases_per_s']:.0f}/s): {res['accepted']} accepted, {res['rejected']} "
              f"rejected with ProtocolError, {res['escaped_exceptions']} other exceptions")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
