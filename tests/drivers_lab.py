"""Test helpers shared by the driver tests: run a coroutine under a timeout, and a dispatcher
with in-process drivers serving it (real ZeroMQ sockets on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from drivers import Dispatcher, Driver, DriverHost

HB = 0.05


def arun(coro: Any, timeout: float = 30.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


@contextlib.asynccontextmanager
async def lab(drivers: list[Driver], **dispatcher_kw: Any) -> AsyncIterator[Dispatcher]:
    """A started Dispatcher with every driver registered; drivers stopped and it closed after."""
    kw = {"heartbeat_s": HB, "lost_after": 10, **dispatcher_kw}
    d = Dispatcher(**kw)
    await d.start()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(drv.serve(d.endpoint, stop=stop)) for drv in drivers]
    body_failed = False
    try:
        caps = {c for drv in drivers for c in drv.capabilities}
        await d.wait_for(caps, 10)
        yield d
    except BaseException:
        body_failed = True
        raise
    finally:
        stop.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
        await d.close()
        # a driver whose serve() crashed must fail the test, not vanish into the gather (but
        # never mask the test's own failure)
        crashed = [r for r in results if isinstance(r, BaseException)]
        if crashed and not body_failed:
            raise AssertionError(f"a driver's serve() raised: {crashed[0]!r}") from crashed[0]


@contextlib.asynccontextmanager
async def hosted_lab(drivers: list[Driver], ledger: Any, *, share_connection: bool = True,
                     **dispatcher_kw: Any) -> AsyncIterator[tuple[Dispatcher, DriverHost]]:
    """Like :func:`lab`, but every driver is an instance of one :class:`DriverHost` (one event
    loop, one ZeroMQ context, one shared ledger file at ``ledger``, one connection unless
    ``share_connection`` is False)."""
    kw = {"heartbeat_s": HB, "lost_after": 10, **dispatcher_kw}
    d = Dispatcher(**kw)
    await d.start()
    stop = asyncio.Event()
    host = DriverHost(drivers, ledger=ledger, share_connection=share_connection)
    task = asyncio.create_task(host.serve(d.endpoint, stop=stop))
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        want = {drv.identity for drv in drivers if drv.identity not in host.failures}
        while not want <= {i.identity for i in d.drivers() if i.alive}:
            if loop.time() > end or task.done():
                raise TimeoutError(f"hosted instances not all registered: {d.drivers()}")
            await asyncio.sleep(0.01)
            want = {drv.identity for drv in drivers if drv.identity not in host.failures}
        yield d, host
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await d.close()
