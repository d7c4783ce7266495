"""A driver host's instances over ONE connection (docs/protocol.md, "Envelope"): routing by the
identity frame, the per-socket mode kept, a foreign peer speaking the envelope, and an
instance's re-registration over the same connection after a controller restart."""

from __future__ import annotations

import asyncio
import collections
import sys
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from drivers import Command, Dispatcher, DriverHost, Error, Register, Result, decode, encode

sys.path.insert(0, str(Path(__file__).parent))
from drivers_lab import HB, arun, hosted_lab  # noqa: E402
from test_drivers_host import Echo, echo  # noqa: E402
from test_drivers_processes import (  # noqa: E402,F401 - procs: the fixture
    Procs,
    endpoint_for,
    heat,
    procs,
    until,
)


@pytest.mark.parametrize("shared", [True, False])
def test_hosted_instances_route_over_one_connection_or_their_own(tmp_path: Path,
                                                                 shared: bool) -> None:
    calls: collections.Counter[str] = collections.Counter()
    drivers = [Echo(f"echo-{i}", tmp_path / f"e{i}.sqlite", calls=calls) for i in range(3)]

    async def body() -> tuple[list[Any], dict[str, str | None]]:
        async with hosted_lab(drivers, tmp_path / "host.sqlite", share_connection=shared) as (
                d, _):
            outs = [await d.submit(echo(i), driver=f"echo-{i}") for i in range(3)]
            return outs, {info.identity: info.via for info in d.drivers()}

    outs, via = arun(body())
    assert [o.result["by"] for o in outs] == ["echo-0", "echo-1", "echo-2"]
    assert all(o.status == "succeeded" for o in outs) and sum(calls.values()) == 3
    if shared:
        routes = set(via.values())
        assert len(routes) == 1 and next(iter(routes)).startswith("host:")
    else:
        assert set(via.values()) == {None}


async def _raw_peer(endpoint: str, routing_id: bytes = b"host:raw-peer",
                    ) -> tuple[zmq.asyncio.Context, zmq.asyncio.Socket]:
    """A hand-driven DEALER (its own context) speaking to the dispatcher at ``endpoint``."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, routing_id)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return ctx, sock


async def _recv_for(sock: zmq.asyncio.Socket, want: type, timeout: float = 5.0) -> list[bytes]:
    """The next message of type ``want`` (the dispatcher's heartbeats are skipped)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        frames = await asyncio.wait_for(sock.recv_multipart(), max(0.01, end - loop.time()))
        if isinstance(decode(frames[-1]), want):
            return frames


def _command_pair(frames: list[bytes]) -> tuple[bytes, bytes]:
    """The ``[identity, payload]`` pair carrying the command: one multipart message may hold
    several pairs (a heartbeat of the same turn rides along when the dispatcher's loop ran late)."""
    return next((i, p) for i, p in zip(frames[0::2], frames[1::2], strict=True)
                if isinstance(decode(p), Command))


def test_a_foreign_peer_speaking_the_envelope_serves_two_identities() -> None:
    """What another language's host implementation sees on the wire: every message to an
    instance arrives as [identity, payload]; answering the same way resolves the command."""

    async def body() -> None:
        async with Dispatcher(heartbeat_s=HB, lost_after=40) as d:
            ctx, sock = await _raw_peer(d.endpoint)
            try:
                for ident in ("furnace-a", "furnace-b"):
                    reg = Register(identity=ident, capabilities=["echo"], capacity=1, version="x")
                    await sock.send_multipart([ident.encode(), encode(reg)])
                await d.wait_for({"echo"}, 5)
                while len(d.drivers()) < 2:
                    await asyncio.sleep(0.01)
                cmd = Command(capability="echo", params={"i": 1}, deadline_s=5)
                pending = asyncio.ensure_future(d.submit(cmd, driver="furnace-b"))
                ident, payload = _command_pair(await _recv_for(sock, Command))
                assert ident == b"furnace-b" and decode(payload).command_id == cmd.command_id
                await sock.send_multipart([ident, encode(Result(
                    command_id=cmd.command_id, status="succeeded", result={"ok": True}))])
                out = await asyncio.wait_for(pending, 5)
                assert out.status == "succeeded" and out.driver == "furnace-b"
                assert {i.via for i in d.drivers()} == {"host:raw-peer"}
            finally:
                ctx.destroy(linger=0)

    arun(body())


def test_a_restarted_hosts_old_connection_is_forgotten_once_all_its_identities_moved(
) -> None:
    """A host restart is a new connection (new routing id): the dispatcher stops treating the
    old one as shared when its last identity has re-registered over the new one, and routes
    commands over the new one."""

    async def body() -> None:
        async with Dispatcher(heartbeat_s=HB, lost_after=40) as d:
            ctx_old, old = await _raw_peer(d.endpoint, b"host:old")
            ctx_new, new = await _raw_peer(d.endpoint, b"host:new")
            try:

                async def register(sock: zmq.asyncio.Socket, ident: str) -> None:
                    reg = Register(identity=ident, capabilities=["echo"], capacity=1,
                                   version="x")
                    await sock.send_multipart([ident.encode(), encode(reg)])
                    via = sock.IDENTITY.decode()
                    await until(lambda: any(i.identity == ident and i.via == via
                                            for i in d.drivers()), 5, f"{ident} via {via}")

                for ident in ("furnace-a", "furnace-b"):
                    await register(old, ident)
                assert d._shared_routes == {b"host:old"}
                await register(new, "furnace-a")
                assert d._shared_routes == {b"host:old", b"host:new"}  # furnace-b still there
                await register(new, "furnace-b")
                assert d._shared_routes == {b"host:new"}
                cmd = Command(capability="echo", params={"i": 1}, deadline_s=5)
                pending = asyncio.ensure_future(d.submit(cmd, driver="furnace-b"))
                ident, payload = _command_pair(await _recv_for(new, Command))
                assert ident == b"furnace-b" and decode(payload).command_id == cmd.command_id
                await new.send_multipart([ident, encode(Result(
                    command_id=cmd.command_id, status="succeeded", result={"ok": True}))])
                assert (await asyncio.wait_for(pending, 5)).status == "succeeded"
            finally:
                ctx_old.destroy(linger=0)
                ctx_new.destroy(linger=0)

    arun(body())


def test_envelope_mistakes_are_answered_not_registered() -> None:
    """A Register naming another identity than its envelope is refused; an unregistered
    identity behind a connection is told to register; three parts from a driver registered on
    its own socket are a malformed frame set — each answered with an Error, nothing routed."""

    async def body() -> None:
        async with Dispatcher(heartbeat_s=HB, lost_after=40) as d:
            ctx, sock = await _raw_peer(d.endpoint)
            try:
                reg = Register(identity="other", capabilities=["echo"], capacity=1, version="x")
                await sock.send_multipart([b"claimed", encode(reg)])
                frames = await _recv_for(sock, Error)
                assert frames[0] == b"claimed" and "names identity 'other'" in decode(
                    frames[-1]).detail
                # an unregistered instance behind a connection is told to register
                await sock.send_multipart([b"ghost", b'{"v":1,"type":"heartbeat"}'])
                frames = await _recv_for(sock, Error)
                assert frames[0] == b"ghost" and decode(frames[-1]).code == "unregistered"
                # a driver registered on its own socket: three parts are a malformed frame set
                ctx2, own = await _raw_peer(d.endpoint, b"plain-driver")
                try:
                    await own.send(encode(Register(identity="plain-driver", capabilities=["x"],
                                                   capacity=1, version="x")))
                    await own.send_multipart([b"x", b'{"v":1,"type":"heartbeat"}'])
                    frames = await _recv_for(own, Error)
                    assert len(frames) == 1
                    assert "expected 1 frame, got 2" in decode(frames[-1]).detail
                finally:
                    ctx2.destroy(linger=0)
                assert [i.identity for i in d.drivers()] == ["plain-driver"]
            finally:
                ctx.destroy(linger=0)

    arun(body())


def test_a_restarted_controller_gets_every_instance_back_at_its_next_heartbeat(
        tmp_path: Path) -> None:
    """As with a socket of its own: the new controller answers an unknown instance's heartbeat
    with ``unregistered`` and it registers at once — long before it would notice the silence
    (``lost_after`` heartbeats, 10 s here)."""
    drivers = [Echo(f"echo-{i}", tmp_path / f"e{i}.sqlite", heartbeat_s=HB, lost_after=200)
               for i in range(3)]
    endpoint = endpoint_for("tcp")  # a free port both controllers bind in turn

    async def body() -> None:
        async with hosted_lab(drivers, tmp_path / "host.sqlite", bind=endpoint) as (d, _):
            await d.close()
            d2 = Dispatcher(endpoint, heartbeat_s=HB, lost_after=10)
            await d2.start()
            try:
                await until(lambda: {i.identity for i in d2.drivers() if i.alive}
                            == {"echo-0", "echo-1", "echo-2"}, 3, "re-registration of 3 instances")
                out = await d2.submit(echo(1), driver="echo-2")
                assert out.status == "succeeded"
            finally:
                await d2.close()

    arun(body(), timeout=40)


def test_instances_re_register_over_the_same_connection_after_a_controller_restart(
        tmp_path: Path) -> None:
    """The shared connection is never rebuilt: after the controller goes away and a new one
    binds the same endpoint, ZeroMQ reconnects it and each instance, finding the controller
    silent, registers again over it — and a command finished before is answered from the
    ledger, not executed again."""
    calls: collections.Counter[str] = collections.Counter()
    drivers = [Echo(f"echo-{i}", tmp_path / f"e{i}.sqlite", calls=calls, heartbeat_s=HB,
                    lost_after=4, backoff_s=(0.05, 0.2)) for i in range(2)]
    endpoint = endpoint_for("tcp")  # a free port both controllers bind in turn
    cmd = echo(5)

    async def body() -> None:
        async with hosted_lab(drivers, tmp_path / "host.sqlite", bind=endpoint) as (d, _):
            first = await d.submit(cmd, driver="echo-1")
            route = {i.via for i in d.drivers()}
            await d.close()
            await asyncio.sleep(6 * HB)  # silent for longer than lost_after heartbeats
            d2 = Dispatcher(endpoint, heartbeat_s=HB, lost_after=10)
            await d2.start()
            try:
                await until(lambda: {i.identity for i in d2.drivers() if i.alive}
                            == {"echo-0", "echo-1"}, 10, "re-registration of 2 instances")
                assert {i.via for i in d2.drivers()} == route  # the same connection
                again = await d2.submit(cmd, driver="echo-1")
                assert again.status == "succeeded" and again.result == first.result
                assert calls[cmd.command_id] == 1
                assert all(drv.sessions >= 2 for drv in drivers)
            finally:
                await d2.close()

    arun(body(), timeout=40)


def test_one_message_carries_several_identities_both_ways() -> None:
    """Batching on the wire: registrations and results sent as one multipart message of
    (identity, payload) pairs are handled in order, and commands the dispatcher sends in one
    loop turn to two instances of one connection arrive as one message."""

    async def body() -> None:
        async with Dispatcher(heartbeat_s=1.0, lost_after=40) as d:
            ctx, sock = await _raw_peer(d.endpoint)
            try:
                regs = []
                for ident in ("a", "b"):
                    regs += [ident.encode(), encode(Register(
                        identity=ident, capabilities=["echo"], capacity=1, version="x"))]
                await sock.send_multipart(regs)
                await until(lambda: len(d.drivers()) >= 2, 5, "both registrations")
                cmds = {i: Command(capability="echo", params={}, deadline_s=5) for i in "ab"}
                pending = [asyncio.ensure_future(d.submit(cmds[i], driver=i)) for i in "ab"]
                got = await _recv_for(sock, Command)
                # (a heartbeat of the same turn may ride along: keep the command pairs)
                pairs = [(i, p) for i, p in zip(got[0::2], got[1::2], strict=True)
                         if isinstance(decode(p), Command)]
                frames = [part for pair in pairs for part in pair]
                assert len(frames) == 4 and frames[0::2] == [b"a", b"b"]
                assert [decode(p).command_id for p in frames[1::2]] == [
                    cmds["a"].command_id, cmds["b"].command_id]
                answer = []
                for ident, payload in zip(frames[0::2], frames[1::2], strict=True):
                    answer += [ident, encode(Result(command_id=decode(payload).command_id,
                                                    status="succeeded", result={"by": ident.decode()}))]
                await sock.send_multipart(answer)
                outs = await asyncio.wait_for(asyncio.gather(*pending), 5)
                assert [(o.status, o.driver, o.result["by"]) for o in outs] == [
                    ("succeeded", "a", "a"), ("succeeded", "b", "b")]
            finally:
                ctx.destroy(linger=0)

    arun(body())


def test_seeded_faults_on_a_shared_connection_never_execute_twice_or_lose(
        tmp_path: Path) -> None:
    """Drop, duplicate and delay on both ends of a host's one connection (each hosted instance
    draws its own faults before its messages join the batch): every command succeeds and
    runs exactly once."""
    from drivers import FaultConfig

    calls: collections.Counter[str] = collections.Counter()
    drivers = [Echo(f"echo-{i}", tmp_path / f"e{i}.sqlite", calls=calls, heartbeat_s=HB,
                    faults=FaultConfig(seed=30 + i, drop=0.15, duplicate=0.15, delay=0.2,
                                       max_delay_s=0.03)) for i in range(3)]
    faults = FaultConfig(seed=3, drop=0.15, duplicate=0.15, delay=0.2, max_delay_s=0.03)

    async def body() -> None:
        async with hosted_lab(drivers, tmp_path / "host.sqlite", faults=faults,
                              lost_after=20) as (d, _):
            cmds = [Command(capability="echo", params={"i": i}, deadline_s=20)
                    for i in range(60)]
            outs = await asyncio.gather(*[d.submit(c) for c in cmds])
            assert [o.status for o in outs] == ["succeeded"] * 60, [o.error for o in outs]
            assert [o.result["i"] for o in outs] == list(range(60))
            assert d.injector.stats.dropped and d.injector.stats.duplicated
            assert all(drv.injector.stats.dropped for drv in drivers)
            assert d.retransmits > 0
            assert sorted(calls) == sorted(c.command_id for c in cmds)
            assert set(calls.values()) == {1}, "a command executed twice"

    arun(body(), timeout=60)


def test_curve_on_a_shared_connection_admits_only_an_allowed_host_key(tmp_path: Path) -> None:
    """With CurveZMQ on, the host's one connection carries the host's key: allowed, every
    instance registers; not allowed, none does and nothing executes."""
    from drivers import CurveConfig, generate_keys

    keys = tmp_path / "keys"
    generate_keys(keys, ["controller", "lab-pc", "intruder"], allow=["lab-pc"])

    def instances(tag: str) -> list[Echo]:
        return [Echo(f"{tag}-{i}", tmp_path / f"{tag}{i}.sqlite", heartbeat_s=HB)
                for i in range(2)]

    good, bad = instances("good"), instances("bad")

    async def body() -> None:
        d = Dispatcher(heartbeat_s=HB, curve=CurveConfig.server(keys))
        await d.start()
        stop = asyncio.Event()
        hosts = [DriverHost(good, ledger=tmp_path / "g.sqlite"),
                 DriverHost(bad, ledger=tmp_path / "b.sqlite")]
        tasks = [asyncio.create_task(hosts[0].serve(
                     d.endpoint, stop=stop, curve=CurveConfig.client(keys, "lab-pc"))),
                 asyncio.create_task(hosts[1].serve(
                     d.endpoint, stop=stop, curve=CurveConfig.client(keys, "intruder")))]
        try:
            await until(lambda: {i.identity for i in d.drivers()} == {"good-0", "good-1"}, 10,
                        "the allowed host's instances")
            out = await d.submit(echo(1), driver="good-1")
            assert out.status == "succeeded"
            await asyncio.sleep(0.3)
            assert {i.identity for i in d.drivers()} == {"good-0", "good-1"}
            assert all(drv.executions == 0 for drv in bad)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
            await d.close()

    arun(body(), timeout=40)


@pytest.mark.parametrize("flag", [[], ["--socket-per-instance"]])
def test_serve_instances_share_a_connection_unless_asked_not_to(procs: Procs,  # noqa: F811
                                                                flag: list[str]) -> None:
    endpoint = endpoint_for("ipc")

    async def body() -> None:
        d = Dispatcher(endpoint, heartbeat_s=0.1, lost_after=40)
        await d.start()
        try:
            procs.spawn(["-m", "drivers", "serve", "drivers.examples:ToyFurnace", "--instances",
                         "2", "--identity", "f", "--ledger", str(procs.tmp / "h.sqlite"),
                         "--connect", endpoint, "--heartbeat", "0.1", "--log-level", "WARNING",
                         "--option", "seconds_per_min=0.02",
                         "--option", f"actions_file={procs.tmp / 'actions.txt'}", *flag])
            await until(lambda: {i.identity for i in d.drivers() if i.alive} == {"f-1", "f-2"},
                        30, "both instances")
            via = {i.via for i in d.drivers()}
            if flag:
                assert via == {None}
            else:
                assert len(via) == 1 and next(iter(via)).startswith("host:")
            out = await d.submit(heat(dwell_min=0, sample="S1"), driver="f-2")
            assert out.status == "succeeded" and out.driver == "f-2"
        finally:
            await d.close()

    arun(body(), timeout=60)
