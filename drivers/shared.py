"""One DEALER connection carrying every instance of a driver host (docs/protocol.md, "Envelope").

Why: with a socket per instance, each command and each result crosses its own ZeroMQ pipe, and
a burst of 16 commands to 16 instances wakes the I/O threads of both ends once per pipe. One
connection per host process carries the same messages with the instance's identity as an
envelope frame, so a burst to the 8 instances of a host is one pipe's burst (measured on bare
ZeroMQ, 16 streams over 2 processes: -30 % CPU per round trip on the ROUTER side, +50 %
messages/s). Each instance keeps its whole contract: its own identity, registration,
capabilities, capacity, heartbeats and ledger rows; only the socket is shared.

Batching: what the instances send in one event-loop turn (the results of one group commit,
say) leaves as ONE multipart message of (identity, payload) pairs at the next turn — ZeroMQ
flushes a pipe and wakes its I/O thread once per complete message, so one write to the I/O
thread's mailbox serves the whole burst instead of one per result (that write was 78 % of the
host's send cost). The dispatcher batches its sends per shared route the same way.

The connection is never rebuilt: ZeroMQ reconnects it by itself, and an instance that finds
the controller silent re-registers over it (:meth:`Channel.close` then a new
:meth:`SharedConnection.attach`) instead of opening a socket of its own.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import zmq

from .link import Link, connect_dealer
from .security import CurveConfig

log = logging.getLogger("drivers.host")

FrameHandler = Callable[[list[bytes]], None]


class SharedConnection:
    """The host's DEALER socket (routing id ``host:<uuid>``, fresh at every start) and the
    table of attached instances its frames are delivered to by identity."""

    def __init__(self, ctx: zmq.Context, endpoint: str, curve: CurveConfig | None, *,
                 backoff_s: tuple[float, float] = (0.1, 5.0)) -> None:
        self.name = f"host:{uuid.uuid4()}"
        sock = connect_dealer(ctx, self.name, endpoint, curve, backoff_s)
        self._members: dict[bytes, tuple[FrameHandler, Callable[[BaseException], None]]] = {}
        self.link = Link(sock, self._deliver, self._on_error)
        self._loop = asyncio.get_running_loop()
        self._outbox: list[bytes] = []  # identity, payload, identity, payload, ... of this turn

    def attach(self, identity: str, on_frames: FrameHandler,
               on_error: Callable[[BaseException], None]) -> Channel:
        """Deliver frames addressed to ``identity`` to ``on_frames`` (envelope stripped)."""
        key = identity.encode("utf-8")
        self._members[key] = (on_frames, on_error)
        return Channel(self, key)

    def detach(self, key: bytes) -> None:
        self._members.pop(key, None)

    def queue(self, key: bytes, payload: bytes) -> None:
        """Send ``payload`` from the instance ``key`` with the other sends of this turn."""
        if self.link.closed:
            raise zmq.ZMQError(zmq.ENOTSOCK)
        out = self._outbox
        if not out:
            self._loop.call_soon(self.flush)
        out.append(key)
        out.append(payload)

    def flush(self) -> None:
        """Send what this turn queued, as one message (a lost message is recovered by the
        controller's retransmission, as any lost frame)."""
        out = self._outbox
        if not out:
            return
        self._outbox = []
        if self.link.closed:
            return
        try:
            self.link.send(out)
        except zmq.ZMQError as exc:
            log.debug("host connection send failed (%s); %d message(s) lost", exc, len(out) // 2)

    def _deliver(self, frames: list[bytes]) -> None:
        n = len(frames)
        members = self._members
        if n < 2 or n % 2:
            # not (identity, payload) pairs: if it names an instance, that instance answers the
            # malformed frame set as it would on a socket of its own
            member = members.get(frames[0]) if frames else None
            if member is None:
                log.warning("dropping a %d-part message from the controller (expected "
                            "identity, payload pairs)", n)
                return
            try:
                member[0](frames[1:])
            except Exception as exc:  # noqa: BLE001
                member[1](exc)
            return
        for i in range(0, n, 2):
            member = members.get(frames[i])
            if member is None:
                # not addressed to an attached instance (one that is reconnecting): nobody here
                # can answer it; the controller re-sends what it needs
                log.debug("dropping a message for %r: no such instance attached",
                          frames[i][:200])
                continue
            on_frames, on_error = member
            try:
                on_frames([frames[i + 1]])
            except Exception as exc:  # noqa: BLE001 - one instance's bug is not the others'
                on_error(exc)

    def _on_error(self, exc: BaseException) -> None:
        log.error("internal error on the host connection", exc_info=exc)

    def close(self, linger: int = 200) -> None:
        self.flush()  # the instances' last words (goodbyes) leave first
        self._members.clear()
        self.link.close(linger=linger)


class Channel:
    """One instance's view of the shared connection, with the calls a driver makes on its own
    :class:`~drivers.link.Link`: ``send(frames)``, ``close()``, ``closed``."""

    __slots__ = ("_conn", "_key", "_closed")

    def __init__(self, conn: SharedConnection, key: bytes) -> None:
        self._conn = conn
        self._key = key
        self._closed = False

    def send(self, frames: list[bytes]) -> None:
        """Queue one single-frame message for this turn's batch (a driver sends no other)."""
        if self._closed:
            raise zmq.ZMQError(zmq.ENOTSOCK)
        if len(frames) != 1:
            raise ValueError(f"a hosted instance sends one frame per message, got {len(frames)}")
        self._conn.queue(self._key, frames[0])

    def close(self, linger: int = 0) -> None:  # noqa: ARG002 - the socket is the host's
        """Stop receiving this instance's frames (the shared socket stays open)."""
        if not self._closed:
            self._closed = True
            self._conn.detach(self._key)

    @property
    def closed(self) -> bool:
        return self._closed or self._conn.link.closed
