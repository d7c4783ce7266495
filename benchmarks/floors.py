"""What this machine allows at best: bare ZeroMQ round trips and fsync latency, no protocol.

Why: the protocol goal (p99 < 5 ms with 16 drivers on 2 cores) is a wall-clock figure, and on
a virtual machine much of a round trip is not our code but thread wake-ups (every ZeroMQ
message crosses an I/O thread on each side) and, with ``ledger_sync="full"``, the disk's
fsync. These floors are measured in the same run as the protocol figures so that a MISSED can
be read: a protocol p99 close to the floor's p99 leaves little to gain in our code, one far
above it does not.

* ZeroMQ floor: a ROUTER in this process (plain blocking pyzmq, no asyncio) and ``in_flight``
  DEALER sockets spread over ``processes`` echo processes (one poll loop each, pyzmq only),
  one message outstanding per DEALER, frames the size of a command; p50/p99 of the round
  trips. That is the benchmark's shape (16 drivers over 2 hosts) with everything of ours
  removed: no validation, no ledger, no event loop.
* fsync floor: ``os.fdatasync`` after a 4 KiB append in the benchmark's directory, as a WAL
  commit with ``synchronous=FULL`` does; a command under ``ledger_sync="full"`` waits for two
  (its admission and its outcome).

Usage::

    .venv/bin/python benchmarks/floors.py            # both floors, 1 and 16 in flight
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import zmq

FRAME = b"x" * 150  # about the size of an encoded echo command / result


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank; also used by protocol.py)."""
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _echo_main(endpoint: str, identities: list[str]) -> None:
    """Echo every frame back on the socket it came from until ``b"stop"`` arrives."""
    ctx = zmq.Context()
    socks = []
    poller = zmq.Poller()
    for ident in identities:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, ident.encode())
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        s.send(b"hello")
        poller.register(s, zmq.POLLIN)
        socks.append(s)
    try:
        while True:
            for s, _ in poller.poll():
                while True:
                    try:
                        frame = s.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if frame == b"stop":
                        return
                    s.send(frame)
    finally:
        ctx.destroy(linger=0)


def zmq_round_trip(in_flight: int = 16, processes: int = 2, seconds: float = 3.0) -> dict:
    """Closed loop over bare ZeroMQ: ``in_flight`` DEALERs (one message outstanding each)
    spread over ``processes`` echo processes; round-trip p50/p99 and messages/s."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    idents = [f"floor-{i}" for i in range(in_flight)]
    spawn = mp.get_context("spawn")
    procs = [spawn.Process(target=_echo_main, args=(endpoint, idents[h::processes]), daemon=True)
             for h in range(min(processes, in_flight))]
    for p in procs:
        p.start()
    try:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        joined: set[bytes] = set()
        end = time.monotonic() + 60
        while len(joined) < in_flight:
            if time.monotonic() > end or not poller.poll(1000) and not all(p.is_alive()
                                                                            for p in procs):
                raise TimeoutError(f"only {len(joined)} of {in_flight} echo sockets connected")
            while True:
                try:
                    ident, _ = router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                joined.add(ident)
        sent: dict[bytes, float] = {}

        def send(ident: bytes) -> None:
            sent[ident] = time.perf_counter()
            router.send_multipart([ident, FRAME])

        for ident in joined:  # warm-up
            send(ident)
        warm_until = time.perf_counter() + 0.3
        lat: list[float] = []
        t0 = warm_until
        stop_at = warm_until + seconds
        while True:
            ident, _ = router.recv_multipart()
            now = time.perf_counter()
            if now >= warm_until:
                lat.append(now - sent[ident])
            if now >= stop_at:
                break
            send(ident)
        elapsed = time.perf_counter() - t0
        for ident in joined:
            router.send_multipart([ident, b"stop"])
        return {"in_flight": in_flight, "processes": len(procs), "samples": len(lat),
                "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * percentile(lat, 0.99),
                "msg_s": len(lat) / elapsed}
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        ctx.destroy(linger=0)


def fsync_latency(directory: Path, samples: int = 300) -> dict:
    """``fdatasync`` after a 4 KiB append, ``samples`` times, in ``directory``: p50/p99 ms."""
    path = directory / "fsync-floor.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    lat = []
    try:
        block = b"\0" * 4096
        for _ in range(samples):
            os.write(fd, block)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {"samples": samples, "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * percentile(lat, 0.99)}


def describe(zmq16: dict, zmq1: dict | None, disk: dict | None) -> str:
    """One line per floor, for the benchmark's output."""
    lines = [f"floor: bare ZeroMQ round trip, {zmq16['in_flight']} in flight over "
             f"{zmq16['processes']} echo processes: p50 {zmq16['p50_ms']:.2f} ms p99 "
             f"{zmq16['p99_ms']:.2f} ms ({zmq16['msg_s']:.0f} msg/s)"]
    if zmq1 is not None:
        lines.append(f"floor: bare ZeroMQ round trip, 1 in flight: p50 {zmq1['p50_ms']:.2f} ms "
                     f"p99 {zmq1['p99_ms']:.2f} ms")
    if disk is not None:
        lines.append(f"floor: fdatasync of a 4 KiB append (one WAL commit at sync=full): "
                     f"p50 {disk['p50_ms']:.2f} ms p99 {disk['p99_ms']:.2f} ms")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--processes", type=int, default=2)
    args = p.parse_args()
    print(f"# machine: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, load average "
          f"at start {os.getloadavg()[0]:.1f}")
    many = zmq_round_trip(args.in_flight, args.processes, args.seconds)
    one = zmq_round_trip(1, 1, args.seconds)
    with tempfile.TemporaryDirectory(prefix="synthloop-floor-") as tmp:
        disk = fsync_latency(Path(tmp))
    print(describe(many, one, disk))
    return 0


if __name__ == "__main__":
    sys.exit(main())
