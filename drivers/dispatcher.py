"""Controller side: an asyncio dispatcher on one ROUTER socket.

It keeps a registry of connected drivers (capabilities, capacity, load, liveness), routes each
submitted :class:`~drivers.protocol.Command` to a live driver with the capability and free
capacity, and resolves an awaitable :class:`Outcome` when the terminal result arrives, the
deadline passes, or the driver is declared lost.

Reliability without duplicate execution: a command once sent to a driver is *pinned* to it
(only that driver's ledger knows it). Until the result arrives the dispatcher re-sends the same
command whenever it has heard nothing about it for ``retry_s``; the driver answers a re-sent id
from its ledger (ack "running" or the stored result), never by executing again. This turns
dropped, duplicated or delayed frames into, at worst, extra idempotent messages.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import zmq
import zmq.asyncio
from pydantic import BaseModel

from .faults import FaultConfig, FaultInjector
from .link import Link
from .protocol import (
    Ack,
    Command,
    Error,
    Goodbye,
    Heartbeat,
    Progress,
    ProtocolError,
    Register,
    Result,
    StatusQuery,
    StatusReply,
    decode,
    encode,
)
from .security import CurveConfig

log = logging.getLogger("drivers.dispatcher")

OutcomeStatus = Literal["succeeded", "failed", "lost", "expired"]


def _replaced_connection(ident: bytes) -> bool:
    """True for the routing id libzmq gives a ROUTER connection it replaced (5 bytes: a zero,
    then a 32-bit counter). Why it matters: with ``ROUTER_HANDOVER`` a driver's new socket takes
    its identity over and the old connection is renamed to such an id before it closes; frames
    still queued on it (heartbeats, a register) arrive under it — stale copies, not a stranger.
    A driver's identity is a readable name (``sim-furnace-1``), never a zero byte and four more."""
    return len(ident) == 5 and ident[0] == 0


@dataclass(frozen=True)
class Outcome:
    """Terminal answer to one submitted command.

    ``lost``: the driver went silent (or said goodbye) while the command was in flight — it may
    or may not have run; reconcile with :meth:`Dispatcher.query_status` once the driver is back.
    ``expired``: no terminal answer within the deadline (or the driver cancelled it at the
    deadline).
    """

    command_id: str
    status: OutcomeStatus
    result: dict[str, Any] | None = None
    error: str | None = None
    driver: str | None = None


@dataclass(frozen=True)
class DriverInfo:
    """A registered driver as the dispatcher sees it."""

    identity: str
    capabilities: tuple[str, ...]
    capacity: int
    in_flight: int
    alive: bool
    version: str = ""
    via: str | None = None  # the host connection it shares with other instances, if any


@dataclass
class _Driver:
    identity: str
    capabilities: tuple[str, ...]
    capacity: int
    version: str
    instance: str
    last_seen: float
    alive: bool = True
    in_flight: set[str] = field(default_factory=set)
    busy_until: float = 0.0
    heartbeats: int = 0
    route: bytes | None = None  # routing id of the host connection it shares; None: its own

    def envelope(self) -> list[bytes]:
        """The frames that address it: its own socket's routing id, or the shared
        connection's routing id followed by its identity (docs/protocol.md, "Envelope")."""
        ident = self.identity.encode("utf-8")
        return [ident] if self.route is None else [self.route, ident]

    def free(self) -> int:
        return self.capacity - len(self.in_flight)


@dataclass
class _Pending:
    command: Command
    future: asyncio.Future[Outcome]
    submitted: float
    deadline_at: float
    driver: str | None = None
    last_contact: float = 0.0
    acked: bool = False
    sends: int = 0
    expiry: asyncio.TimerHandle | None = None
    on_progress: Callable[[str, float, str], None] | None = None
    joiners: list[asyncio.Future[Outcome]] | None = None  # re-submits of a pending id


class Dispatcher:
    """ROUTER-side registry and router of commands; see the module docstring.

    ``heartbeat_s``: interval of heartbeats sent and expected; ``lost_after``: silent intervals
    before a driver is declared lost; ``retry_s``: re-send an unanswered command after this long
    (default 2 heartbeats); ``grace_s``: slack added to a command's deadline before the outcome
    is ``expired`` (default 2 heartbeats). ``on_lost(identity, command_ids)`` is called when a
    driver is declared lost.
    """

    def __init__(
        self,
        bind: str = "tcp://127.0.0.1:*",
        *,
        heartbeat_s: float = 1.0,
        lost_after: int = 5,
        curve: CurveConfig | None = None,
        faults: FaultConfig | None = None,
        retry_s: float | None = None,
        grace_s: float | None = None,
        on_lost: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        if heartbeat_s <= 0 or lost_after < 1:
            raise ValueError("heartbeat_s must be > 0 and lost_after >= 1")
        self.bind = bind
        self.heartbeat_s = heartbeat_s
        self.lost_after = lost_after
        self.curve = curve
        self.faults = faults
        self.retry_s = retry_s if retry_s is not None else 2 * heartbeat_s
        self.grace_s = grace_s if grace_s is not None else 2 * heartbeat_s
        self.on_lost = on_lost
        self.endpoint: str = ""
        self.max_remembered = 200_000  # command id -> driver pins kept for re-submits
        self.injector: FaultInjector | None = None
        # recent Error messages received and lost-driver reports (bounded: a flood of garbage
        # must not grow memory)
        self.errors: collections.deque[tuple[str, Error]] = collections.deque(maxlen=10_000)
        self.lost_reports: collections.deque[tuple[str, list[str]]] = collections.deque(
            maxlen=10_000)
        self.retransmits = 0
        self._ctx: zmq.asyncio.Context | None = None
        self._auth: Any = None
        self._sock: zmq.Socket | None = None
        self._link: Link | None = None
        self._drivers: dict[str, _Driver] = {}
        self._shared_routes: set[bytes] = set()  # routing ids of connections carrying several
        # sends to shared connections in this loop turn: route -> [route, id, payload, id, ...]
        self._outbox: dict[bytes, list[bytes]] = {}
        self._pending: dict[str, _Pending] = {}
        self._queue: list[str] = []
        self._owner: dict[str, str] = {}
        self._queries: dict[str, tuple[asyncio.Future[None], set[str], dict[str, dict[str, str]]]]
        self._queries = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the ROUTER socket (``self.endpoint`` becomes the resolved address) and start
        the receive and housekeeping loops."""
        # an asyncio context (the CURVE authenticator runs on it) but a plain socket: see
        # drivers.link for why the hot path does not go through zmq.asyncio
        self._ctx = zmq.asyncio.Context()
        sock = zmq.Socket(self._ctx, zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted driver takes over its identity
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        if self.curve is not None:
            from zmq.auth.asyncio import AsyncioAuthenticator

            if self.curve.allowed_dir is None:
                raise ValueError("the controller's CurveConfig needs allowed_dir")
            self._auth = AsyncioAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(self.curve.allowed_dir))
            self.curve.apply_server(sock)
        try:
            sock.bind(self.bind)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise OSError(f"dispatcher cannot bind {self.bind}: {exc}") from exc
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        # a ROUTER never blocks (unroutable or over-HWM frames are dropped): sends are direct
        self._loop = asyncio.get_running_loop()
        self._link = Link(sock, self._handle, self._on_handler_error)
        self.injector = FaultInjector(self.faults, self._put) if self.faults else None
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._tick_loop())]
        log.info("dispatcher bound at %s", self.endpoint)

    async def close(self) -> None:
        """Stop the loops and close the socket; unresolved submits resolve as ``lost``."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for cid, pend in list(self._pending.items()):
            self._resolve(cid, "lost", error="dispatcher closed before the command finished",
                          driver=pend.driver)
        if self._auth is not None:
            self._auth.stop()
        if self._link is not None:
            self._link.close(linger=0)
        elif self._sock is not None:
            self._sock.close(linger=0)
        if self._ctx is not None:
            self._ctx.destroy(linger=0)

    async def __aenter__(self) -> Dispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- public API ---------------------------------------------------------------------
    def drivers(self) -> list[DriverInfo]:
        """Snapshot of the registry."""
        return [
            DriverInfo(d.identity, d.capabilities, d.capacity, len(d.in_flight), d.alive,
                       d.version, d.route.decode("utf-8", "replace") if d.route else None)
            for d in self._drivers.values()
        ]

    async def wait_for(self, capabilities: set[str] | list[str], timeout: float) -> None:
        """Wait until live drivers cover every capability; TimeoutError names the missing ones."""
        want = set(capabilities)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            have = {c for d in self._drivers.values() if d.alive for c in d.capabilities}
            missing = want - have
            if not missing:
                return
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError(
                    f"no live driver for capabilities {sorted(missing)} after {timeout:g} s "
                    f"(connected: {sorted(d.identity for d in self._drivers.values() if d.alive)})"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.1))

    async def submit(
        self,
        command: Command,
        *,
        driver: str | None = None,
        on_progress: Callable[[str, float, str], None] | None = None,
    ) -> Outcome:
        """Send ``command`` to a suitable driver and wait for its :class:`Outcome`.

        Re-submitting an id that is still pending joins the same outcome. ``driver`` pins the
        command to one identity (used after reconciliation, when that driver's ledger holds
        the id; ids seen in :meth:`query_status` replies are pinned automatically).
        """
        # awaited directly (no shield: one callback hop fewer per command). If this caller is
        # cancelled, the future is cancelled with it but the command stays pending: it is
        # still routed, retried and resolved for joiners and for re-submits of the id.
        return await self.submit_nowait(command, driver=driver, on_progress=on_progress)

    def submit_nowait(
        self,
        command: Command,
        *,
        driver: str | None = None,
        on_progress: Callable[[str, float, str], None] | None = None,
    ) -> asyncio.Future[Outcome]:
        """:meth:`submit` without a coroutine: route ``command`` now and return the future of
        its :class:`Outcome` — for a caller fanning out many commands (a scheduler, a load
        generator) that would otherwise need a task per command. Cancelling the future does
        not withdraw the command (as with a cancelled :meth:`submit`)."""
        if self._sock is None or self._closed:
            raise RuntimeError("dispatcher not started (call await start()) or closed")
        if not isinstance(command, Command):
            raise TypeError(f"submit expects a Command, got {type(command).__name__}")
        cid = command.command_id
        existing = self._pending.get(cid)
        if existing is not None:
            # each joiner waits on its own future: cancelling one waiter cancels nobody else
            joined: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            if existing.joiners is None:
                existing.joiners = []
            existing.joiners.append(joined)
            return joined
        loop = asyncio.get_running_loop()
        now = loop.time()
        pend = _Pending(
            command=command,
            future=loop.create_future(),
            submitted=now,
            deadline_at=now + command.deadline_s + self.grace_s,
            on_progress=on_progress,
        )
        if driver is not None:
            self._remember_owner(cid, driver)
        pend.expiry = loop.call_at(pend.deadline_at, self._expire, cid)
        self._pending[cid] = pend
        if self._queue:
            self._queue.append(cid)  # others wait already: first come, first routed
            self._assign()
        else:
            # the usual case: nothing queued, route this one without rebuilding the queue
            drv = self._pick(pend, now)
            if drv is None:
                self._queue.append(cid)
            else:
                self._route(pend, drv, now)
        return pend.future

    async def query_status(
        self, command_ids: list[str], *, timeout: float | None = None
    ) -> dict[str, str]:
        """Ask every live driver about ``command_ids`` (reconciliation after a restart).

        Per id: "unknown" | "running" | "succeeded" | "failed" (a driver-side "expired" is
        reported as "failed"). The driver holding an id is remembered so re-submitting the same
        command fetches the stored result from that driver's ledger.
        """
        ids = list(dict.fromkeys(command_ids))
        targets = {d.identity for d in self._drivers.values() if d.alive}
        replies: dict[str, dict[str, str]] = {}
        if ids and targets:
            loop = asyncio.get_running_loop()
            qid = str(uuid.uuid4())
            done: asyncio.Future[None] = loop.create_future()
            self._queries[qid] = (done, set(targets), replies)
            query = StatusQuery(query_id=qid, command_ids=ids)
            wait = timeout if timeout is not None else max(1.0, 3 * self.heartbeat_s)
            try:
                for ident in targets:
                    self._send(ident, query)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(done), wait)
            finally:
                self._queries.pop(qid, None)
        rank = {"unknown": 0, "running": 1, "failed": 2, "expired": 2, "succeeded": 3}
        out: dict[str, str] = {}
        for cid in ids:
            best, owner = "unknown", None
            for ident, statuses in replies.items():
                state = statuses.get(cid, "unknown")
                if rank.get(state, 0) > rank[best]:
                    best, owner = state, ident
            if owner is not None:
                self._remember_owner(cid, owner)
            out[cid] = "failed" if best == "expired" else best
        return out

    async def send_raw(self, identity: str, frames: list[bytes]) -> None:
        """Send arbitrary frames to a driver (conformance and fuzz tests of the driver side)."""
        assert self._link is not None
        self._link.send([*self._envelope_of(identity), *frames])

    # ---- internals ----------------------------------------------------------------------
    def _send(self, identity: str, msg: BaseModel) -> None:
        """Send ``msg`` to the driver ``identity`` (over its own or its host's connection)."""
        self._send_frames([*self._envelope_of(identity), encode(msg)])

    def _envelope_of(self, identity: str) -> list[bytes]:
        """The frames addressing ``identity``: its registered envelope, else its own socket."""
        drv = self._drivers.get(identity)
        return drv.envelope() if drv is not None else [identity.encode("utf-8")]

    def _reply(self, head: list[bytes], msg: BaseModel) -> None:
        """Answer the sender of a frame whose envelope was ``head`` (it may be unregistered)."""
        self._send_frames([*head, encode(msg)])

    def _send_frames(self, frames: list[bytes]) -> None:
        link = self._link
        if link is None or link.closed:
            return
        try:
            if self.injector is not None:
                self.injector.send_nowait(frames)
            else:
                self._put(frames)
        except zmq.ZMQError as exc:
            log.debug("send to %r failed: %s", frames[:-1], exc)

    def _put(self, frames: list[bytes]) -> None:
        """Send one message (after fault injection, if any). To a shared connection it joins
        the other messages of this loop turn for that connection: one multipart message of
        (identity, payload) pairs at the next turn, so ZeroMQ wakes its I/O thread once per
        burst instead of once per command (docs/protocol.md, "Envelope")."""
        if len(frames) == 3 and frames[0] in self._shared_routes:
            route = frames[0]
            batch = self._outbox.get(route)
            if batch is None:
                if not self._outbox:
                    self._loop.call_soon(self._flush_outbox)
                self._outbox[route] = frames
            else:
                batch.append(frames[1])
                batch.append(frames[2])
            return
        link = self._link
        if link is not None and not link.closed:
            link.send(frames)

    def _flush_outbox(self) -> None:
        out, self._outbox = self._outbox, {}
        link = self._link
        if link is None or link.closed:
            return
        for frames in out.values():
            try:
                link.send(frames)
            except zmq.ZMQError as exc:  # lost; the retransmission of silent commands recovers
                log.debug("send to %r failed: %s", frames[0], exc)

    def _on_handler_error(self, exc: BaseException) -> None:
        # the dispatcher must survive any one message
        log.error("internal error handling a frame", exc_info=exc)

    def _resolve(
        self,
        cid: str,
        status: OutcomeStatus,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        driver: str | None = None,
    ) -> None:
        pend = self._pending.pop(cid, None)
        if pend is None:
            return
        if pend.expiry is not None:
            pend.expiry.cancel()
        if pend.driver is not None:
            # it reached that driver's ledger (or may have): a re-submit must go there again
            # (and get the stored answer), never to another driver that would execute it anew
            self._remember_owner(cid, pend.driver)
        if pend.driver is None:  # queued (a command sent to a driver is not in the queue)
            with contextlib.suppress(ValueError):
                self._queue.remove(cid)
        else:
            drv = self._drivers.get(pend.driver)
            if drv is not None:
                drv.in_flight.discard(cid)
        outcome = Outcome(cid, status, result, error, driver)
        if not pend.future.done():
            pend.future.set_result(outcome)
        if pend.joiners:
            for joined in pend.joiners:
                if not joined.done():
                    joined.set_result(outcome)
        self._changed.set()

    def _remember_owner(self, cid: str, identity: str) -> None:
        self._owner[cid] = identity
        if len(self._owner) > self.max_remembered:
            for old in list(itertools.islice(self._owner, len(self._owner) // 10)):
                del self._owner[old]

    def _expire(self, cid: str) -> None:
        pend = self._pending.get(cid)
        if pend is None:
            return
        if pend.driver is None:
            caps = pend.command.capability
            live = [d.identity for d in self._drivers.values() if d.alive and caps in d.capabilities]
            why = (f"no live driver with capability {caps!r}" if not live
                   else f"drivers {live} stayed at capacity")
            error = f"expired: not sent within the deadline of {pend.command.deadline_s:g} s ({why})"
        else:
            error = (f"expired: no result from driver {pend.driver!r} within the deadline of "
                     f"{pend.command.deadline_s:g} s (+{self.grace_s:g} s grace)")
        log.warning("command %s %s", cid, error)
        self._resolve(cid, "expired", error=error, driver=pend.driver)

    def _assign(self) -> None:
        """Route queued commands to live drivers with the capability and free capacity."""
        if not self._queue:
            return
        now = self._loop.time()
        still: list[str] = []
        drivers = self._drivers
        for pos, cid in enumerate(self._queue):
            pend = self._pending.get(cid)
            if pend is None:
                continue
            best = self._pick(pend, now)
            if best is None:
                if not any(d.alive and d.free() > 0 and d.busy_until <= now
                           for d in drivers.values()):
                    still.extend(self._queue[pos:])  # every driver is full: stop scanning (a
                    break  # backlog of thousands must not cost O(n) per finished command)
                still.append(cid)
                continue
            self._route(pend, best, now)
        self._queue = still

    def _pick(self, pend: _Pending, now: float) -> _Driver | None:
        """The driver ``pend`` goes to now, or None: its pinned owner if that one is live and
        has room, else (unpinned) the live driver with the capability and the largest free
        share of its capacity (then the most free slots)."""
        drivers = self._drivers
        owner = self._owner.get(pend.command.command_id)
        if owner is not None:
            d = drivers.get(owner)
            if (d is not None and d.alive and len(d.in_flight) < d.capacity
                    and d.busy_until <= now):
                return d
            return None
        cap = pend.command.capability
        best: _Driver | None = None
        best_key = (0.0, 0)
        for d in drivers.values():
            free = d.capacity - len(d.in_flight)
            if free > 0 and d.alive and d.busy_until <= now and cap in d.capabilities:
                key = (free / d.capacity, free)
                if best is None or key > best_key:
                    best, best_key = d, key
        return best

    def _route(self, pend: _Pending, drv: _Driver, now: float) -> None:
        """Pin ``pend`` to ``drv`` and send it."""
        cid = pend.command.command_id
        pend.driver = drv.identity
        drv.in_flight.add(cid)
        self._owner.pop(cid, None)
        self._transmit(pend, now)

    def _transmit(self, pend: _Pending, now: float) -> None:
        remaining = max(1e-3, pend.deadline_at - self.grace_s - now)
        cmd = pend.command
        if abs(remaining - cmd.deadline_s) > 1e-3:
            cmd = cmd.model_copy(update={"deadline_s": remaining})
        pend.last_contact = now
        pend.sends += 1
        if pend.sends > 1:
            self.retransmits += 1
        assert pend.driver is not None
        self._send(pend.driver, cmd)

    def _handle(self, frames: list[bytes]) -> None:
        """One message: ``[identity, payload]`` from a driver's own socket, or ``[route,
        identity, payload, identity, payload, ...]`` over a host's shared connection — each
        pair handled as its own message, in order (docs/protocol.md, "Envelope")."""
        n = len(frames)
        if n == 2:
            self._handle_one(None, frames[0], frames[1])
            return
        if n >= 3 and n % 2 == 1:
            route = frames[0]
            for i in range(1, n, 2):
                if i > 1 and self._own_socket(route):
                    return  # a driver's own socket: its malformed frame set was answered
                try:
                    self._handle_one(route, frames[i], frames[i + 1])
                except Exception as exc:  # noqa: BLE001 - the rest of the batch still counts
                    self._on_handler_error(exc)
            return
        log.warning("dropping frame set of %d parts (expected identity + payload)", n)
        if n >= 1:
            self._reply([frames[0]], Error(code="malformed",
                                           detail=f"expected 1 frame, got {n - 1}"))

    def _handle_one(self, route: bytes | None, ident_b: bytes, payload: bytes) -> None:
        head = [ident_b] if route is None else [route, ident_b]
        if route is None and _replaced_connection(ident_b):
            # a driver reconnected (it heard nothing for lost_after heartbeats, e.g. while the
            # controller's loop was busy) and its new socket took its identity over
            # (ROUTER_HANDOVER); libzmq renamed the old connection to this id, and frames still
            # queued on it arrive under it. The driver goes on over its new connection and the
            # controller re-sends what it still needs: nothing to answer, nothing lost.
            log.debug("dropping a frame left on a replaced connection (its driver reconnected)")
            return
        try:
            identity = ident_b.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("dropping message from a peer with a non-UTF-8 identity %r", ident_b[:32])
            return
        try:
            msg = decode(payload)
        except ProtocolError as exc:
            if route is not None and self._own_socket(route):
                self._not_shared(route)
                return
            log.warning("malformed message from %r: %s", identity, exc.detail)
            self._reply(head, Error(code=exc.code, detail=exc.detail))
            return
        now = self._loop.time()
        if isinstance(msg, Register):
            self._on_register(identity, msg, now, route, head)
            return
        if route is not None and self._own_socket(route):
            # three parts from a registered driver's own socket are a malformed frame set; from
            # any other connection they are a host's instance (registered or not: after a
            # controller restart its next heartbeat gets "unregistered" and it registers again)
            self._not_shared(route)
            return
        drv = self._drivers.get(identity)
        if drv is None or not drv.alive:
            if isinstance(msg, Error):
                self.errors.append((identity, msg))
                return
            if isinstance(msg, Result | StatusReply):
                # a late answer from an unknown/lost peer is still information: use it
                pass
            else:
                self._reply(head, Error(code="unregistered",
                                        detail="register first (controller restarted?)"))
                return
        if drv is not None:
            drv.last_seen = now
        if isinstance(msg, Heartbeat):
            if drv is not None:
                drv.heartbeats += 1
            for cid in msg.running:
                pend = self._pending.get(cid)
                if pend is not None and pend.driver == identity:
                    pend.last_contact = now
        elif isinstance(msg, Ack):
            pend = self._pending.get(msg.command_id)
            if pend is not None and pend.driver == identity:
                pend.acked = True
                pend.last_contact = now
        elif isinstance(msg, Progress):
            pend = self._pending.get(msg.command_id)
            if pend is not None and pend.driver == identity:
                pend.last_contact = now
                if pend.on_progress is not None:
                    try:
                        pend.on_progress(msg.command_id, msg.fraction, msg.message)
                    except Exception:  # noqa: BLE001 - a callback bug must not stop routing
                        log.exception("on_progress callback failed")
        elif isinstance(msg, Result):
            pend = self._pending.get(msg.command_id)
            if pend is not None and pend.driver in (identity, None):
                self._resolve(msg.command_id, msg.status, result=msg.result, error=msg.error,
                              driver=identity)
                self._assign()
        elif isinstance(msg, StatusReply):
            entry = self._queries.get(msg.query_id)
            if entry is not None:
                done, waiting, replies = entry
                replies[identity] = dict(msg.statuses)
                waiting.discard(identity)
                if not waiting and not done.done():
                    done.set_result(None)
        elif isinstance(msg, Error):
            self.errors.append((identity, msg))
            self._on_error(identity, msg, now)
        elif isinstance(msg, Goodbye):
            log.info("driver %s said goodbye: %s", identity, msg.reason)
            if drv is not None:
                self._declare_lost(drv, f"driver {identity!r} shut down ({msg.reason})")
        else:
            self._reply(head, Error(code="malformed",
                                    detail=f"a controller does not accept {msg.type!r}"))

    def _own_socket(self, route: bytes) -> bool:
        """Whether ``route`` is the socket of a driver registered on its own (not a host's
        shared connection)."""
        if route in self._shared_routes:
            return False
        drv = self._drivers.get(route.decode("utf-8", "replace"))
        return drv is not None and drv.route is None

    def _forget_route(self, route: bytes) -> None:
        """An identity moved off the shared connection ``route`` (its host restarted: a new
        connection): once no registered identity is behind ``route`` it is no longer known
        as shared, so a dispatcher outliving many host restarts keeps one entry per live
        connection, not one per start. A lost host's identities keep theirs (bounded by
        the identities)."""
        if not any(d.route == route for d in self._drivers.values()):
            self._shared_routes.discard(route)

    def _not_shared(self, route: bytes) -> None:
        log.warning("dropping frame set of 3 parts from %r (expected identity + payload)", route)
        self._reply([route], Error(code="malformed", detail="expected 1 frame, got 2"))

    def _on_register(self, identity: str, msg: Register, now: float, route: bytes | None,
                     head: list[bytes]) -> None:
        if msg.identity != identity:
            self._reply(head, Error(
                code="malformed",
                detail=f"register names identity {msg.identity!r} but the socket is {identity!r}",
            ))
            return
        if route is not None:
            # from now on this connection carries identities (until none is registered over
            # it any more: see _forget_route)
            self._shared_routes.add(route)
        old = self._drivers.get(identity)
        drv = _Driver(identity, tuple(msg.capabilities), msg.capacity, msg.version, msg.instance,
                      last_seen=now, route=route)
        if old is not None:
            drv.in_flight = old.in_flight
            if old.instance != msg.instance:
                log.warning("driver %s restarted (new instance); re-asking its in-flight commands",
                            identity)
            elif not old.alive:
                log.info("driver %s is back", identity)
        else:
            log.info("driver %s registered: %s x%d", identity, ",".join(msg.capabilities),
                     msg.capacity)
        self._drivers[identity] = drv
        if old is not None and old.route is not None and old.route != route:
            self._forget_route(old.route)
        self._send(identity, Heartbeat())
        # whatever it had in flight: ask again now (the ledger answers; nothing runs twice)
        for cid in list(drv.in_flight):
            pend = self._pending.get(cid)
            if pend is None:
                drv.in_flight.discard(cid)
            elif cid not in msg.running:
                self._transmit(pend, now)
        self._changed.set()
        self._assign()

    def _on_error(self, identity: str, msg: Error, now: float) -> None:
        cid = msg.command_id
        pend = self._pending.get(cid) if cid else None
        if pend is None or pend.driver != identity:
            log.warning("driver %s reported %s: %s", identity, msg.code, msg.detail)
            return
        if msg.code == "busy":
            drv = self._drivers.get(identity)
            if drv is not None:
                drv.in_flight.discard(cid)
                drv.busy_until = now + min(0.05, self.heartbeat_s)
            pend.driver = None
            self._queue.insert(0, cid)
        else:
            self._resolve(cid, "failed", error=f"{msg.code}: {msg.detail}", driver=identity)

    def _declare_lost(self, drv: _Driver, why: str) -> None:
        drv.alive = False
        lost = sorted(drv.in_flight)
        for cid in lost:
            self._resolve(
                cid,
                "lost",
                error=f"{why}; the command was in flight and may have run — reconcile with "
                "query_status once the driver is back",
                driver=drv.identity,
            )
        drv.in_flight.clear()
        self.lost_reports.append((drv.identity, lost))
        if lost:
            log.warning("%s with %d command(s) in flight: %s", why, len(lost), lost)
        if self.on_lost is not None:
            try:
                self.on_lost(drv.identity, lost)
            except Exception:  # noqa: BLE001
                log.exception("on_lost callback failed")
        self._changed.set()

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = min(self.heartbeat_s, self.retry_s) / 2
        next_beat = 0.0
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            if now >= next_beat:
                next_beat = now + self.heartbeat_s
                beat = Heartbeat(sent_at=time.time())
                for drv in list(self._drivers.values()):
                    if drv.alive:
                        self._send(drv.identity, beat)
            for drv in list(self._drivers.values()):
                silent = now - drv.last_seen
                if drv.alive and silent > self.lost_after * self.heartbeat_s:
                    self._declare_lost(
                        drv, f"driver {drv.identity!r} lost: silent for {silent:.1f} s "
                        f"(> {self.lost_after} heartbeats)"
                    )
            for pend in list(self._pending.values()):
                if pend.driver is not None and now - pend.last_contact > self.retry_s:
                    self._transmit(pend, now)
            self._assign()
