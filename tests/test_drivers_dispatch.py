"""Dispatcher and driver SDK over real ZeroMQ sockets in one event loop: routing, capacity,
deadlines, duplicates, malformed frames, seeded fault injection and CurveZMQ refusal."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import pytest
import zmq
import zmq.asyncio

from drivers import (
    Command,
    CurveConfig,
    Dispatcher,
    Driver,
    FaultConfig,
    InstrumentError,
    ProgressFn,
    decode,
    encode,
    example_params,
    generate_keys,
)
from drivers.examples import ToyFurnace

sys.path.insert(0, str(Path(__file__).parent))
from drivers_lab import HB, arun, lab  # noqa: E402


class Recorder(Driver):
    """Counts concurrent executions and every execute() call per command id."""

    capabilities: ClassVar[tuple[str, ...]] = ("dose_mix", "recover")
    capacity: ClassVar[int] = 2
    version: ClassVar[str] = "recorder 1"

    def __init__(self, identity: str, ledger_path: str | Path, *, hold_s: float = 0.0,
                 calls: collections.Counter | None = None, **options: Any) -> None:
        super().__init__(identity, ledger_path, **options)
        self.hold_s = hold_s
        self.calls = calls if calls is not None else collections.Counter()
        self.active = 0
        self.peak = 0

    async def execute(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        self.calls[command.command_id] += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await progress(0.5, "halfway")
            await asyncio.sleep(self.hold_s)
            p = command.params
            if command.capability == "recover":
                if p["sample_id"] == "broken":
                    raise InstrumentError("gripper jammed at station 3")
                return {"sample_id": p["sample_id"], "mass_g": 1.0, "location": "rack A1"}
            return {
                "sample_id": p["sample_id"],
                "dispensed": [{"formula": x["formula"], "mass_g": x["target_mass_g"]}
                              for x in p["precursors"]],
                "location": "mixer",
            }
        finally:
            self.active -= 1


def dose(sample: str, deadline: float = 10.0) -> Command:
    return Command(capability="dose_mix", params=example_params("dose_mix", sample),
                   deadline_s=deadline, sample_ids=[sample])


def test_routing_by_capability_and_capacity(tmp_path: Path) -> None:
    a = Recorder("rec-a", tmp_path / "a.sqlite", hold_s=0.1, heartbeat_s=HB)
    b = Recorder("rec-b", tmp_path / "b.sqlite", hold_s=0.1, heartbeat_s=HB)
    furnace = ToyFurnace("furn", tmp_path / "f.sqlite", heartbeat_s=HB)

    async def main() -> None:
        async with lab([a, b, furnace]) as d:
            info = {i.identity: i for i in d.drivers()}
            assert info["furn"].capabilities == ("heat", "read_temperature")
            assert info["rec-a"].capacity == 2
            outs = await asyncio.gather(*[d.submit(dose(f"S{i}")) for i in range(8)])
            heat = await d.submit(Command(capability="heat", params=example_params("heat"),
                                          deadline_s=10))
        assert all(o.status == "succeeded" for o in outs), outs
        assert {o.driver for o in outs} == {"rec-a", "rec-b"}  # load spread over both
        assert heat.driver == "furn" and heat.result["max_temperature_c"] == 800
        assert a.peak <= 2 and b.peak <= 2  # never above declared capacity
        assert outs[3].result["dispensed"][0] == {"formula": "Li2CO3", "mass_g": 0.37}

    arun(main())


def test_duplicate_submit_returns_stored_result_without_executing(tmp_path: Path) -> None:
    rec = Recorder("rec", tmp_path / "l.sqlite", heartbeat_s=HB)

    async def main() -> None:
        async with lab([rec]) as d:
            cmd = dose("S1")
            first, second = await asyncio.gather(d.submit(cmd), d.submit(cmd))  # joined
            third = await d.submit(cmd)  # after completion: replayed from the ledger
            assert first == second == third
            assert rec.calls[cmd.command_id] == 1
            assert (await d.query_status([cmd.command_id, "nope"])) == {
                cmd.command_id: "succeeded", "nope": "unknown"}

    arun(main())


def test_instrument_error_invalid_params_and_no_driver_are_clear_failures(tmp_path: Path) -> None:
    rec = Recorder("rec", tmp_path / "l.sqlite", heartbeat_s=HB)

    async def main() -> None:
        async with lab([rec]) as d:
            jam = await d.submit(Command(capability="recover", deadline_s=5,
                                         params={"sample_id": "broken", "grind": True}))
            assert jam.status == "failed" and jam.error == "gripper jammed at station 3"
            bad = await d.submit(Command(capability="dose_mix", deadline_s=5,
                                         params={"sample_id": "S", "precursors": []}))
            assert bad.status == "failed" and "precursors" in bad.error
            assert "invalid params" in bad.error
            assert rec.calls[bad.command_id] == 0
            none = await d.submit(Command(capability="xrd", deadline_s=0.2,
                                          params={"sample_id": "S"}))
            assert none.status == "expired"
            assert "no live driver with capability 'xrd'" in none.error

    arun(main())


def test_deadline_cancels_a_slow_step_and_reports_expired(tmp_path: Path) -> None:
    rec = Recorder("rec", tmp_path / "l.sqlite", hold_s=5.0, heartbeat_s=HB)

    async def main() -> None:
        async with lab([rec]) as d:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            out = await d.submit(dose("S1", deadline=0.3))
            assert out.status == "expired" and "deadline" in out.error
            assert loop.time() - t0 < 1.5
            replay = await d.submit(Command(**{**dose("x").model_dump(),
                                               "command_id": out.command_id}))
            assert replay.status == "expired"  # stored, not re-run
            assert rec.calls[out.command_id] == 1

    arun(main())


def test_progress_reaches_the_caller(tmp_path: Path) -> None:
    rec = Recorder("rec", tmp_path / "l.sqlite", heartbeat_s=HB)
    seen: list[tuple[float, str]] = []

    async def main() -> None:
        async with lab([rec]) as d:
            out = await d.submit(dose("S1"), on_progress=lambda cid, f, m: seen.append((f, m)))
            assert out.status == "succeeded"

    arun(main())
    assert (0.5, "halfway") in seen


def test_malformed_frames_get_error_replies_and_never_crash_either_side(tmp_path: Path) -> None:
    rec = Recorder("rec", tmp_path / "l.sqlite", heartbeat_s=HB)
    rng = random.Random(7)

    async def main() -> None:
        async with lab([rec]) as d:
            # 1) garbage to the driver, through the controller's socket
            for _ in range(100):
                frame = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
                await d.send_raw("rec", [frame])
            await d.send_raw("rec", [b'{"v":1,"type":"ack","command_id":"x"}'])
            # 2) garbage to the controller from a raw DEALER
            ctx = zmq.asyncio.Context()
            raw = ctx.socket(zmq.DEALER)
            raw.setsockopt(zmq.IDENTITY, b"intruder")
            raw.connect(d.endpoint)
            try:
                await raw.send(b"{not json")
                reply = decode(await asyncio.wait_for(raw.recv(), 5))
                assert reply.type == "error" and reply.code == "malformed"
                await raw.send(json.dumps({"v": 7, "type": "heartbeat"}).encode())
                reply = decode(await asyncio.wait_for(raw.recv(), 5))
                assert reply.code == "version"
                await raw.send(b'{"v":1,"type":"heartbeat"}')  # valid but not registered
                reply = decode(await asyncio.wait_for(raw.recv(), 5))
                assert reply.code == "unregistered"
            finally:
                raw.close(0)
                ctx.term()
            for _ in range(100):
                if sum(1 for i, _ in d.errors if i == "rec") >= 101:
                    break
                await asyncio.sleep(0.02)
            assert sum(1 for i, _ in d.errors if i == "rec") >= 101
            out = await d.submit(dose("after-fuzz"))
            assert out.status == "succeeded"
            assert [i.identity for i in d.drivers()] == ["rec"]

    arun(main())


@pytest.mark.parametrize("seed", [1])
def test_seeded_faults_drop_duplicate_delay_never_execute_twice_or_lose(
    tmp_path: Path, seed: int
) -> None:
    calls: collections.Counter = collections.Counter()
    faults = FaultConfig(seed=seed, drop=0.15, duplicate=0.15, delay=0.2, max_delay_s=0.03)
    drivers = [
        Recorder(f"rec-{i}", tmp_path / f"{i}.sqlite", hold_s=0.01, calls=calls, heartbeat_s=HB,
                 faults=FaultConfig(seed=seed * 10 + i, drop=0.15, duplicate=0.15, delay=0.2,
                                    max_delay_s=0.03))
        for i in range(2)
    ]

    async def main() -> None:
        async with lab(drivers, faults=faults, lost_after=20) as d:
            cmds = [dose(f"S{i}", deadline=20) for i in range(60)]
            outs = await asyncio.gather(*[d.submit(c) for c in cmds])
            assert [o.status for o in outs] == ["succeeded"] * 60, [o.error for o in outs]
            assert all(o.result["sample_id"] == c.params["sample_id"] for o, c in zip(outs, cmds, strict=True))
            st = d.injector.stats
            assert st.dropped and st.duplicated and st.delayed
            assert d.retransmits > 0
            for drv in drivers:
                assert drv.injector.stats.dropped and drv.injector.stats.duplicated
            assert sorted(calls) == sorted(c.command_id for c in cmds)
            assert set(calls.values()) == {1}, "a command executed twice"

    arun(main(), timeout=60)


def test_fault_decisions_are_reproducible_by_seed() -> None:
    async def decisions(seed: int) -> list[int]:
        sent: list[int] = []

        async def send(frames: list[bytes]) -> None:
            sent.append(int(frames[0]))

        from drivers import FaultInjector

        inj = FaultInjector(FaultConfig(seed=seed, drop=0.3, duplicate=0.3), send)
        for i in range(200):
            await inj.send([str(i).encode()])
        return sent

    a, b, c = arun(decisions(5)), arun(decisions(5)), arun(decisions(6))
    assert a == b and a != c
    assert len(set(a)) < 200 and len(a) != len(set(a))  # some dropped, some duplicated


def test_curve_auth_refuses_a_peer_whose_key_is_not_allowed(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_keys(keys, ["controller", "driver", "intruder"], allow=["driver"])
    server = CurveConfig.server(keys)
    good = Recorder("good", tmp_path / "g.sqlite", heartbeat_s=HB)
    bad = Recorder("bad", tmp_path / "b.sqlite", heartbeat_s=HB)
    plain = Recorder("plain", tmp_path / "p.sqlite", heartbeat_s=HB)

    async def main() -> None:
        d = Dispatcher(heartbeat_s=HB, curve=server)
        await d.start()
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(good.serve(d.endpoint, stop=stop,
                                           curve=CurveConfig.client(keys, "driver"))),
            asyncio.create_task(bad.serve(d.endpoint, stop=stop,
                                          curve=CurveConfig.client(keys, "intruder"))),
            asyncio.create_task(plain.serve(d.endpoint, stop=stop)),
        ]
        try:
            await d.wait_for({"dose_mix"}, 10)
            out = await d.submit(dose("S1"))
            assert out.status == "succeeded" and out.driver == "good"
            await asyncio.sleep(0.5)
            assert [i.identity for i in d.drivers()] == ["good"]
            assert bad.executions == 0 and plain.executions == 0
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
            await d.close()

    arun(main())


def test_keys_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    from drivers import CurveError

    generate_keys(tmp_path / "k")
    with pytest.raises(CurveError, match="exists"):
        generate_keys(tmp_path / "k", ["driver"])
    with pytest.raises(CurveError, match="secret key"):
        CurveConfig.client(tmp_path / "k", "nobody")


def test_ipc_transport_works(tmp_path: Path) -> None:
    rec = Recorder("rec", tmp_path / "l.sqlite", heartbeat_s=HB)
    sock_dir = tempfile.mkdtemp(prefix="sl-ipc-")

    async def main() -> None:
        async with lab([rec], bind=f"ipc://{sock_dir}/d.sock") as d:
            assert d.endpoint.startswith("ipc://")
            assert (await d.submit(dose("S1"))).status == "succeeded"

    arun(main())


def test_resubmit_goes_back_to_the_driver_that_ran_it_not_to_a_free_one(tmp_path: Path) -> None:
    calls: collections.Counter = collections.Counter()
    a = Recorder("rec-a", tmp_path / "a.sqlite", calls=calls, heartbeat_s=HB)
    b = Recorder("rec-b", tmp_path / "b.sqlite", calls=calls, heartbeat_s=HB)

    async def main() -> None:
        async with lab([a, b]) as d:
            cmds = [dose(f"S{i}") for i in range(6)]
            first = await asyncio.gather(*[d.submit(c) for c in cmds])
            again = await asyncio.gather(*[d.submit(c) for c in cmds])
            assert [o.driver for o in again] == [o.driver for o in first]
            assert again == first
            assert set(calls.values()) == {1}

    arun(main())


def test_graceful_stop_drains_then_cancels_with_a_clear_stored_failure(tmp_path: Path) -> None:
    from drivers import CANCELLED

    ledger = tmp_path / "l.sqlite"
    slow = Recorder("rec", ledger, hold_s=30.0, heartbeat_s=HB, drain_s=0.2)

    async def main() -> None:
        d = Dispatcher(heartbeat_s=HB, lost_after=10)
        await d.start()
        stop = asyncio.Event()
        serving = asyncio.create_task(slow.serve(d.endpoint, stop=stop))
        try:
            await d.wait_for({"dose_mix"}, 10)
            cmd = dose("S1", deadline=60)
            pending = asyncio.create_task(d.submit(cmd))
            for _ in range(200):
                if slow.executions:
                    break
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.wait_for(serving, 10)
            out = await asyncio.wait_for(pending, 10)
            assert out.status == "failed" and out.error == CANCELLED
            # a new process with the same ledger answers from it and does not run it again
            again = Recorder("rec", ledger, heartbeat_s=HB)
            stop2 = asyncio.Event()
            serving2 = asyncio.create_task(again.serve(d.endpoint, stop=stop2))
            await d.wait_for({"dose_mix"}, 10)
            replay = await d.submit(cmd)
            assert replay.status == "failed" and replay.error == CANCELLED
            assert again.executions == 0
            stop2.set()
            await asyncio.wait_for(serving2, 10)
        finally:
            await d.close()

    arun(main())


def test_unusable_ledger_path_is_a_clear_error(tmp_path: Path) -> None:
    from drivers import LedgerError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LedgerError, match="file/sub"):
        from drivers import Ledger

        Ledger(blocker / "sub" / "l.sqlite")


def test_finished_id_is_replayed_by_a_busy_driver_and_a_fresh_process(tmp_path: Path) -> None:
    """The SDK admits new ids without a ledger read; a known id must still be answered from the
    ledger — also when the driver is at capacity (not refused as busy) and after a restart."""
    calls: collections.Counter = collections.Counter()
    first = Recorder("rec", tmp_path / "l.sqlite", calls=calls, heartbeat_s=HB)
    done = dose("S-done")

    async def run_first() -> None:
        async with lab([first]) as d:
            assert (await d.submit(done)).status == "succeeded"

    arun(run_first())
    again = Recorder("rec", tmp_path / "l.sqlite", calls=calls, hold_s=0.6, heartbeat_s=HB)

    async def run_again() -> None:
        # a raw ROUTER as the controller: the dispatcher would not send to a full driver
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        stop = asyncio.Event()
        serve = asyncio.create_task(again.serve(f"tcp://127.0.0.1:{port}", stop=stop))
        try:
            ident, frame = await asyncio.wait_for(router.recv_multipart(), 5)
            assert decode(frame).type == "register"
            for i in range(2):
                await router.send_multipart([ident, encode(dose(f"S-hold-{i}"))])
            await asyncio.sleep(0.1)  # both slots taken
            await router.send_multipart([ident, encode(done)])
            while True:
                msg = decode((await asyncio.wait_for(router.recv_multipart(), 0.4))[1])
                if msg.type == "result" and msg.command_id == done.command_id:
                    break
                assert msg.type in ("ack", "progress", "heartbeat"), msg
            assert msg.status == "succeeded" and msg.replay and msg.result["sample_id"] == "S-done"
        finally:
            stop.set()
            await asyncio.wait_for(serve, 10)
            router.close(0)
            ctx.term()

    arun(run_again())
    assert calls[done.command_id] == 1 and again.executions == 2


def test_submit_nowait_fans_out_without_a_task_per_command(tmp_path: Path) -> None:
    """``submit_nowait`` routes at once and returns the outcome's future; re-submitting a
    pending id joins it (a future of its own), and nothing executes twice."""
    calls: collections.Counter = collections.Counter()
    rec = Recorder("rec", tmp_path / "r.sqlite", calls=calls, heartbeat_s=HB)

    async def main() -> None:
        async with lab([rec]) as d:
            cmds = [dose(f"S{i}") for i in range(5)]
            futs = [d.submit_nowait(c) for c in cmds]
            again = d.submit_nowait(cmds[0])
            assert again is not futs[0] and all(isinstance(f, asyncio.Future) for f in futs)
            outs = await asyncio.wait_for(asyncio.gather(*futs, again), 10)
            assert [o.status for o in outs] == ["succeeded"] * 6
            assert outs[-1] == outs[0] and set(calls.values()) == {1}

    arun(main())
