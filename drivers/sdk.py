"""Driver SDK: the base class a lab engineer subclasses for one instrument.

A subclass declares ``capabilities``, ``capacity`` and ``version`` and implements
``async execute(command, progress) -> dict``. Everything else is the SDK's job: the DEALER
socket with the driver's identity, registration, heartbeats both ways, reconnection with
exponential back-off when the controller goes silent, validation of every frame and of the
standard step params/results, deadlines, and the durable ledger that makes execution
at-most-once (see :mod:`drivers.ledger`).

Why at-most-once and not "retry until done": re-running a furnace program or a dosing step is
worse than reporting a clear failure, so a command the driver died in the middle of is
answered with :data:`~drivers.ledger.INTERRUPTED` and left for a person or a policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import types
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import zmq
from pydantic import BaseModel

from .commit import GroupCommit, TaggedCommits
from .faults import FaultConfig, FaultInjector
from .host_ledger import LedgerView
from .ledger import Ledger
from .link import Link, connect_dealer
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
from .shared import Channel, SharedConnection
from .steps import STANDARD_CAPABILITIES, StepError, validate_params, validate_result

ProgressFn = Callable[[float, str], Awaitable[None]]

CANCELLED = (
    "cancelled: driver shut down mid-command; instrument state must be checked "
    "(the action may have partly run and was not repeated)"
)


def _dumps(obj: Any) -> str:
    """JSON text of a result (NaN/inf refused: the wire format is strict JSON)."""
    return json.dumps(obj, allow_nan=False, separators=(",", ":"))


_SUCCEEDED_HEAD = b'{"v":1,"type":"result","command_id":"'
_SUCCEEDED_MID = b'","status":"succeeded","result":'
_SUCCEEDED_TAIL = b',"error":null,"replay":false}'


@types.coroutine
def _resume(coro: Any, yielded: Any) -> Any:
    """Go on driving ``coro`` after its first step (which yielded ``yielded``) as if it were
    awaited from the start: what it yields goes to the task, what the task sends or throws
    (a wake-up, a cancellation) goes to it — ``yield from`` written out."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - cancellation and the like go to coro
            try:
                yielded = coro.throw(exc)
            except StopIteration as finished:
                return finished.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as finished:
                return finished.value


def run_until_signal(serve: Callable[[asyncio.Event], Awaitable[Any]]) -> None:
    """Blocking: run ``serve(stop)`` in a new event loop, with SIGINT/SIGTERM setting ``stop``
    so that drivers drain and say goodbye instead of dying mid-command (the one way every
    driver process — single, hosted or simulated — is run from a command line)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    asyncio.run(main())


class _AckBatch:
    """Commands admitted in one short window, sharing one ack timer."""

    __slots__ = ("opened", "cids", "finished", "running", "timer")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.cids: list[str] = []
        self.finished: set[str] = set()
        self.running = 0
        self.timer: asyncio.TimerHandle | None = None

    def done(self, cid: str) -> None:
        """``cid`` finished executing: no ack for it; the last one cancels the timer."""
        self.finished.add(cid)
        self.running -= 1
        if self.running <= 0 and self.timer is not None:
            self.timer.cancel()
            self.timer = None


class InstrumentError(Exception):
    """Raised by ``execute`` when the instrument fails; ``reason`` is reported to the controller
    as the command's error and stored in the ledger (a replay returns the same failure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Driver:
    """Base class of an instrument driver (one process, one identity, one ledger file).

    Options (keyword-only): ``heartbeat_s`` interval of heartbeats; ``lost_after`` silent
    intervals before the controller is considered gone and the socket is rebuilt;
    ``backoff_s`` (first, max) reconnect delays; ``faults`` seeded fault injection on sent
    frames; ``ledger_sync`` "full" (fsync each commit) or "normal"; ``drain_s`` how long a
    graceful stop waits for running commands; ``validate_steps`` check standard step
    params/results against :mod:`drivers.steps`; ``ack_after_s`` how long a command may run
    before an Ack is sent (a faster one is answered by its Result alone).
    """

    capabilities: ClassVar[tuple[str, ...]] = ()
    capacity: ClassVar[int] = 1
    version: ClassVar[str] = "0"

    def __init__(
        self,
        identity: str,
        ledger_path: str | Path,
        *,
        heartbeat_s: float = 1.0,
        lost_after: int = 5,
        backoff_s: tuple[float, float] = (0.1, 5.0),
        faults: FaultConfig | None = None,
        ledger_sync: Literal["full", "normal"] = "full",
        drain_s: float = 5.0,
        validate_steps: bool = True,
        ack_after_s: float = 0.002,
    ) -> None:
        if not identity or len(identity) > 200:
            raise ValueError(f"driver identity must be 1..200 characters, got {identity!r}")
        if not self.capabilities or not all(isinstance(c, str) and c for c in self.capabilities):
            raise TypeError(
                f"{type(self).__name__}.capabilities must be a non-empty tuple of names, "
                f"got {self.capabilities!r}"
            )
        if not isinstance(self.capacity, int) or self.capacity < 1:
            raise TypeError(f"{type(self).__name__}.capacity must be an int >= 1")
        if heartbeat_s <= 0 or lost_after < 1:
            raise ValueError("heartbeat_s must be > 0 and lost_after >= 1")
        self.identity = identity
        self.ledger_path = Path(ledger_path)
        self.heartbeat_s = heartbeat_s
        self.lost_after = lost_after
        self.backoff_s = backoff_s
        self.faults = faults
        self.ledger_sync = ledger_sync
        self.drain_s = drain_s
        self.validate_steps = validate_steps
        self.ack_after_s = ack_after_s
        self.instance = str(uuid.uuid4())
        self.log = logging.getLogger(f"drivers.driver.{identity}")
        self.executions = 0  # calls of execute() in this process (tests and stats)
        self.sessions = 0  # sockets opened (1 + reconnects)
        self.ledger: Ledger | LedgerView | None = None
        self._commits: GroupCommit | TaggedCommits | None = None
        self.injector: FaultInjector | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heard_any = False
        self._ack_batch: _AckBatch | None = None
        self._link: Link | Channel | None = None
        self._shared: SharedConnection | None = None  # the host's connection, when hosted so
        self._draining = False
        self._last_heard = 0.0
        self._rng = random.Random(self.instance)

    # ---- to implement -------------------------------------------------------------------
    async def execute(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        """Run one command on the instrument and return its result payload.

        Raise :class:`InstrumentError` for an instrument failure. ``await progress(f, msg)``
        reports progress (fraction in [0, 1]). Called at most once per command id, ever.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement execute()")

    async def on_start(self) -> None:
        """Hook: called once in :meth:`serve` before connecting (open the instrument)."""

    async def on_stop(self) -> None:
        """Hook: called once when :meth:`serve` ends (release the instrument)."""

    # ---- running ------------------------------------------------------------------------
    def run(self, endpoint: str, *, curve: CurveConfig | None = None) -> None:
        """Blocking: serve until SIGINT/SIGTERM, then shut down gracefully."""
        run_until_signal(lambda stop: self.serve(endpoint, stop=stop, curve=curve))

    async def serve(
        self,
        endpoint: str,
        *,
        stop: asyncio.Event | None = None,
        curve: CurveConfig | None = None,
    ) -> None:
        """Connect to the controller's ROUTER at ``endpoint`` and serve until ``stop`` is set.

        Reconnects (new socket, re-registration) with exponential back-off and jitter whenever
        the controller is silent for ``lost_after`` heartbeats.
        """
        ledger = Ledger(self.ledger_path, sync=self.ledger_sync)
        ctx = zmq.Context()
        try:
            await self._serve_with(endpoint, stop or asyncio.Event(), curve, ctx, ledger,
                                   GroupCommit(ledger.apply))
        finally:
            ctx.destroy(linger=0)
            ledger.close()

    async def _serve_with(self, endpoint: str, stop: asyncio.Event, curve: CurveConfig | None,
                          ctx: zmq.Context, ledger: Ledger | LedgerView,
                          commits: GroupCommit | TaggedCommits,
                          shared: SharedConnection | None = None) -> None:
        """Serve on resources the caller owns and closes: a ZeroMQ context, a ledger (own file
        or a view of a host's shared one) and its group commit, and optionally a host's shared
        connection (then this instance opens no socket of its own). :meth:`serve` gives a
        driver its own; :mod:`drivers.host` gives several instances one process's shared ones."""
        self._loop = asyncio.get_running_loop()
        self._shared = shared
        self.instance = str(uuid.uuid4())  # every serve() is a fresh start for the controller
        self._draining = False
        self.ledger = ledger
        self._commits = commits
        interrupted = ledger.recover_interrupted()
        for cid in interrupted:
            self.log.warning("command %s was running when this driver died: marked interrupted",
                             cid)
        await self.on_start()
        attempt = 0
        try:
            while not stop.is_set():
                self._link = self._open(ctx, endpoint, curve)
                self.sessions += 1
                reason = await self._session(stop)
                if reason == "stop":
                    break
                delay = min(self.backoff_s[1], self.backoff_s[0] * 2**attempt)
                delay *= 0.5 + self._rng.random()  # jitter: restarted drivers do not stampede
                attempt += 1
                self.log.warning("controller silent for %d heartbeats; reconnecting in %.2f s",
                                 self.lost_after, delay)
                self._link.close(linger=0)
                self._link = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if reason == "heard":
                    attempt = 0
        finally:
            await self._shutdown()
            await self.on_stop()
            commits.flush_now()  # anything still queued is committed before closing

    def _open(self, ctx: zmq.Context, endpoint: str, curve: CurveConfig | None) -> Link | Channel:
        if self._shared is not None:
            # hosted on a shared connection: attach (again, after a silence) instead of a socket
            channel = self._shared.attach(self.identity, self._on_frames,
                                          self._on_handler_error)
            self.injector = FaultInjector(self.faults, channel.send) if self.faults else None
            return channel
        sock = connect_dealer(ctx, self.identity, endpoint, curve, self.backoff_s)
        link = Link(sock, self._on_frames, self._on_handler_error, on_batch=self._on_batch)
        self.injector = FaultInjector(self.faults, link.send) if self.faults else None
        return link

    def _send(self, msg: BaseModel) -> None:
        """Send one message on the current socket without blocking; a closed or unconnected
        socket just loses it (the controller retransmits what it still needs)."""
        self._send_frame(encode(msg))

    def _send_frame(self, frame: bytes) -> None:
        """Send one encoded message (see :meth:`_send`)."""
        link = self._link
        if link is None or link.closed:
            return
        frames = [frame]
        try:
            if self.injector is not None:
                self.injector.send_nowait(frames)
            else:
                # never block: with no controller connected (or a refused CURVE handshake) a
                # DEALER send would wait forever; a lost frame is recovered by retransmission
                link.send(frames)
        except zmq.ZMQError as exc:
            self.log.debug("send failed (%s); message lost", exc)

    def _on_handler_error(self, exc: BaseException) -> None:
        self.log.error("internal error handling a frame", exc_info=exc)

    def _on_frames(self, frames: list[bytes]) -> None:
        self._last_heard = self._loop.time()
        self._heard_any = True
        self._handle(frames)

    def _on_batch(self) -> None:
        """End of a drained burst of frames: commit the admissions of the whole burst now (one
        transaction), so each admitted task finds its id committed when it first runs and goes
        straight on to execute — no extra event-loop turn for the commit, none for a wake-up."""
        commits = self._commits
        if commits is not None:
            commits.end_of_burst()

    def _register_msg(self) -> Register:
        return Register(
            identity=self.identity,
            capabilities=list(self.capabilities),
            capacity=self.capacity,
            version=str(self.version),
            instance=self.instance,
            running=list(self._tasks),
        )

    async def _session(self, stop: asyncio.Event) -> str:
        """One connection: register, heartbeat; frames are handled by the link's reader
        callback (no await per frame). Returns why it ended.

        The silence check rides on the heartbeat timer (one wake-up per interval, not four:
        16 idle drivers on 2 cores add up), so "lost" is noticed within one interval of
        ``lost_after`` heartbeats."""
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        self._heard_any = False
        self._send(self._register_msg())
        beat = loop.create_task(self._heartbeats())
        stopped = loop.create_task(stop.wait())
        try:
            await asyncio.wait((beat, stopped), return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                return "stop"
            beat.result()  # a bug in the heartbeat loop surfaces here
            return "heard" if self._heard_any else "lost"
        finally:
            for task in (beat, stopped):
                task.cancel()
            for task in (beat, stopped):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _heartbeats(self) -> None:
        """Every ``heartbeat_s``: a heartbeat, and the silence check; returns when the
        controller has been silent for ``lost_after`` intervals."""
        loop = asyncio.get_running_loop()
        limit = self.lost_after * self.heartbeat_s
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if loop.time() - self._last_heard > limit:
                return
            self._send(Heartbeat(running=list(self._tasks)))

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) != 1:
            self.log.warning("malformed frame set of %d parts from controller", len(frames))
            self._send(Error(code="malformed", detail=f"expected 1 frame, got {len(frames)}"))
            return
        try:
            msg = decode(frames[0])
        except ProtocolError as exc:
            self.log.warning("malformed message from controller: %s", exc.detail)
            self._send(Error(code=exc.code, detail=exc.detail))
            return
        try:
            if isinstance(msg, Command):
                self._on_command(msg)
            elif isinstance(msg, StatusQuery):
                self._on_status(msg)
            elif isinstance(msg, Heartbeat):
                pass
            elif isinstance(msg, Error):
                if msg.code == "unregistered":
                    self._send(self._register_msg())
                else:
                    self.log.warning("controller reported error %s: %s", msg.code, msg.detail)
            else:
                self._send(
                    Error(code="malformed", detail=f"a driver does not accept {msg.type!r}")
                )
        except Exception as exc:  # noqa: BLE001 - one bad message must not kill the driver
            self.log.exception("internal error handling %s", type(msg).__name__)
            self._send(
                Error(
                    code="internal",
                    detail=f"{type(exc).__name__}: {exc}"[:4000],
                    command_id=getattr(msg, "command_id", None),
                )
            )

    def _on_status(self, query: StatusQuery) -> None:
        assert self.ledger is not None
        statuses = self.ledger.statuses(list(query.command_ids))
        for cid in statuses:
            if cid in self._tasks:  # admitted, maybe not yet committed, or finishing
                statuses[cid] = "running"
        self._send(StatusReply(query_id=query.query_id, statuses=statuses))  # type: ignore[arg-type]

    def _on_command(self, cmd: Command) -> None:
        """Admission. No ``await`` between the duplicate checks and registering the task in
        ``self._tasks``: duplicates are decided atomically. The task commits the id to the
        ledger (group commit) before ``execute`` runs.

        Fast path: a command this process is not running is admitted without reading the
        ledger first — the task's ``INSERT OR IGNORE`` decides whether the id is new, and a
        known id is answered from the stored row instead of executing (:meth:`_replay`). The
        ledger is read up front only when the command would otherwise be refused (unsupported,
        busy, invalid params): a re-sent finished command gets its stored result, not a refusal.
        """
        ledger = self.ledger
        assert ledger is not None
        cid = cmd.command_id
        if cid in self._tasks:
            self._send(Ack(command_id=cid, duplicate=True, state="running"))
            return
        capability = cmd.capability
        if capability not in self.capabilities:
            if self._replay(cid):
                return
            self._send(
                Error(
                    code="unsupported",
                    detail=f"driver {self.identity!r} has no capability {capability!r} "
                    f"(has {', '.join(self.capabilities)})",
                    command_id=cid,
                )
            )
            return
        if self._draining or len(self._tasks) >= self.capacity:
            if self._replay(cid):
                return
            why = "draining (shutting down)" if self._draining else f"at capacity {self.capacity}"
            self._send(Error(code="busy", detail=f"driver {why}", command_id=cid))
            return
        run = cmd
        if self.validate_steps and capability in STANDARD_CAPABILITIES:
            try:
                params = validate_params(capability, cmd.params)
            except StepError as exc:
                if self._replay(cid):
                    return
                error = f"invalid params: {exc}"
                ledger.record_failure(cid, capability, cmd.params, error)
                self._send(Result(command_id=cid, status="failed", error=error))
                return
            if params != cmd.params:
                run = cmd.model_copy(update={"params": params})
        # admitted: from here the id is in self._tasks (duplicates are acked as running). The
        # begin is queued now and committed at the end of this burst of frames (on_batch);
        # the task awaits that commit before execute() may run
        assert self._commits is not None
        begun = self._commits.submit(("begin", cid, capability, run.params))
        self._tasks[cid] = self._loop.create_task(self._run(run, begun))

    def _replay(self, cid: str) -> bool:
        """Answer a command id the ledger already knows (True), or return False if it is new."""
        assert self.ledger is not None
        entry = self.ledger.get(cid)
        if entry is None:
            return False
        if entry.state == "running":
            self._send(Ack(command_id=cid, duplicate=True, state="running"))
        else:
            self._send(
                Result(
                    command_id=cid,
                    status=entry.state,  # type: ignore[arg-type]
                    result=entry.result,
                    error=entry.error,
                    replay=True,
                )
            )
        return True

    async def _run(self, cmd: Command, begun: asyncio.Future[bool]) -> None:
        """Execute once, under the deadline; store the outcome, then send it.

        The Ack goes out only if the command is still running ``ack_after_s`` after admission:
        a step that finishes sooner is answered by its Result alone (one frame fewer per
        command, which is what makes thousands of short commands per second possible).
        """
        ledger = self.ledger
        assert ledger is not None
        cid = cmd.command_id

        async def progress(fraction: float, message: str = "") -> None:
            frac = min(1.0, max(0.0, float(fraction)))
            self._send(Progress(command_id=cid, fraction=frac, message=str(message)[:2000]))

        status: Literal["succeeded", "failed", "expired"]
        payload: dict[str, Any] | None = None
        text: str | None = None
        error: str | None = None
        commits = self._commits
        assert commits is not None
        try:
            # usually already committed (on_batch), then this does not suspend; no shield
            # needed: a cancelled wait leaves the queued insert to commit anyway
            fresh = await begun
        except asyncio.CancelledError:
            # shut down before execute() started: the queued insert still commits, so close
            # the row truthfully instead of leaving it to look interrupted
            commits.submit(("finish", cid, "failed", None,
                            "cancelled before execution started: driver shut down"))
            self._tasks.pop(cid, None)
            raise
        except Exception as exc:  # noqa: BLE001 - cannot record it: must not execute it
            self._tasks.pop(cid, None)
            self.log.error("ledger write failed for %s: %s", cid, exc)
            self._send(Error(code="internal", detail=f"ledger write failed: {exc}",
                             command_id=cid))
            return
        if not fresh:
            # the ledger already knew the id (finished in an earlier process or moments ago):
            # answer from the stored row, never execute again
            self._tasks.pop(cid, None)
            self._replay(cid)
            return
        self.executions += 1
        deadline: asyncio.Timeout | None = None
        start = self._loop.time()
        try:
            try:
                # the first step of execute() runs right here, inside this task: a step that
                # returns without waiting for anything needs no deadline timer and no ack timer
                coro = self.execute(cmd, progress)
                try:
                    first = coro.send(None)
                except StopIteration as finished:
                    out = finished.value
                else:
                    # it waits: from here under the deadline (counted from the start), and acked
                    # if still running ack_after_s from now
                    acks = self._ack_later(cid)
                    deadline = asyncio.timeout_at(start + cmd.deadline_s)
                    try:
                        async with deadline:
                            out = await _resume(coro, first)
                    finally:
                        acks.done(cid)
                if self.validate_steps:
                    out = validate_result(cmd.capability, out)
                elif not isinstance(out, dict):
                    raise StepError(f"result must be a dict, got {type(out).__name__}")
                # the serialisability check is also the ledger's copy and the wire's (encoded
                # once)
                text = _dumps(out)
                status, payload = "succeeded", out
            except TimeoutError as exc:
                if deadline is None or not deadline.expired():  # the instrument's own timeout
                    status, error = "failed", f"driver error: TimeoutError: {exc}"
                else:
                    status = "expired"
                    error = (f"expired: deadline of {cmd.deadline_s:g} s exceeded; execution "
                             "was cancelled, instrument state must be checked")
            except InstrumentError as exc:
                status, error = "failed", exc.reason or type(exc).__name__
            except StepError as exc:
                status, error = "failed", f"driver returned an invalid result: {exc}"
            except (TypeError, ValueError) as exc:
                status, error = "failed", f"driver returned an unserialisable result: {exc}"
            except asyncio.CancelledError:
                ledger.finish(cid, "failed", error=CANCELLED)
                raise
            except Exception as exc:  # noqa: BLE001 - a driver bug is a failed command, not a crash
                self.log.exception("execute(%s) raised", cid)
                status, error = "failed", f"driver error: {type(exc).__name__}: {exc}"[:4000]
        except BaseException:
            self._tasks.pop(cid, None)
            raise
        # the Result leaves only after the outcome is committed; the id stays in self._tasks
        # until then (a duplicate meanwhile is acked as running). The task ends here: the
        # commit callback sends, no wake-up of this task is needed.
        commits.submit_then(
            ("finish", cid, status, text, error),
            lambda _changed, exc: self._finished(cid, status, payload, text, error, exc))

    def _finished(self, cid: str, status: Literal["succeeded", "failed", "expired"],
                  payload: dict[str, Any] | None, text: str | None, error: str | None,
                  failure: Exception | None) -> None:
        """Commit callback of a command's outcome: report it (only now that it is stored)."""
        self._tasks.pop(cid, None)
        if failure is not None:
            self.log.error("ledger write of the outcome of %s failed: %s", cid, failure)
            self._send(Error(code="internal", detail=f"ledger write failed: {failure}"[:4000],
                             command_id=cid))
            return
        if status == "succeeded" and text is not None:
            # the frame ``encode(Result(...))`` would give, from the JSON text already made
            # for the ledger (a large result is not validated and encoded a second time);
            # ``cid`` is a canonical UUID, so it needs no escaping
            self._send_frame(_SUCCEEDED_HEAD + cid.encode() + _SUCCEEDED_MID + text.encode()
                             + _SUCCEEDED_TAIL)
            return
        self._send(Result(command_id=cid, status=status, result=payload, error=error))

    def _ack_later(self, cid: str) -> _AckBatch:
        """Ack ``cid`` if it is still running ``ack_after_s`` from now. Commands started in the
        same short window share one timer (fired 1.5 x ``ack_after_s`` after the window opened,
        so each is acked between 1x and 1.5x ``ack_after_s`` after its start): one timer per
        burst instead of one per command. The timer is cancelled when every command of its
        batch has finished — an idle driver is not woken up for nothing."""
        loop = self._loop
        assert loop is not None
        now = loop.time()
        batch = self._ack_batch
        if batch is None or now - batch.opened > self.ack_after_s / 2:
            batch = self._ack_batch = _AckBatch(now)
            batch.timer = loop.call_at(now + 1.5 * self.ack_after_s, self._ack_if_running, batch)
        batch.cids.append(cid)
        batch.running += 1
        return batch

    def _ack_if_running(self, batch: _AckBatch) -> None:
        """Timer callback: ack the commands of one batch that are still executing."""
        if self._ack_batch is batch:
            self._ack_batch = None
        batch.timer = None
        if batch.running <= 0:
            return
        tasks = self._tasks
        for cid in batch.cids:
            if cid in tasks and cid not in batch.finished:
                self._send(Ack(command_id=cid))

    async def _shutdown(self) -> None:
        """Graceful stop: refuse new commands, let running ones finish (up to ``drain_s``),
        cancel the rest (recorded as failed/cancelled), say goodbye."""
        self._draining = True
        if self._tasks:
            self.log.info("draining %d running command(s)", len(self._tasks))
            _, still = await asyncio.wait(list(self._tasks.values()), timeout=self.drain_s)
            cancelled = [cid for cid, task in self._tasks.items() if task in still]
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=2.0)
            assert self.ledger is not None and self._commits is not None
            self._commits.flush_now()
            for cid in cancelled:
                entry = self.ledger.get(cid)
                if entry is not None and entry.state == "running" and cid in self._tasks:
                    # cancelled before its task first ran: execute() never started
                    self._tasks.pop(cid, None)
                    self.ledger.finish(cid, "failed",
                                       error="cancelled before execution started: driver shut down")
                    entry = self.ledger.get(cid)
                if entry is not None and entry.state != "running":
                    self._send(Result(command_id=cid, status=entry.state,  # type: ignore[arg-type]
                                            result=entry.result, error=entry.error))
        self._send(Goodbye(reason="driver stopped"))
        if self._link is not None and not self._link.closed:
            await asyncio.sleep(0.05)  # let the goodbye leave before the socket closes
            self._link.close(linger=200)
        self._link = None
