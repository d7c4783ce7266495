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

_AGAIN = zmq.Again
_NOBLOCK = zmq.NOBLOCK


class Link:
    """Owns the reader registration of one socket; ``on_frames(frames)`` runs per message.

    ``on_frames`` is a plain function (it runs inside the reader callback); an exception in it
    is reported to ``on_error(exc)`` and the drain goes on with the next frame.
    ``budget``: frames handled per callback before yielding to other callbacks (fairness).
    """

    def __init__(
        self,
        sock: zmq.Socket,
        on_frames: Callable[[list[bytes]], None],
        on_error: Callable[[BaseException], None],
        *,
        budget: int = 256,
    ) -> None:
        self.sock = sock
        self._on_frames = on_frames
        self._on_error = on_error
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
        try:
            self.sock.send_multipart(frames, _NOBLOCK)
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
        for _ in range(self._budget):
            try:
                frames = sock.recv_multipart(_NOBLOCK)
            except _AGAIN:
                return
            except zmq.ZMQError as exc:  # socket closed under us
                if not self._closed:
                    self._on_error(exc)
                return
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
