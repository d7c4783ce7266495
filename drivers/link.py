"""A plain ZeroMQ socket driven by the asyncio loop: non-blocking sends, a reader callback.

Why not ``zmq.asyncio``: its sockets wrap every send and receive in futures, poller objects and
flag enums — at thousands of short commands per second that bookkeeping cost more CPU than
ZeroMQ itself. Both ends of this protocol only ever send without blocking (a ROUTER never
blocks; a DEALER frame that cannot leave is lost and recovered by retransmission), so a send is
a direct call, and receiving is one reader callback on the socket's file descriptor that drains
every frame waiting.

The one subtlety: ZeroMQ's ``FD`` is edge-triggered. Any call on the socket — a *send*
included — may consume the notification for frames that have arrived meanwhile, after which
the descriptor stays silent although frames wait. So after every send (once per event-loop
turn, however many sends) the link schedules a drain check of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq

from .security import CurveConfig

# plain ints and the Cython base methods: pyzmq's convenience layer (send_multipart,
# recv_multipart, getsockopt) spends more time on flag enums than ZeroMQ spends on the frame
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_RCVMORE = int(zmq.RCVMORE)
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get


def connect_dealer(ctx: zmq.Context, routing_id: str, endpoint: str,
                   curve: CurveConfig | None, backoff_s: tuple[float, float]) -> zmq.Socket:
    """A driver-side DEALER (a driver's own socket or a host's shared one), connected: its
    routing id, linger for a goodbye, high-water marks above any burst, ZeroMQ's reconnect
    back-off, CURVE if on."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, routing_id.encode("utf-8"))
    sock.setsockopt(zmq.LINGER, 500)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.RECONNECT_IVL, int(backoff_s[0] * 1000))
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(backoff_s[1] * 1000))
    if curve is not None:
        curve.apply_client(sock)
    sock.connect(endpoint)
    return sock


class Link:
    """Owns the reader registration of one socket; ``on_frames(frames)`` runs per message.

    ``on_frames`` is a plain function (it runs inside the reader callback); an exception in it
    is reported to ``on_error(exc)`` and the drain goes on with the next frame.
    ``on_batch()``, if given, runs once after each drain that handled at least one frame (the
    driver commits the ledger writes of the whole burst there, in the same callback).
    ``budget``: frames handled per callback before yielding to other callbacks (fairness).
    """

    def __init__(
        self,
        sock: zmq.Socket,
        on_frames: Callable[[list[bytes]], None],
        on_error: Callable[[BaseException], None],
        *,
        on_batch: Callable[[], None] | None = None,
        budget: int = 256,
    ) -> None:
        self.sock = sock
        self._on_frames = on_frames
        self._on_error = on_error
        self._on_batch = on_batch
        self._budget = budget
        self._loop = asyncio.get_running_loop()
        self._fd = sock.getsockopt(zmq.FD)
        self._check_scheduled = False
        self._closed = False
        self._loop.add_reader(self._fd, self._drain)

    def send(self, frames: list[bytes]) -> None:
        """Send one message without blocking; raises ``zmq.ZMQError`` (``zmq.Again`` when it
        cannot be queued right now)."""
        if self._closed:
            raise zmq.ZMQError(zmq.ENOTSOCK)
        sock = self.sock
        try:
            last = len(frames) - 1
            for i, frame in enumerate(frames):
                _send(sock, frame, _NOBLOCK if i == last else _MORE)
        finally:
            # the send may have swallowed the edge of frames that arrived: look once this turn
            if not self._check_scheduled:
                self._check_scheduled = True
                self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._check_scheduled = False
        if self._closed:
            return
        sock = self.sock
        handle = self._on_frames
        handled = 0
        try:
            while handled < self._budget:
                try:
                    # EVENTS is ZeroMQ's documented edge check (and cheaper than a failing recv)
                    if not _get(sock, _EVENTS) & _POLLIN:
                        return
                    frames = [_recv(sock, _NOBLOCK)]
                    while _get(sock, _RCVMORE):
                        frames.append(_recv(sock, _NOBLOCK))
                except zmq.ZMQError as exc:  # socket closed under us
                    if not self._closed:
                        self._on_error(exc)
                    return
                handled += 1
                try:
                    handle(frames)
                except Exception as exc:  # noqa: BLE001 - one message must not stop the drain
                    self._on_error(exc)
                if self._closed:
                    return
            # budget used up: more may wait; come back after the other ready callbacks
            if not self._check_scheduled:
                self._check_scheduled = True
                self._loop.call_soon(self._drain)
        finally:
            if handled and self._on_batch is not None:
                try:
                    self._on_batch()
                except Exception as exc:  # noqa: BLE001
                    self._on_error(exc)

    def close(self, linger: int = 0) -> None:
        """Stop reading and close the socket (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        if not self.sock.closed:
            self.sock.close(linger=linger)

    @property
    def closed(self) -> bool:
        return self._closed or self.sock.closed
