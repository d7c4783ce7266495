"""Conformance kit: the standard checks every driver must pass before it touches a campaign.

``synthloop driver check MODULE:CLASS`` (or ``python -m drivers check MODULE:CLASS``) starts a
real :class:`~drivers.Dispatcher` on an ipc (or tcp loopback) socket, serves the driver class
in-process against it and runs:

registration · heartbeat · one command per declared capability (results validated against
:mod:`drivers.steps`) · capacity (more concurrent commands than slots) · duplicate replay ·
duplicate replay across a driver restart (new instance, same identity and ledger) · an
unsupported capability · malformed frames (each answered with an Error, driver keeps working) ·
deadline expiry · graceful shutdown (goodbye, in time).

With ``--hosted`` the driver is served the way a multi-instrument lab PC serves it: by a
:class:`~drivers.host.DriverHost` together with a sibling instance of the same class, over one
shared host ledger; the restart check restarts the whole host, and one more check ("hosted
isolation") sees the sibling registered on its own and still working after the instance under
test was sent malformed frames.

With ``--bind ENDPOINT`` it instead binds there and checks an already running driver process
that connects to it (restart and shutdown checks are then skipped: they need to own the
process).

Params per capability: :func:`drivers.steps.example_params` for the standard steps; a driver
with other capabilities declares ``conformance_params = {"cap": {...}}`` on its class.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dispatcher import Dispatcher
from .host import DriverHost
from .protocol import PROTOCOL_VERSION, Command
from .runner import TargetError, build_driver, load_target, parse_options
from .sdk import Driver
from .steps import STANDARD_CAPABILITIES, StepError, example_params, validate_result


@dataclass
class CheckResult:
    name: str
    passed: bool | None  # None: skipped
    detail: str
    seconds: float = 0.0


@dataclass
class ConformanceReport:
    """Outcome of one kit run; ``passed`` is true when no check failed (skips allowed)."""

    target: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed is not False for c in self.checks)

    def format(self) -> str:
        lines = [f"conformance of {self.target} (protocol v{PROTOCOL_VERSION})"]
        for c in self.checks:
            mark = {True: "PASS", False: "FAIL", None: "SKIP"}[c.passed]
            lines.append(f"  {mark}  {c.name:<28} {c.seconds:6.2f} s  {c.detail}")
        failed = sum(c.passed is False for c in self.checks)
        lines.append("result: " + ("PASSED" if self.passed else f"FAILED ({failed} check(s))"))
        return "\n".join(lines)


class _CheckFailed(AssertionError):
    pass


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise _CheckFailed(message)


def params_for(target: Any, capability: str, sample_id: str) -> dict[str, Any]:
    """Params the kit sends for ``capability`` (class ``conformance_params`` win)."""
    custom = getattr(target, "conformance_params", None) or {}
    if capability in custom:
        return dict(custom[capability])
    if capability in STANDARD_CAPABILITIES:
        return example_params(capability, sample_id)
    raise _CheckFailed(
        f"non-standard capability {capability!r}: declare conformance_params[{capability!r}] "
        "on the driver class"
    )


class _Kit:
    def __init__(self, target: Callable[..., Driver], spec: str, options: dict[str, Any],
                 workdir: Path, transport: str, heartbeat_s: float, deadline_s: float,
                 bind: str | None, hosted: bool = False) -> None:
        if hosted and bind is not None:
            raise ValueError("--hosted serves the driver in-process; it cannot be combined "
                             "with --bind")
        self.target = target
        self.hosted = hosted
        self.sibling = "conformance-sibling"
        self.report = ConformanceReport(spec)
        self.options = options
        self.workdir = workdir
        self.transport = transport
        self.heartbeat_s = heartbeat_s
        self.deadline_s = deadline_s
        self.bind = bind
        self.identity = "conformance-driver"
        self.ledger = workdir / "conformance-ledger.sqlite"
        self.dispatcher: Dispatcher | None = None
        self.driver: Driver | None = None
        self.stop: asyncio.Event | None = None
        self.serve_task: asyncio.Task[None] | None = None
        self.capabilities: tuple[str, ...] = tuple(getattr(target, "capabilities", ()))
        self.samples = 0

    def sample(self) -> str:
        self.samples += 1
        return f"S-conf-{self.samples}"

    async def check(self, name: str, fn: Callable[[], Awaitable[str]]) -> bool:
        t0 = time.perf_counter()
        try:
            detail = await fn()
            ok: bool | None = True
        except _CheckFailed as exc:
            ok, detail = False, str(exc)
        except TimeoutError as exc:
            ok, detail = False, f"timed out: {exc}"
        except Exception as exc:  # noqa: BLE001 - report, do not crash the kit
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.report.checks.append(CheckResult(name, ok, detail, time.perf_counter() - t0))
        return bool(ok)

    def skip(self, name: str, why: str) -> None:
        self.report.checks.append(CheckResult(name, None, why))

    def new_driver(self, identity: str | None = None) -> Driver:
        opts = dict(self.options)
        opts.setdefault("heartbeat_s", self.heartbeat_s)
        ident = identity or self.identity
        path = self.ledger if ident == self.identity else self.workdir / f"{ident}.sqlite"
        return build_driver(self.target, ident, path, opts)

    async def start_driver(self) -> None:
        assert self.dispatcher is not None
        self.driver = self.new_driver()
        self.stop = asyncio.Event()
        if self.hosted:
            host = DriverHost([self.driver, self.new_driver(self.sibling)],
                              ledger=self.workdir / "conformance-host.sqlite")
            serving = host.serve(self.dispatcher.endpoint, stop=self.stop)
        else:
            serving = self.driver.serve(self.dispatcher.endpoint, stop=self.stop)
        self.serve_task = asyncio.get_running_loop().create_task(serving)

    async def stop_driver(self, timeout: float) -> float:
        assert self.stop is not None and self.serve_task is not None
        t0 = time.perf_counter()
        self.stop.set()
        await asyncio.wait_for(asyncio.shield(self.serve_task), timeout)
        return time.perf_counter() - t0

    async def submit(self, capability: str, *, deadline_s: float | None = None,
                     command: Command | None = None, pin: str | None = None):
        assert self.dispatcher is not None
        if pin is None and self.hosted:
            pin = self.identity  # the sibling must not take the commands under test
        sample = self.sample()
        cmd = command or Command(
            capability=capability,
            params=params_for(self.target, capability, sample),
            deadline_s=deadline_s or self.deadline_s,
            sample_ids=[sample],
        )
        outcome = await asyncio.wait_for(
            self.dispatcher.submit(cmd, driver=pin), cmd.deadline_s + 10 * self.heartbeat_s + 5
        )
        return cmd, outcome

    # ---- the checks ---------------------------------------------------------------------
    async def c_registration(self) -> str:
        assert self.dispatcher is not None
        if self.bind is None:
            await self.start_driver()
        loop = asyncio.get_running_loop()
        end = loop.time() + 15.0

        def registered() -> list[Any]:
            return [d for d in self.dispatcher.drivers()
                    if d.alive and (self.bind is not None or d.identity == self.identity)]

        while not registered():
            _require(loop.time() < end, "no driver registered within 15 s")
            await asyncio.sleep(0.02)
        info = registered()[0]
        if self.bind is not None:
            self.identity = info.identity
            self.capabilities = info.capabilities
        else:
            _require(info.identity == self.identity,
                     f"registered as {info.identity!r}, expected {self.identity!r}")
            _require(tuple(info.capabilities) == self.capabilities,
                     f"registered capabilities {info.capabilities} != class {self.capabilities}")
            _require(info.capacity == getattr(self.target, "capacity", 1),
                     f"registered capacity {info.capacity} != class capacity")
        return f"{info.identity}: {', '.join(info.capabilities)} x{info.capacity} ({info.version})"

    async def c_heartbeat(self) -> str:
        assert self.dispatcher is not None
        drv = self.dispatcher._drivers[self.identity]
        before = drv.heartbeats
        await asyncio.sleep(3.5 * self.heartbeat_s)
        got = drv.heartbeats - before
        _require(drv.alive, "driver declared lost while idle")
        _require(got >= 2, f"only {got} heartbeat(s) in {3.5 * self.heartbeat_s:.2f} s")
        return f"{got} heartbeats in {3.5 * self.heartbeat_s:.2f} s"

    async def c_capability(self, capability: str) -> str:
        cmd, out = await self.submit(capability)
        _require(out.status == "succeeded", f"status {out.status}: {out.error}")
        _require(out.result is not None, "succeeded without a result payload")
        try:
            validate_result(capability, out.result)
        except StepError as exc:
            raise _CheckFailed(f"result does not match the step schema: {exc}") from None
        self.last = (capability, cmd, out)
        return f"succeeded; result keys {sorted(out.result)}"

    async def c_capacity(self) -> str:
        cap = self.capabilities[0]
        slots = max(1, int(getattr(self.target, "capacity", 1)))
        n = slots + 1
        outs = await asyncio.gather(*[self.submit(cap) for _ in range(n)])
        bad = [o for _, o in outs if o.status != "succeeded"]
        _require(not bad, f"{len(bad)} of {n} concurrent commands not succeeded: "
                 f"{bad[0].status} {bad[0].error}" if bad else "")
        return f"{n} concurrent {cap!r} commands on {slots} slot(s) all succeeded"

    def executions(self) -> int | None:
        return self.driver.executions if self.driver is not None else None

    async def c_duplicate(self) -> str:
        cap, cmd, first = self.last
        before = self.executions()
        _, again = await self.submit(cap, command=cmd)
        _require(again.status == first.status and again.result == first.result,
                 f"replay differs: {again.status} {again.result!r} vs {first.result!r}")
        if before is None:
            return "same result (execution count not observable: driver runs elsewhere)"
        _require(self.executions() == before,
                 f"execute() ran again for a duplicate ({before} -> {self.executions()})")
        return "same result, execute() not called again"

    async def c_restart(self) -> str:
        cap, cmd, first = self.last
        await self.stop_driver(30.0)
        await self.start_driver()
        assert self.dispatcher is not None
        await self.dispatcher.wait_for(set(self.capabilities), 15.0)
        _, again = await self.submit(cap, command=cmd)
        _require(again.status == first.status and again.result == first.result,
                 f"replay after restart differs: {again.status} {again.error}")
        _require(self.executions() == 0,
                 f"restarted driver executed the duplicate ({self.executions()} calls)")
        return "restarted instance answered from its ledger without executing"

    async def c_unsupported(self) -> str:
        cmd = Command(capability="no-such-capability-xyz", params={}, deadline_s=5.0)
        _, out = await self.submit("x", command=cmd, pin=self.identity)
        _require(out.status == "failed" and out.error is not None and "unsupported" in out.error,
                 f"expected failed/unsupported, got {out.status}: {out.error}")
        return out.error[:80]

    async def c_malformed(self) -> str:
        assert self.dispatcher is not None
        frames = [
            [b"not json at all \xff"],
            [b'{"v": 999, "type": "command"}'],
            [b'{"v": 1, "type": "command", "command_id": "not-a-uuid", "capability": "heat",'
             b' "deadline_s": 5}'],
            [b'{"v": 1, "type": "teleport"}'],
            [b"[]"],
            [b"part one", b"part two"],
        ]
        before = sum(1 for ident, _ in self.dispatcher.errors if ident == self.identity)
        for f in frames:
            await self.dispatcher.send_raw(self.identity, f)
        loop = asyncio.get_running_loop()
        end = loop.time() + 5.0
        while True:
            got = sum(1 for ident, _ in self.dispatcher.errors if ident == self.identity) - before
            if got >= len(frames):
                break
            _require(loop.time() < end, f"{got} error replies to {len(frames)} malformed frames")
            await asyncio.sleep(0.02)
        _, out = await self.submit(self.capabilities[0])
        _require(out.status == "succeeded", f"driver unusable after malformed frames: {out.error}")
        return f"{len(frames)} malformed frames each answered with an Error; driver still works"

    async def c_hosted(self) -> str:
        assert self.dispatcher is not None
        await self.dispatcher.wait_for(set(self.capabilities), 15.0)
        infos = {d.identity: d for d in self.dispatcher.drivers() if d.alive}
        _require(self.sibling in infos and self.identity in infos,
                 f"expected both hosted instances registered, got {sorted(infos)}")
        _require(infos[self.sibling].capacity == infos[self.identity].capacity,
                 "sibling registered another capacity")
        sample = self.sample()
        cmd = Command(capability=self.capabilities[0],
                      params=params_for(self.target, self.capabilities[0], sample),
                      deadline_s=self.deadline_s, sample_ids=[sample])
        _, out = await self.submit(cmd.capability, command=cmd, pin=self.sibling)
        _require(out.status == "succeeded" and out.driver == self.sibling,
                 f"sibling instance: {out.status} from {out.driver}: {out.error}")
        return "sibling instance registered on its own and served a command"

    async def c_deadline(self) -> str:
        assert self.dispatcher is not None
        cap = self.capabilities[0]
        tiny = 0.001
        t0 = time.perf_counter()
        _, out = await self.submit(cap, deadline_s=tiny)
        took = time.perf_counter() - t0
        limit = tiny + self.dispatcher.grace_s + 2.0
        _require(took <= limit, f"outcome after {took:.2f} s, later than deadline+grace")
        _require(out.status in ("expired", "succeeded"),
                 f"a {tiny} s deadline gave {out.status}: {out.error}")
        _, after = await self.submit(cap)
        _require(after.status == "succeeded", f"driver unusable after expiry: {after.error}")
        return f"{out.status} after {took:.2f} s; driver still works"

    async def c_shutdown(self) -> str:
        assert self.dispatcher is not None
        took = await self.stop_driver(15.0)
        loop = asyncio.get_running_loop()
        end = loop.time() + 2.0
        while any(d.alive for d in self.dispatcher.drivers() if d.identity == self.identity):
            _require(loop.time() < end, "controller still sees the driver alive after stop "
                     "(no goodbye)")
            await asyncio.sleep(0.02)
        return f"stopped in {took:.2f} s and said goodbye"

    async def run(self) -> ConformanceReport:
        bind = self.bind or (
            f"ipc://{self.workdir}/conformance.sock" if self.transport == "ipc"
            else "tcp://127.0.0.1:*"
        )
        self.dispatcher = Dispatcher(bind, heartbeat_s=self.heartbeat_s, lost_after=5)
        await self.dispatcher.start()
        try:
            if not await self.check("registration", self.c_registration):
                return self.report
            await self.check("heartbeat", self.c_heartbeat)
            ok_caps = []
            for cap in self.capabilities:
                if await self.check(f"capability {cap}", lambda c=cap: self.c_capability(c)):
                    ok_caps.append(cap)
            if not ok_caps:
                return self.report
            await self.check("capacity", self.c_capacity)
            await self.check("duplicate replay", self.c_duplicate)
            if self.bind is None:
                await self.check("replay across restart", self.c_restart)
            else:
                self.skip("replay across restart", "driver process not owned by the kit")
            await self.check("unsupported capability", self.c_unsupported)
            await self.check("malformed messages", self.c_malformed)
            if self.hosted:
                await self.check("hosted isolation", self.c_hosted)
            await self.check("deadline expiry", self.c_deadline)
            if self.bind is None:
                await self.check("graceful shutdown", self.c_shutdown)
            else:
                self.skip("graceful shutdown", "driver process not owned by the kit")
            return self.report
        finally:
            if self.stop is not None and self.serve_task is not None:
                self.stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.serve_task, 15.0)
            await self.dispatcher.close()


async def check_driver_async(
    target: str | Callable[..., Driver],
    *,
    options: dict[str, Any] | None = None,
    workdir: str | Path | None = None,
    transport: str = "ipc",
    heartbeat_s: float = 0.2,
    deadline_s: float = 30.0,
    bind: str | None = None,
    hosted: bool = False,
) -> ConformanceReport:
    """Run the kit against a driver class (``MODULE:CLASS`` or the class itself); ``hosted``
    serves it in a :class:`~drivers.host.DriverHost` with a sibling instance."""
    spec = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
    loaded = load_target(target) if isinstance(target, str) else target
    if transport not in ("ipc", "tcp"):
        raise ValueError(f"transport must be 'ipc' or 'tcp', got {transport!r}")
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="synthloop-conf-"))
        kit = _Kit(loaded, spec, dict(options or {}), Path(workdir), transport, heartbeat_s,
                   deadline_s, bind, hosted)
        return await kit.run()


def check_driver(target: str | Callable[..., Driver], **kwargs: Any) -> ConformanceReport:
    """Blocking wrapper of :func:`check_driver_async`."""
    return asyncio.run(check_driver_async(target, **kwargs))


def check_main(argv: list[str] | None = None) -> int:
    """``python -m drivers check MODULE:CLASS [--option k=v] [--transport tcp] [--bind EP]
    [--hosted]``."""
    p = argparse.ArgumentParser(prog="python -m drivers check")
    p.add_argument("target")
    p.add_argument("--option", action="append", default=[])
    p.add_argument("--transport", choices=["ipc", "tcp"], default="ipc")
    p.add_argument("--bind", default=None)
    p.add_argument("--hosted", action="store_true",
                   help="serve the driver in a host process with a sibling instance")
    p.add_argument("--heartbeat", type=float, default=0.2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    try:
        report = check_driver(args.target, options=parse_options(args.option),
                              transport=args.transport, bind=args.bind,
                              hosted=args.hosted, heartbeat_s=args.heartbeat)
    except (TargetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.passed else 1
