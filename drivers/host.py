"""Several driver instances in ONE process and one event loop: what a lab PC controlling
several instruments runs (``python -m drivers serve A:Cls B:Cls`` or ``--instances N``).

Why: one process per instrument means one Python interpreter, one ZeroMQ I/O thread and one
ledger fsync stream per instrument. On a small PC (2 cores, 16 instruments) those processes
spend more CPU on wake-ups and context switches than on the protocol, and every command costs
two fsyncs of its own. A host keeps each instance's whole contract — its own identity,
registration, capabilities, capacity, heartbeats, reconnection and at-most-once ledger rules —
but shares what can be shared: one ZeroMQ context (one I/O thread), one DEALER connection to
the controller (:mod:`drivers.shared`: the instance's identity travels as an envelope frame;
``share_connection=False`` gives every instance a socket of its own) and one ledger file
(:class:`~drivers.host_ledger.HostLedger`, rows keyed by identity) whose group commit
(:mod:`drivers.commit`) carries the admissions and outcomes of all instances that were
ready in the same loop turn: one fsync per burst across instances. The rule stays: a command id
is committed as ``running`` before ``execute``, and its Result leaves only after its outcome is
committed.

Isolation: a malformed frame, an exception in ``execute`` or a failing ``on_start`` of one
instance is that instance's problem (logged; the others keep serving). What instances do share
is the process: a SIGKILL or a blocking ``execute`` stops them all — on restart each identity
finds its own rows and answers re-sent ids from them, as a lone driver would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import zmq

from .commit import GroupCommit, TaggedCommits
from .host_ledger import HostLedger
from .ledger import Ledger
from .sdk import Driver, run_until_signal
from .security import CurveConfig
from .shared import SharedConnection

log = logging.getLogger("drivers.host")


class DriverHost:
    """Serve ``drivers`` (distinct identities) from this process.

    ``ledger``: path of the shared host ledger (one group commit for all instances); None gives
    every instance its own ledger file at its ``ledger_path`` as when served alone.
    ``sync``: the shared ledger's durability; default the strictest any instance asks for
    (``full`` if one does), so hosting never weakens an instance's durability.
    ``share_connection``: all instances over one DEALER connection (default), or one socket
    each (what a controller older than the "Envelope" section of docs/protocol.md needs).
    """

    def __init__(self, drivers: Sequence[Driver], *, ledger: str | Path | None = None,
                 sync: Literal["full", "normal"] | None = None,
                 share_connection: bool = True) -> None:
        if not drivers:
            raise ValueError("a driver host needs at least one driver instance")
        seen: set[str] = set()
        for drv in drivers:
            if not isinstance(drv, Driver):
                raise TypeError(f"expected drivers.Driver instances, got {type(drv).__name__}")
            if drv.identity in seen:
                raise ValueError(f"two instances with identity {drv.identity!r}: each needs "
                                 "its own (the controller routes by identity)")
            seen.add(drv.identity)
        self.drivers = list(drivers)
        self.ledger_path = Path(ledger) if ledger is not None else None
        self.sync: Literal["full", "normal"] = sync or (
            "full" if any(d.ledger_sync == "full" for d in self.drivers) else "normal")
        self.share_connection = share_connection
        self.failures: dict[str, BaseException] = {}  # identity -> why its serve() ended early
        self.commits: GroupCommit | None = None  # the shared group commit while serving

    def run(self, endpoint: str, *, curve: CurveConfig | None = None) -> int:
        """Blocking: serve until SIGINT/SIGTERM (graceful for every instance); exit code 1 if
        an instance stopped with an error, else 0."""
        run_until_signal(lambda stop: self.serve(endpoint, stop=stop, curve=curve))
        return 1 if self.failures else 0

    async def serve(self, endpoint: str, *, stop: asyncio.Event | None = None,
                    curve: CurveConfig | None = None) -> None:
        """Connect every instance to the controller at ``endpoint``; return when ``stop`` is
        set (each instance drains and says goodbye) or every instance has ended."""
        stop = stop or asyncio.Event()
        ctx = zmq.Context(io_threads=1)
        shared: HostLedger | None = None
        own: list[Ledger] = []
        conn: SharedConnection | None = None
        try:
            plans = []
            if self.ledger_path is not None:
                shared = HostLedger(self.ledger_path, sync=self.sync)
                self.commits = GroupCommit(shared.apply, commit_at_burst_end=False)
                for drv in self.drivers:
                    copied = shared.adopt(drv.identity, drv.ledger_path)
                    if copied:
                        log.info("%s: adopted %d command(s) from its old ledger %s",
                                 drv.identity, copied, drv.ledger_path)
                    plans.append((drv, shared.view(drv.identity),
                                  TaggedCommits(self.commits, drv.identity)))
            else:
                for drv in self.drivers:
                    led = Ledger(drv.ledger_path, sync=drv.ledger_sync)
                    own.append(led)
                    plans.append((drv, led, GroupCommit(led.apply)))
            if self.share_connection:
                conn = SharedConnection(ctx, endpoint, curve, backoff_s=self.drivers[0].backoff_s)
            tasks = {
                asyncio.get_running_loop().create_task(
                    drv._serve_with(endpoint, stop, curve, ctx, led, commits, conn),
                    name=f"driver {drv.identity}"): drv
                for drv, led, commits in plans
            }
            stopped = asyncio.ensure_future(stop.wait())
            running = set(tasks)
            try:
                while running and not stop.is_set():
                    done, running = await asyncio.wait(
                        running | {stopped}, return_when=asyncio.FIRST_COMPLETED)
                    running.discard(stopped)
                    for task in done - {stopped}:
                        self._ended(tasks[task], task)
                if running:
                    finished, _ = await asyncio.wait(running)
                    for task in finished:
                        self._ended(tasks[task], task)
            finally:
                stopped.cancel()
                for task in running:  # only if this coroutine itself was cancelled
                    task.cancel()
        finally:
            if self.commits is not None:
                self.commits.flush_now()
            if conn is not None:
                conn.close(linger=200)  # the instances' goodbyes leave before the context ends
            ctx.destroy(linger=0)
            if shared is not None:
                shared.close()
            for led in own:
                led.close()

    def _ended(self, drv: Driver, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failures[drv.identity] = exc
            log.error("driver instance %s stopped with an error; the other instances keep "
                      "serving", drv.identity, exc_info=exc)


async def serve_many(drivers: Sequence[Driver], endpoint: str, *,
                     ledger: str | Path | None = None, stop: asyncio.Event | None = None,
                     curve: CurveConfig | None = None,
                     sync: Literal["full", "normal"] | None = None,
                     share_connection: bool = True) -> DriverHost:
    """Serve several driver instances from this process until ``stop`` is set (see
    :class:`DriverHost`); returns the host (``failures`` names instances that ended early)."""
    host = DriverHost(drivers, ledger=ledger, sync=sync, share_connection=share_connection)
    await host.serve(endpoint, stop=stop, curve=curve)
    return host
