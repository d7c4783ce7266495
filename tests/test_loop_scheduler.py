"""The scheduler against a real driver process over ZeroMQ: order, persistence, capacity,
retries, and recovery after a controller restart (nothing lost, nothing run twice).

The instrument here is a small bench driver defined in this file (run as its own process
with ``python tests/test_loop_scheduler.py ENDPOINT WORKDIR``): it offers the four standard
steps, appends every physical action to ``actions.log`` with fsync (so a test can count real
executions), keeps its ledger in WORKDIR, and fails a step on purpose when told so in
``fail.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest

if __name__ != "__main__":
    from sqlmodel import select

    from controller.loop import ExperimentRunner, Pool, StepPolicy, reconcile
    from controller.store import (
        Campaign,
        Experiment,
        ExperimentState,
        FailureKind,
        Measurement,
        Recipe,
        StepCommand,
        StepState,
        Store,
        Target,
        unpack_array,
    )

from drivers import Driver, InstrumentError

ROOT = Path(__file__).resolve().parents[1]


class BenchLab(Driver):
    """All four steps in one process; furnace capacity from the environment."""

    capabilities: ClassVar[tuple[str, ...]] = ("dose_mix", "heat", "recover", "xrd")
    capacity: ClassVar[int] = int(os.environ.get("BENCH_CAPACITY", "3"))
    version: ClassVar[str] = "bench 1"

    def __init__(self, identity: str, ledger_path: str | Path, *, workdir: Path, **kw: Any):
        super().__init__(identity, ledger_path, **kw)
        self.workdir = workdir
        self.active_heats = 0

    def _act(self, cmd: Any, extra: str = "") -> None:
        with open(self.workdir / "actions.log", "a", encoding="utf-8") as fh:
            fh.write(f"{cmd.capability} {cmd.command_id} {cmd.sample_ids[0] if cmd.sample_ids else '-'} {extra}\n")
            fh.flush()
            os.fsync(fh.fileno())

    async def execute(self, command: Any, progress: Any) -> dict[str, Any]:
        p = command.params
        fail_file = self.workdir / "fail.json"
        fails = json.loads(fail_file.read_text()) if fail_file.exists() else {}
        sample = p.get("sample_id") or p.get("sample_ids", ["?"])[0]
        if command.capability == "heat":
            self.active_heats += 1
            self._act(command, f"concurrent={self.active_heats}")
            try:
                await asyncio.sleep(float(os.environ.get("BENCH_HEAT_S", "0.15")))
            finally:
                self.active_heats -= 1
        else:
            self._act(command)
            await asyncio.sleep(0.01)
        if fails.get(sample) == command.capability:
            raise InstrumentError(f"{command.capability} failed on purpose for {sample}")
        if command.capability == "dose_mix":
            return {"sample_id": sample, "location": "rack",
                    "dispensed": [{"formula": x["formula"], "mass_g": x["target_mass_g"]}
                                  for x in p["precursors"]], "sim_time_min": 20.0}
        if command.capability == "heat":
            return {"sample_ids": p["sample_ids"], "duration_min": 600.0,
                    "max_temperature_c": max(s["setpoint_c"] for s in p["profile"]), "sim_time_min": 700.0}
        if command.capability == "recover":
            return {"sample_id": sample, "mass_g": 1.8, "location": "xrd-tray", "sim_time_min": 15.0}
        tt = [10.0 + 0.5 * i for i in range(141)]
        return {"sample_id": sample, "two_theta": tt, "intensities": [100.0 + (i % 7) for i in range(141)],
                "wavelength_angstrom": 1.5406, "meta": {"bench": True}, "sim_time_min": 13.0}


if __name__ == "__main__":  # the driver process
    endpoint, workdir = sys.argv[1], Path(sys.argv[2])
    BenchLab("bench", workdir / "ledger.db", workdir=workdir, heartbeat_s=0.2, lost_after=5).run(endpoint)
    sys.exit(0)


# ----------------------------------------------------------------------------- fixtures
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def bench(tmp_path: Path):
    """A bench driver process connected to a fixed loopback endpoint; always terminated."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    procs: list[subprocess.Popen] = []

    def start(capacity: int = 3, heat_s: float = 0.15) -> subprocess.Popen:
        env = {**os.environ, "BENCH_CAPACITY": str(capacity), "BENCH_HEAT_S": str(heat_s),
               "PYTHONPATH": str(ROOT)}
        p = subprocess.Popen([sys.executable, __file__, endpoint, str(tmp_path)], env=env)
        procs.append(p)
        return p

    yield endpoint, tmp_path, start
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def _seed(store: Store, n: int) -> tuple[int, list[int]]:
    """A campaign with one target, one recipe and ``n`` queued experiments."""
    camp = store.ensure_campaign("sched", seed=1)
    with store.session() as s:
        t = Target(campaign_id=camp.id, formula="BaTiO3")
        s.add(t)
        s.flush()
        r = Recipe(target_id=t.id, ordinal=1,
                   precursors=[{"formula": "BaCO3", "moles": 1, "mass_g": 1.2},
                               {"formula": "TiO2", "moles": 1, "mass_g": 0.5}],
                   profile=[{"ramp_c_per_min": 10, "setpoint_c": 1100, "dwell_min": 600}])
        s.add(r)
        s.flush()
        ids = []
        for i in range(n):
            e = Experiment(campaign_id=camp.id, target_id=t.id, recipe_id=r.id, sample_id=f"S{i}")
            s.add(e)
            s.flush()
            ids.append(e.id)
    for eid in ids:
        store.transition(eid, ExperimentState.APPROVED)
        store.transition(eid, ExperimentState.QUEUED)
    return camp.id, ids


def _actions(workdir: Path) -> list[list[str]]:
    path = workdir / "actions.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def _run_all(store: Store, endpoint: str, ids: list[int], *, heat_slots: int = 3,
                   retries: int = 2, before_send=None) -> None:
    from drivers import Dispatcher

    async with Dispatcher(bind=endpoint, heartbeat_s=0.2, lost_after=5) as d:
        await d.wait_for({"dose_mix", "heat", "recover", "xrd"}, timeout=30)
        pools = {"dose_mix": Pool("dose_mix", 1), "heat": Pool("heat", heat_slots),
                 "recover": Pool("recover", 1), "xrd": Pool("xrd", 1)}
        runner = ExperimentRunner(store, d, pools, StepPolicy(retries=retries, speedup=1e6,
                                                              deadline_floor_s=20),
                                  before_send=before_send)
        await asyncio.wait_for(asyncio.gather(*(runner.run(i) for i in ids)), 60)


# ----------------------------------------------------------------------------- tests
def test_steps_run_in_order_each_written_before_it_is_sent(bench, tmp_path: Path) -> None:
    endpoint, workdir, start = bench
    start()
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    _, ids = _seed(store, 3)
    seen_committed: list[str] = []

    async def check_committed(row: StepCommand) -> None:
        # a separate connection sees the command as 'sent' before it goes on the wire
        with Store(url, migrate=False) as other, other.session() as s:
            stored = s.exec(select(StepCommand).where(StepCommand.command_id == row.command_id)).one()
            assert stored.state == StepState.SENT
            seen_committed.append(stored.command_id)

    asyncio.run(_run_all(store, endpoint, ids, before_send=check_committed))
    with store.session() as s:
        for eid in ids:
            exp = s.get(Experiment, eid)
            assert exp.state == ExperimentState.MEASURED
            steps = s.exec(select(StepCommand).where(StepCommand.experiment_id == eid)
                           .order_by(StepCommand.id)).all()
            assert [st.step for st in steps] == ["dose_mix", "heat", "recover", "xrd"]
            assert all(st.state == StepState.SUCCEEDED and st.driver == "bench" for st in steps)
            meas = s.exec(select(Measurement).where(Measurement.experiment_id == eid)).one()
            assert meas.n_points == 141 and unpack_array(meas.two_theta)[-1] == pytest.approx(80.0)
    actions = _actions(workdir)
    assert len(actions) == 12 and len({a[1] for a in actions}) == 12  # each command executed once
    assert sorted(seen_committed) == sorted(a[1] for a in actions)
    store.close()


def test_all_furnaces_busy_and_never_overbooked(bench, tmp_path: Path) -> None:
    endpoint, workdir, start = bench
    start(capacity=3, heat_s=0.4)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    _, ids = _seed(store, 6)
    asyncio.run(_run_all(store, endpoint, ids, heat_slots=2))
    concurrency = [int(a[3].split("=")[1]) for a in _actions(workdir) if a[0] == "heat"]
    assert max(concurrency) == 2  # the pool's 2 slots were used together, never 3
    store.close()


def test_failed_furnace_run_is_retried_then_fails_with_reason(bench, tmp_path: Path) -> None:
    endpoint, workdir, start = bench
    (workdir / "fail.json").write_text(json.dumps({"S1": "heat"}))
    start()
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    _, ids = _seed(store, 2)
    asyncio.run(_run_all(store, endpoint, ids, retries=2))
    with store.session() as s:
        ok, bad = s.get(Experiment, ids[0]), s.get(Experiment, ids[1])
        assert ok.state == ExperimentState.MEASURED
        assert bad.state == ExperimentState.FAILED
        assert bad.failure_kind == FailureKind.INSTRUMENT  # the lab spoiled it, not the chemistry
        assert bad.reason.startswith("heat failed after 3 attempt(s)")
        heats = s.exec(select(StepCommand).where(StepCommand.experiment_id == bad.id,
                                                 StepCommand.step == "heat")).all()
        assert [h.attempt for h in heats] == [1, 2, 3] and len({h.command_id for h in heats}) == 3
        assert all(h.state == StepState.FAILED and "on purpose" in h.error for h in heats)
    store.close()


def test_restart_reattaches_in_flight_commands_without_running_them_twice(bench, tmp_path: Path) -> None:
    """SQL says two heats are 'sent': one the driver ran (before the 'crash'), one it never got."""
    from drivers import Dispatcher

    endpoint, workdir, start = bench
    start()
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    camp_id, ids = _seed(store, 2)
    # experiment 1 and 2: dose_mix done; heat written as 'sent'
    heat_ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    with store.session() as s:
        for eid, cid in zip(ids, heat_ids, strict=True):
            exp = s.get(Experiment, eid)
            recipe = s.get(Recipe, exp.recipe_id)
            from controller.loop import step_params
            from controller.loop.records import recipe_of

            view = recipe_of(recipe, "X")
            dose = StepCommand(command_id=str(uuid.uuid4()), experiment_id=eid, step="dose_mix",
                               sequence=0, state=StepState.SUCCEEDED.value, driver="bench",
                               payload={"params": step_params("dose_mix", exp.sample_id, view),
                                        "deadline_s": 20, "sample_ids": [exp.sample_id]},
                               result={"sim_time_min": 20.0})
            heat = StepCommand(command_id=cid, experiment_id=eid, step="heat", sequence=1,
                               state=StepState.SENT.value,
                               payload={"params": step_params("heat", exp.sample_id, view),
                                        "deadline_s": 20, "sample_ids": [exp.sample_id]})
            s.add(dose)
            s.add(heat)
            store.transition(eid, ExperimentState.RUNNING, session=s)

    async def before_crash() -> None:
        # the old controller had sent heat #1 and the furnace ran it, then the controller died
        async with Dispatcher(bind=endpoint, heartbeat_s=0.2, lost_after=5) as d:
            await d.wait_for({"heat"}, timeout=30)
            with store.session() as s:
                row = s.exec(select(StepCommand).where(StepCommand.command_id == heat_ids[0])).one()
            from controller.loop.scheduler import make_command

            out = await d.submit(make_command(row))
            assert out.status == "succeeded"

    asyncio.run(before_crash())
    time.sleep(0.5)

    async def restart() -> None:
        async with Dispatcher(bind=endpoint, heartbeat_s=0.2, lost_after=5) as d:
            await d.wait_for({"dose_mix", "heat", "recover", "xrd"}, timeout=30)
            rec = await reconcile(store, d, camp_id)
            assert rec.statuses[heat_ids[0]] == "succeeded"
            assert rec.statuses[heat_ids[1]] == "unknown"
            assert rec.marked_unknown == [heat_ids[1]]
            with store.session() as s:
                assert s.get(Experiment, ids[1]).state == ExperimentState.UNKNOWN
            pools = {k: Pool(k, 2) for k in ("dose_mix", "heat", "recover", "xrd")}
            runner = ExperimentRunner(store, d, pools, StepPolicy(speedup=1e6, deadline_floor_s=20))
            await asyncio.wait_for(asyncio.gather(*(runner.run(i) for i in ids)), 60)

    asyncio.run(restart())
    heats = [a for a in _actions(workdir) if a[0] == "heat"]
    assert sorted(a[1] for a in heats) == sorted(heat_ids)  # each heat executed exactly once
    with store.session() as s:
        assert [s.get(Experiment, i).state for i in ids] == [ExperimentState.MEASURED] * 2
        camp = s.get(Campaign, camp_id)
        assert camp is not None
    store.close()


def test_unusable_xrd_pattern_fails_as_an_instrument_failure(tmp_path: Path) -> None:
    """Every step succeeds but the diffractometer returns no pattern: the lab spoiled it."""
    from types import SimpleNamespace

    class EmptyXrd:  # the scheduler's Transport seam, in process: no drivers needed
        async def submit(self, cmd: Any, *, driver: str | None = None) -> Any:
            result = {"two_theta": [], "intensities": []} if cmd.capability == "xrd" else {}
            return SimpleNamespace(status="succeeded", result=result, driver=f"fake-{cmd.capability}")

        async def query_status(self, command_ids: list[str]) -> dict[str, str]:
            return {}

        async def wait_for(self, capabilities: set[str], timeout: float) -> Any:
            return None

    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    _, ids = _seed(store, 1)
    pools = {step: Pool(step, 1) for step in ("dose_mix", "heat", "recover", "xrd")}
    runner = ExperimentRunner(store, EmptyXrd(), pools, StepPolicy(speedup=1e6, deadline_floor_s=5))
    asyncio.run(asyncio.wait_for(runner.run(ids[0]), 30))
    with store.session() as s:
        exp = s.get(Experiment, ids[0])
        assert exp.state == ExperimentState.FAILED and exp.failure_kind == FailureKind.INSTRUMENT
        assert "unusable pattern" in exp.reason
    store.close()


def test_command_unknown_while_a_driver_is_away_is_never_resent(tmp_path: Path) -> None:
    """A 'sent' heat no live driver knows, while a furnace the campaign used is missing: it may
    sit in that furnace's ledger, so the experiment fails (instrument) instead of re-sending."""
    from drivers import Dispatcher

    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    camp_id, ids = _seed(store, 1)
    cid = str(uuid.uuid4())
    with store.session() as s:
        s.add(StepCommand(command_id=cid, experiment_id=ids[0], step="heat", sequence=1,
                          state=StepState.SENT.value, payload={"params": {}, "deadline_s": 5}))
        store.transition(ids[0], ExperimentState.RUNNING, session=s)

    async def go() -> None:
        async with Dispatcher(bind="tcp://127.0.0.1:*") as d:
            rec = await reconcile(store, d, camp_id, missing_drivers=["sim-furnace-2"])
            assert rec.marked_unknown == [cid]

    asyncio.run(go())
    with store.session() as s:
        exp = s.get(Experiment, ids[0])
        assert exp.state == ExperimentState.FAILED and exp.failure_kind == FailureKind.INSTRUMENT
        assert "sim-furnace-2" in exp.reason
        step = s.exec(select(StepCommand).where(StepCommand.command_id == cid)).one()
        assert step.state == StepState.UNKNOWN
    store.close()
