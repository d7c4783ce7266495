"""Group commit of ledger writes: the writes issued in one event-loop turn share one transaction.

Why: with ``ledger_sync="full"`` every commit is an fsync (hundreds of µs on a virtual disk,
milliseconds on real ones). Commands that arrive together (a drained burst of frames) are
admitted with one fsync, and results finishing together are stored with one. Durability is
unchanged: nobody proceeds (executes, or sends a result) before the write it waits on is
committed.

One :class:`GroupCommit` serves one ledger file. A single driver owns one and commits at the
end of each drained burst of its socket (:meth:`GroupCommit.end_of_burst`). A driver host
(:mod:`drivers.host`) shares one among all its instances over one shared ledger file; then the
end of one instance's burst does not commit: the flush scheduled for the next loop turn runs
after the reader callbacks of *every* socket that was ready, so the bursts of all instances
share one transaction (:class:`TaggedCommits` is an instance's handle on it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

Waiter = asyncio.Future[bool] | Callable[[bool, Exception | None], None]

log = logging.getLogger("drivers.driver")


class GroupCommit:
    """Queue of ledger ops committed together by ``apply(ops) -> [changed per op]``.

    ``apply`` must commit all ops in one transaction or raise (then none is durable).
    ``commit_at_burst_end``: whether :meth:`end_of_burst` commits (a lone driver) or leaves it
    to the flush already scheduled for the next loop turn (a host shared by several sockets).
    """

    def __init__(self, apply: Callable[[list[tuple[Any, ...]]], list[bool]], *,
                 commit_at_burst_end: bool = True) -> None:
        self._apply = apply
        self._commit_at_burst_end = commit_at_burst_end
        self._ops: list[tuple[Any, ...]] = []
        self._waiters: list[Waiter] = []
        self._scheduled = False
        self.commits = 0  # transactions committed (tests and stats)

    def submit(self, op: tuple[Any, ...]) -> asyncio.Future[bool]:
        """Queue ``op``; the future resolves (to "changed a row") once it is committed."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue(op, fut)
        return fut

    def submit_then(self, op: tuple[Any, ...],
                    then: Callable[[bool, Exception | None], None]) -> None:
        """Queue ``op``; ``then(changed, error)`` runs right after the commit (or its failure)
        — no future, no task wake-up."""
        self._queue(op, then)

    def _queue(self, op: tuple[Any, ...], waiter: Waiter) -> None:
        self._ops.append(op)
        self._waiters.append(waiter)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def pending(self) -> bool:
        return bool(self._ops)

    def end_of_burst(self) -> None:
        """A socket drained a burst of frames: commit its admissions now (lone driver), so each
        admitted task finds its id committed when it first runs — or, when shared, leave it to
        the flush of the next turn, which then also carries the other sockets' bursts."""
        if self._commit_at_burst_end and self._ops:
            self._flush(scheduled=False)

    def flush_now(self) -> None:
        """Commit what is queued now (the scheduled flush then finds nothing to do)."""
        self._flush(scheduled=False)

    def _flush(self, scheduled: bool = True) -> None:
        if scheduled:
            self._scheduled = False
        if not self._ops:
            self._scheduled = False
            return
        ops, waiters = self._ops, self._waiters
        self._ops, self._waiters = [], []
        error: Exception | None = None
        try:
            changed = self._apply(ops)
            self.commits += 1
        except Exception as exc:  # noqa: BLE001 - every waiter learns the write failed
            error, changed = exc, [False] * len(ops)
        for waiter, flag in zip(waiters, changed, strict=True):
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    if error is not None:
                        waiter.set_exception(error)
                    else:
                        waiter.set_result(flag)
            else:
                try:
                    waiter(flag, error)
                except Exception:  # noqa: BLE001 - one callback must not starve the others
                    log.exception("ledger commit callback failed")


class TaggedCommits:
    """One hosted instance's handle on a shared :class:`GroupCommit`: the same calls as a
    driver's own, each op tagged with the instance's identity (``(kind, identity, *rest)``) so
    the shared ledger keys it by (identity, command id)."""

    def __init__(self, shared: GroupCommit, identity: str) -> None:
        self.shared = shared
        self.identity = identity

    def submit(self, op: tuple[Any, ...]) -> asyncio.Future[bool]:
        return self.shared.submit((op[0], self.identity, *op[1:]))

    def submit_then(self, op: tuple[Any, ...],
                    then: Callable[[bool, Exception | None], None]) -> None:
        self.shared.submit_then((op[0], self.identity, *op[1:]), then)

    def pending(self) -> bool:
        return self.shared.pending()

    def end_of_burst(self) -> None:
        self.shared.end_of_burst()

    def flush_now(self) -> None:
        self.shared.flush_now()

    def _flush(self) -> None:
        self.shared.flush_now()
