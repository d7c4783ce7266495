"""Several driver instances in one process (drivers.DriverHost): what a lab PC running several
instruments relies on. Each instance registers and routes on its own, a bad frame or a broken
instance does not disturb the others, the shared ledger keeps at-most-once per identity across a
SIGKILL of the whole host process, old single-driver ledgers are adopted, and the conformance
kit passes for a hosted instance. Real sockets, real SQLite files, real processes."""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest

from drivers import (
    HOST_LEDGER_VERSION,
    Command,
    Driver,
    DriverHost,
    HostLedger,
    InstrumentError,
    Ledger,
    LedgerError,
    ProgressFn,
    check_driver,
)
from drivers.examples import ToyFurnace

sys.path.insert(0, str(Path(__file__).parent))
from drivers_lab import arun, hosted_lab, lab  # noqa: E402
from test_drivers_processes import Procs, endpoint_for, heat, procs, until  # noqa: E402,F401 - procs: the fixture


class Echo(Driver):
    """Answers ``echo`` at once; counts executions per command id across instances."""

    capabilities: ClassVar[tuple[str, ...]] = ("echo",)
    capacity: ClassVar[int] = 4
    version: ClassVar[str] = "echo 1"

    def __init__(self, identity: str, ledger_path: str | Path, *,
                 calls: collections.Counter[str] | None = None, **options: Any) -> None:
        super().__init__(identity, ledger_path, **options)
        self.calls = calls if calls is not None else collections.Counter()

    async def execute(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        self.calls[command.command_id] += 1
        if command.params.get("fail"):
            raise InstrumentError("asked to fail")
        return {"by": self.identity, "i": command.params.get("i")}


class Scanner(Echo):
    """Another instrument kind in the same host: capability ``scan`` and capacity 1."""

    capabilities: ClassVar[tuple[str, ...]] = ("scan",)
    capacity: ClassVar[int] = 1
    version: ClassVar[str] = "scanner 2"


class BrokenStart(Echo):
    """An instance whose instrument cannot be opened."""

    async def on_start(self) -> None:
        raise OSError("serial port /dev/ttyUSB9 not found")


def echo(i: int = 0, **params: Any) -> Command:
    return Command(capability="echo", params={"i": i, **params}, deadline_s=10)


def test_instances_register_separately_and_route_their_own_capability(tmp_path: Path) -> None:
    calls: collections.Counter[str] = collections.Counter()
    drivers = [Echo(f"echo-{i}", tmp_path / f"e{i}.sqlite", calls=calls) for i in range(3)]
    drivers.append(Scanner("scanner", tmp_path / "s.sqlite", calls=calls))

    async def main() -> None:
        async with hosted_lab(drivers, tmp_path / "host.sqlite") as (d, host):
            infos = {i.identity: i for i in d.drivers()}
            assert set(infos) == {"echo-0", "echo-1", "echo-2", "scanner"}
            assert infos["scanner"].capabilities == ("scan",) and infos["scanner"].capacity == 1
            assert infos["echo-1"].capabilities == ("echo",) and infos["echo-1"].capacity == 4
            assert infos["scanner"].version == "scanner 2"
            scans = [Command(capability="scan", params={"i": k}, deadline_s=10)
                     for k in range(3)]
            pinned = [d.submit(echo(10 + k), driver=f"echo-{k}") for k in range(3)]
            outs = await asyncio.gather(*[d.submit(c) for c in scans], *pinned,
                                        *[d.submit(echo(k)) for k in range(24)])
            assert all(o.status == "succeeded" for o in outs), outs
            assert [o.driver for o in outs[:3]] == ["scanner"] * 3
            assert [o.driver for o in outs[3:6]] == ["echo-0", "echo-1", "echo-2"]
            assert all(o.result["by"] == o.driver for o in outs)
            assert {o.driver for o in outs[6:]} == {"echo-0", "echo-1", "echo-2"}
            assert sum(calls.values()) == 30 and set(calls.values()) == {1}
            # the 30 commands sent in one turn were admitted and finished in far fewer
            # transactions than 2 per command (the group commit spans the instances; 6 on a quiet
            # machine)
            assert host.commits is not None and host.commits.commits < 30
            assert (await d.query_status([outs[3].command_id])) == {
                outs[3].command_id: "succeeded"}

    arun(main())
    # each identity's rows are its own: every id is in exactly one instance's view
    led = HostLedger(tmp_path / "host.sqlite")
    try:
        assert led.view("echo-0").count() + led.view("echo-1").count() \
            + led.view("echo-2").count() == 27
        assert led.view("scanner").count() == 3
        cid = next(iter(calls))
        owners = [i for i in ("echo-0", "echo-1", "echo-2", "scanner")
                  if led.view(i).get(cid) is not None]
        assert len(owners) == 1
    finally:
        led.close()


def test_a_bad_frame_or_a_broken_instance_does_not_disturb_the_others(tmp_path: Path) -> None:
    calls: collections.Counter[str] = collections.Counter()
    drivers = [Echo(f"echo-{i}", tmp_path / f"e{i}.sqlite", calls=calls) for i in range(3)]
    drivers.append(BrokenStart("broken", tmp_path / "b.sqlite"))

    async def main() -> None:
        async with hosted_lab(drivers, tmp_path / "host.sqlite") as (d, host):
            await asyncio.sleep(0.05)
            assert isinstance(host.failures.get("broken"), OSError)
            assert "broken" not in {i.identity for i in d.drivers()}
            before = len(d.errors)
            flood = [d.submit(echo(k), driver=f"echo-{1 + k % 2}") for k in range(20)]
            for frame in ([b"not json \xff"], [b'{"v": 7, "type": "command"}'], [b"a", b"b"],
                          [b'{"v":1,"type":"command","command_id":"x","capability":"echo"}']):
                await d.send_raw("echo-0", frame)
            outs = await asyncio.gather(*flood)
            assert all(o.status == "succeeded" for o in outs)
            await until(lambda: len(d.errors) - before >= 4, 5, "error replies")
            assert {ident for ident, _ in list(d.errors)[before:]} == {"echo-0"}
            failed = await d.submit(echo(99, fail=True), driver="echo-0")
            assert failed.status == "failed" and failed.error == "asked to fail"
            ok = await d.submit(echo(100), driver="echo-0")
            assert ok.status == "succeeded" and ok.driver == "echo-0"
            assert all(i.alive for i in d.drivers())

    arun(main())


def test_duplicate_after_the_host_process_is_sigkilled_returns_the_stored_result(
    procs: Procs,  # noqa: F811 - the fixture imported from test_drivers_processes
) -> None:
    endpoint = endpoint_for("ipc")
    ledger = procs.tmp / "host.sqlite"

    def host() -> Any:
        return procs.spawn([
            "-m", "drivers", "serve", "drivers.examples:ToyFurnace", "--instances", "2",
            "--identity", "furnace", "--ledger", str(ledger), "--connect", endpoint,
            "--heartbeat", "0.1", "--lost-after", "10", "--log-level", "WARNING",
            "--option", "seconds_per_min=0.02",
            "--option", f"actions_file={procs.tmp / 'actions.txt'}",
        ])

    async def main() -> None:
        from drivers import Dispatcher

        d = Dispatcher(endpoint, heartbeat_s=0.1, lost_after=40)
        await d.start()
        try:
            p = host()
            await until(lambda: {i.identity for i in d.drivers() if i.alive}
                        == {"furnace-1", "furnace-2"}, 30, "both hosted furnaces")
            done = heat(dwell_min=0, sample="S1")
            first = await d.submit(done, driver="furnace-1")
            assert first.status == "succeeded" and first.driver == "furnace-1"
            long = heat(dwell_min=150, sample="S2")  # ~3 s of furnace time
            pending = asyncio.create_task(d.submit(long, driver="furnace-2"))
            await until(lambda: procs.actions()[long.command_id] == 1, 20, "furnace-2 start")
            p.kill()  # SIGKILL: both instances die with the process
            p.wait(10)
            host()  # same identities, same shared ledger
            again = await d.submit(done)  # pinned to furnace-1, answered from the ledger
            assert again.status == "succeeded" and again.result == first.result
            assert again.driver == "furnace-1"
            out = await asyncio.wait_for(pending, 40)
            if out.status == "lost":
                out = await d.submit(long)
            assert out.status == "failed" and out.driver == "furnace-2"
            assert out.error.startswith("interrupted: driver restarted mid-command")
            assert (await d.query_status([done.command_id])) == {done.command_id: "succeeded"}
            counts = procs.actions()
            assert counts[done.command_id] == 1 and counts[long.command_id] == 1
        finally:
            await d.close()

    arun(main(), timeout=90)


def test_ledger_layouts_are_versioned_and_an_old_single_ledger_is_adopted(
    tmp_path: Path,
) -> None:
    calls: collections.Counter[str] = collections.Counter()
    own = tmp_path / "echo-0.ledger.sqlite"
    cmd = echo(1)

    async def alone() -> Any:
        async with lab([Echo("echo-0", own, calls=calls)]) as d:
            return await d.submit(cmd)

    first = arun(alone())
    assert first.status == "succeeded" and calls[cmd.command_id] == 1

    async def hosted() -> Any:
        drivers = [Echo("echo-0", own, calls=calls), Echo("echo-1", tmp_path / "x", calls=calls)]
        async with hosted_lab(drivers, tmp_path / "host.sqlite") as (d, _):
            return await d.submit(cmd, driver="echo-0")

    again = arun(hosted())  # moved into a host: its old history came along
    assert again.status == "succeeded" and again.result == first.result
    assert calls[cmd.command_id] == 1

    with pytest.raises(LedgerError, match="host ledger"):
        Ledger(tmp_path / "host.sqlite")
    with pytest.raises(LedgerError, match="single-driver ledger"):
        HostLedger(own)
    db = sqlite3.connect(tmp_path / "host.sqlite")
    try:
        assert dict(db.execute("SELECT key, value FROM ledger_meta")) == {
            "kind": "host", "version": str(HOST_LEDGER_VERSION)}
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'host_commands'").fetchone()
        assert "PRIMARY KEY (command_id, identity)" in sql[0] and "WITHOUT ROWID" in sql[0]
    finally:
        db.close()


_V1_TABLE = """CREATE TABLE host_commands (
    identity TEXT NOT NULL, command_id TEXT NOT NULL, capability TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running','succeeded','failed','expired')),
    result TEXT, error TEXT, received_at REAL NOT NULL, finished_at REAL,
    PRIMARY KEY (identity, command_id)
) WITHOUT ROWID"""


def test_version_1_host_ledger_is_migrated_with_every_row(tmp_path: Path) -> None:
    """A host ledger written by the previous layout (keyed identity first) is converted in
    place when opened: finished ids still answer from their stored result, a row left running
    is recovered as interrupted, and nothing is executed again."""
    path = tmp_path / "host.sqlite"
    done, running = str(uuid.uuid4()), str(uuid.uuid4())
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO ledger_meta VALUES ('kind', 'host'), ('version', '1')")
    db.execute(_V1_TABLE)
    db.execute("INSERT INTO host_commands VALUES ('a', ?, 'echo', '{}', 'succeeded', "
               "'{\"echo\": 7}', NULL, 1.0, 2.0)", (done,))
    db.execute("INSERT INTO host_commands VALUES ('b', ?, 'echo', '{}', 'running', NULL, NULL, "
               "1.0, NULL)", (running,))
    db.commit()
    db.close()

    led = HostLedger(path)
    try:
        assert led.view("a").get(done).result == {"echo": 7}
        assert led.view("b").recover_interrupted() == [running]
        assert led.view("b").get(running).state == "failed"
        assert led.apply([("begin", "a", done, "echo", {})]) == [False]  # still known
    finally:
        led.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT value FROM ledger_meta WHERE key = 'version'").fetchone() == (
            str(HOST_LEDGER_VERSION),)
        assert db.execute("SELECT COUNT(*) FROM host_commands").fetchone() == (2,)
    finally:
        db.close()


def test_host_ledger_of_an_unknown_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "host.sqlite"
    HostLedger(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE ledger_meta SET value = '99' WHERE key = 'version'")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="layout version 99"):
        HostLedger(path)


def test_host_refuses_two_instances_with_one_identity(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="identity 'e'"):
        DriverHost([Echo("e", tmp_path / "a"), Echo("e", tmp_path / "b")])


def test_host_ledger_group_commit_reports_known_ids_per_identity(tmp_path: Path) -> None:
    led = HostLedger(tmp_path / "h.sqlite")
    try:
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        assert led.apply([("begin", "x", a, "echo", {}), ("begin", "y", a, "echo", {})]) == [
            True, True]  # the same id under two identities: two commands
        assert led.apply([("begin", "x", a, "echo", {}), ("begin", "x", b, "echo", {}),
                          ("finish", "y", a, "succeeded", '{"k":1}', None)]) == [
            False, True, True]
        assert led.view("y").get(a).result == {"k": 1}
        assert led.view("x").get(a).state == "running"
        assert sorted(led.view("x").recover_interrupted()) == sorted([a, b])
        assert led.view("y").recover_interrupted() == []  # y's row is finished
        assert led.view("x").statuses([a, b, "nope"]) == {
            a: "failed", b: "failed", "nope": "unknown"}
        assert led.view("y").statuses([a]) == {a: "succeeded"}
    finally:
        led.close()


def test_conformance_kit_passes_for_a_hosted_instance(tmp_path: Path) -> None:
    report = check_driver(ToyFurnace, hosted=True, workdir=tmp_path)
    assert report.passed, report.format()
    names = {c.name: c.passed for c in report.checks}
    assert names["hosted isolation"] and names["replay across restart"]
    assert names["duplicate replay"] and names["malformed messages"]


def test_hosted_instances_of_one_fault_seed_get_their_own_streams(tmp_path, monkeypatch) -> None:
    """``serve A --instances 3 --fault-seed 7``: instance i injects faults with seed 7 + i, so
    the instances do not drop the same frames in lock-step, and the run is reproducible."""
    from drivers import FaultConfig
    from drivers.faults import FaultInjector
    from drivers.runner import host_drivers, host_identities

    monkeypatch.chdir(tmp_path)
    plan = host_identities(["drivers.examples.toy_furnace:ToyFurnace"], 3, "furnace")
    faults = FaultConfig(seed=7, drop=0.5)
    built = host_drivers(plan, {"faults": faults, "heartbeat_s": 0.5})
    assert [d.identity for d in built] == ["furnace-1", "furnace-2", "furnace-3"]
    assert [d.faults.seed for d in built] == [7, 8, 9]
    assert all(d.faults.drop == 0.5 for d in built)

    def pattern(cfg: FaultConfig) -> list[int]:
        sent: list[int] = []
        inj = FaultInjector(cfg, lambda frames: sent.append(int(frames[0])))
        for i in range(64):
            inj.send_nowait([str(i).encode()])
        return sent

    streams = [pattern(d.faults) for d in built]
    assert len({tuple(s) for s in streams}) == 3  # independent decisions per instance
    assert streams == [pattern(d.faults) for d in host_drivers(plan, {"faults": faults})]
    # no faults option: nothing is added
    assert all(d.faults is None for d in host_drivers(plan, {}))
