"""Drivers and controllers in separate processes over tcp loopback and ipc: SIGKILL of a driver
mid-command, SIGKILL of the controller, a frozen (SIGSTOP) driver, injected faults, and the
conformance kit from the command line. The toy furnace appends every physical action to a file,
so "the instrument acted exactly once" is counted, not assumed."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from drivers import Command, Dispatcher, Driver, FaultConfig, ProgressFn, check_driver

sys.path.insert(0, str(Path(__file__).parent))
from drivers_lab import arun as _arun  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HB = 0.1


def arun(coro: Any, timeout: float = 60.0) -> Any:
    """Separate driver processes start slower than in-process ones: a longer default timeout."""
    return _arun(coro, timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint_for(transport: str) -> str:
    if transport == "tcp":
        return f"tcp://127.0.0.1:{free_port()}"
    return f"ipc://{tempfile.mkdtemp(prefix='sl-')}/ctl.sock"  # short path: ipc limit ~100 chars


class Procs:
    """Processes started by a test; all killed at teardown whatever happens."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.all: list[subprocess.Popen[str]] = []

    def spawn(self, args: list[str], **kw: Any) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        p = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True, **kw)
        self.all.append(p)
        return p

    def furnace(self, endpoint: str, identity: str = "furnace-1", *, spm: float = 0.02,
                extra: list[str] | None = None) -> subprocess.Popen[str]:
        return self.spawn([
            "-m", "drivers", "serve", "drivers.examples:ToyFurnace", "--connect", endpoint,
            "--identity", identity, "--ledger", str(self.tmp / f"{identity}.sqlite"),
            "--heartbeat", str(HB), "--lost-after", "10", "--log-level", "WARNING",
            "--option", f"seconds_per_min={spm}",
            "--option", f"actions_file={self.tmp / 'actions.txt'}",
            *(extra or []),
        ])

    def actions(self) -> collections.Counter[str]:
        path = self.tmp / "actions.txt"
        if not path.exists():
            return collections.Counter()
        return collections.Counter(line.split()[-1] for line in path.read_text().splitlines())

    def kill_all(self) -> None:
        for p in self.all:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGCONT)
                    p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.kill_all()


def heat(dwell_min: float, sample: str = "S1") -> Command:
    return Command(
        capability="heat",
        params={"sample_ids": [sample], "atmosphere": "air",
                "profile": [{"ramp_c_per_min": 100.0, "setpoint_c": 900.0, "dwell_min": dwell_min}]},
        deadline_s=60.0,
        sample_ids=[sample],
    )


async def until(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(f"waited {timeout} s for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_sigkill_driver_mid_command_then_restart_fails_clearly_and_acted_once(
    procs: Procs, transport: str
) -> None:
    endpoint = endpoint_for(transport)

    async def main() -> None:
        d = Dispatcher(endpoint, heartbeat_s=HB, lost_after=40)
        await d.start()
        try:
            p = procs.furnace(endpoint)
            await d.wait_for({"heat"}, 30)
            cmd = heat(dwell_min=150)  # ~3 s of furnace time
            pending = asyncio.create_task(d.submit(cmd))
            await until(lambda: procs.actions()[cmd.command_id] == 1, 20, "furnace start")
            os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
            procs.furnace(endpoint)  # same identity, same ledger
            out = await asyncio.wait_for(pending, 40)
            if out.status == "lost":  # restart slower than lost detection: reconcile
                await d.wait_for({"heat"}, 30)
                assert (await d.query_status([cmd.command_id]))[cmd.command_id] == "failed"
                out = await d.submit(cmd)
            assert out.status == "failed", out
            assert out.error.startswith("interrupted: driver restarted mid-command")
            assert out.driver == "furnace-1"
            again = await d.submit(cmd)  # asking again never re-runs it
            assert again.status == "failed" and again.error == out.error
            ok = await d.submit(heat(dwell_min=0, sample="S2"))
            assert ok.status == "succeeded", ok
            counts = procs.actions()
            assert counts[cmd.command_id] == 1 and counts[ok.command_id] == 1
        finally:
            await d.close()

    arun(main(), timeout=90)


CONTROLLER = """
import asyncio, sys
from drivers import Command, Dispatcher
async def main():
    d = Dispatcher(sys.argv[1], heartbeat_s=0.1, lost_after=40)
    await d.start()
    await d.wait_for({"heat"}, 30)
    for cid, dwell in zip(sys.argv[2::2], sys.argv[3::2]):
        cmd = Command(command_id=cid, capability="heat", deadline_s=60, params={
            "sample_ids": ["S"], "profile": [{"ramp_c_per_min": 100.0, "setpoint_c": 900.0,
            "dwell_min": float(dwell)}]})
        asyncio.ensure_future(d.submit(cmd))
    print("SUBMITTED", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_controller_killed_and_restarted_reconciles_in_flight_commands(
    procs: Procs, transport: str
) -> None:
    endpoint = endpoint_for(transport)
    long_id, short_id, never_id = (str(uuid.uuid4()) for _ in range(3))
    procs.furnace(endpoint)
    ctl = procs.spawn(["-c", CONTROLLER, endpoint, long_id, "150", short_id, "0"],
                      stdout=subprocess.PIPE)
    assert ctl.stdout is not None and ctl.stdout.readline().strip() == "SUBMITTED"

    async def main() -> None:
        await until(lambda: procs.actions()[long_id] == 1 and procs.actions()[short_id] == 1,
                    20, "both commands started")
        await asyncio.sleep(0.3)  # the short one finishes while its controller is alive
        os.kill(ctl.pid, signal.SIGKILL)
        ctl.wait(10)
        d = Dispatcher(endpoint, heartbeat_s=HB, lost_after=40)  # the restarted controller
        await d.start()
        try:
            await d.wait_for({"heat"}, 30)
            status = await d.query_status([long_id, short_id, never_id])
            assert status[short_id] == "succeeded"
            assert status[long_id] in ("running", "succeeded")
            assert status[never_id] == "unknown"
            outs = await asyncio.gather(d.submit(heat(150).model_copy(update={"command_id": long_id})),
                                        d.submit(heat(0).model_copy(update={"command_id": short_id})))
            assert [o.status for o in outs] == ["succeeded", "succeeded"], outs
            assert outs[0].result["duration_min"] == pytest.approx(158.75)
            counts = procs.actions()
            assert counts[long_id] == 1 and counts[short_id] == 1 and never_id not in counts
        finally:
            await d.close()

    arun(main(), timeout=90)


def test_frozen_driver_is_declared_lost_with_its_commands_then_reconciled(procs: Procs) -> None:
    endpoint = endpoint_for("tcp")
    lost_calls: list[tuple[str, list[str]]] = []

    async def main() -> None:
        d = Dispatcher(endpoint, heartbeat_s=HB, lost_after=5,
                       on_lost=lambda ident, ids: lost_calls.append((ident, ids)))
        await d.start()
        try:
            p = procs.furnace(endpoint)
            await d.wait_for({"heat"}, 30)
            cmd = heat(dwell_min=20)
            pending = asyncio.create_task(d.submit(cmd))
            await until(lambda: procs.actions()[cmd.command_id] == 1, 20, "furnace start")
            os.kill(p.pid, signal.SIGSTOP)
            out = await asyncio.wait_for(pending, 10)
            assert out.status == "lost" and "furnace-1" in out.error and "silent" in out.error
            assert lost_calls == [("furnace-1", [cmd.command_id])]
            assert not d.drivers()[0].alive
            os.kill(p.pid, signal.SIGCONT)
            await d.wait_for({"heat"}, 30)  # it comes back under the same identity
            assert (await d.query_status([cmd.command_id]))[cmd.command_id] in (
                "running", "succeeded")
            done = await d.submit(cmd)
            assert done.status == "succeeded" and done.driver == "furnace-1"
            assert procs.actions()[cmd.command_id] == 1
        finally:
            await d.close()

    arun(main(), timeout=60)


def test_injected_faults_between_processes_lose_nothing_and_never_repeat(procs: Procs) -> None:
    endpoint = endpoint_for("tcp")
    n = 40

    async def main() -> None:
        d = Dispatcher(endpoint, heartbeat_s=HB, lost_after=20,
                       faults=FaultConfig(seed=11, drop=0.2, duplicate=0.2, delay=0.2))
        await d.start()
        try:
            for i in range(2):
                procs.furnace(endpoint, f"furnace-{i}", spm=0.0001, extra=[
                    "--fault-seed", str(20 + i), "--fault-drop", "0.2",
                    "--fault-duplicate", "0.2", "--fault-delay", "0.2"])
            await until(lambda: sum(x.alive for x in d.drivers()) == 2, 30, "two furnaces")
            cmds = [heat(dwell_min=10, sample=f"S{i}") for i in range(n)]
            outs = await asyncio.gather(*[d.submit(c) for c in cmds])
            assert [o.status for o in outs] == ["succeeded"] * n, [o.error for o in outs]
            assert {o.driver for o in outs} == {"furnace-0", "furnace-1"}
            assert d.injector is not None and d.injector.stats.dropped > 0
            assert d.retransmits > 0
            counts = procs.actions()
            assert {counts[c.command_id] for c in cmds} == {1}
            assert sum(counts.values()) == n
        finally:
            await d.close()

    arun(main(), timeout=90)


def test_conformance_kit_passes_on_the_example_from_both_command_lines(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "drivers", "check",
                          "drivers.examples:ToyFurnace"], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("registration", "heartbeat", "capability heat", "duplicate replay",
                 "replay across restart", "malformed messages", "deadline expiry",
                 "graceful shutdown"):
        assert f"PASS  {name}" in res.stdout
    from controller.cli import app

    out = CliRunner().invoke(app, ["driver", "check", "drivers.examples:ToyFurnace",
                                   "--transport", "tcp"])
    assert out.exit_code == 0, out.output
    assert "result: PASSED" in out.output
    keys = CliRunner().invoke(app, ["keys", "generate", str(tmp_path / "k")])
    assert keys.exit_code == 0 and (tmp_path / "k/allowed/driver.key").exists()
    bad = CliRunner().invoke(app, ["driver", "serve", "no_such_mod:X", "--connect", "tcp://x:1"])
    assert bad.exit_code == 2 and "no_such_mod" in bad.output


class SloppyDriver(Driver):
    """Returns a heat result missing required keys: the kit must catch it."""

    capabilities: ClassVar[tuple[str, ...]] = ("heat",)
    version: ClassVar[str] = "sloppy"

    async def execute(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        return {"sample_ids": command.params["sample_ids"]}


def test_conformance_kit_fails_a_driver_with_wrong_results(tmp_path: Path) -> None:
    report = check_driver(SloppyDriver, workdir=tmp_path)
    assert not report.passed
    failed = {c.name: c.detail for c in report.checks if c.passed is False}
    assert "capability heat" in failed and "duration_min" in failed["capability heat"]


def test_conformance_kit_checks_a_running_driver_process_in_bind_mode(procs: Procs) -> None:
    from drivers import check_driver_async

    endpoint = endpoint_for("ipc")
    procs.furnace(endpoint, "furnace-remote", spm=0.0001)
    report = arun(check_driver_async("drivers.examples:ToyFurnace", bind=endpoint,
                                     heartbeat_s=HB), timeout=120)
    assert report.passed, report.format()
    names = {c.name: c.passed for c in report.checks}
    assert names["registration"] and names["duplicate replay"] and names["malformed messages"]
    assert names["replay across restart"] is None  # skipped: the kit does not own the process
