"""A driver that reconnects while the controller is busy: the frames left on its old connection
are dropped quietly (no "non-UTF-8 identity" warning a user would read as an error), and the
driver goes on over its new connection. Real ZeroMQ sockets on loopback."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from pathlib import Path

import zmq

from drivers import Dispatcher, Heartbeat, Register, encode

sys.path.insert(0, str(Path(__file__).parent))
from drivers_lab import arun  # noqa: E402


def _register(version: str) -> bytes:
    return encode(Register(identity="drv", capabilities=["heat"], capacity=1, version=version,
                           instance=version))


def test_frames_of_a_replaced_connection_are_dropped_quietly(caplog) -> None:  # noqa: ANN001
    caplog.set_level(logging.DEBUG, logger="drivers.dispatcher")
    ctx = zmq.Context()

    async def main() -> None:
        d = Dispatcher(heartbeat_s=0.05, lost_after=100)
        await d.start()
        old = ctx.socket(zmq.DEALER)
        old.setsockopt(zmq.IDENTITY, b"drv")
        old.connect(d.endpoint)
        new = ctx.socket(zmq.DEALER)
        new.setsockopt(zmq.IDENTITY, b"drv")
        try:
            old.send(_register("first"))
            await d.wait_for({"heat"}, 5)

            def reconnect() -> None:
                # what a driver does when it hears nothing for lost_after heartbeats: its last
                # heartbeats wait unread on the old connection, a new socket takes the identity
                for _ in range(3):
                    old.send(encode(Heartbeat()))
                time.sleep(0.5)  # ZeroMQ's I/O thread moves them into the controller's queue
                old.close(500)
                new.connect(d.endpoint)
                new.send(_register("second"))
                time.sleep(0.2)

            worker = threading.Thread(target=reconnect)
            worker.start()
            worker.join()  # the controller's loop is blocked meanwhile (training, planning)
            end = time.monotonic() + 5
            while time.monotonic() < end:
                info = {i.identity: i for i in d.drivers()}
                if "drv" in info and info["drv"].version == "second":
                    break
                await asyncio.sleep(0.02)
            assert {i.identity: i.version for i in d.drivers()} == {"drv": "second"}
            await asyncio.sleep(0.2)  # the dispatcher has read everything the old connection held
        finally:
            old.close(0)
            new.close(0)
            await d.close()

    arun(main(), timeout=20)
    ctx.term()
    texts = [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if "non-UTF-8" in t], texts
    # Whether the old heartbeats are read before the handover (from "first", accepted) or after
    # it (under libzmq's renamed id, dropped with a debug line) is libzmq's I/O-thread timing —
    # about 1 run in 5 here reads them first. Either way nothing is answered or logged as a fault.
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR], texts
    assert not [t for t in texts if "malformed" in t or "unknown" in t], texts
