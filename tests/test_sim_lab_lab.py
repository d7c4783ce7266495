"""The simulated lab behind the real protocol: instruments, shared samples, ledger, faults, truth."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from pymatgen.core import Composition

sys.path.insert(0, str(Path(__file__).parent))
from sim_lab_toy import toy_world_dict  # noqa: E402

from drivers import Command, Dispatcher, check_driver  # noqa: E402
from sim_lab import (  # noqa: E402
    FaultConfig,
    SimLab,
    conformance_class,
    parse_world,
    precursor_masses,
    profile_duration_min,
)

PROFILE = [{"ramp_c_per_min": 5.0, "setpoint_c": 600.0, "dwell_min": 480.0}]


@pytest.fixture(scope="module")
def world():
    return parse_world(toy_world_dict(), "toy")


def steps(sample: str, masses: dict[str, float]) -> list[Command]:
    return [
        Command(capability="dose_mix", sample_ids=[sample], deadline_s=60, params={
            "sample_id": sample,
            "precursors": [{"formula": f, "target_mass_g": m} for f, m in masses.items()]}),
        Command(capability="heat", sample_ids=[sample], deadline_s=60, params={
            "sample_ids": [sample], "profile": PROFILE, "atmosphere": "air"}),
        Command(capability="recover", sample_ids=[sample], deadline_s=60,
                params={"sample_id": sample, "grind": True}),
        Command(capability="xrd", sample_ids=[sample], deadline_s=60, params={
            "sample_id": sample, "two_theta_start": 10, "two_theta_end": 80, "step": 0.02,
            "scan_time_min": 8}),
    ]


async def run_lab(lab: SimLab, processes: bool, body) -> None:
    d = Dispatcher("tcp://127.0.0.1:*", heartbeat_s=0.5, lost_after=20)
    await d.start()
    try:
        lab.start(d.endpoint, processes=processes)
        await d.wait_for({"dose_mix", "heat", "recover", "xrd"}, 120 if processes else 30)
        await body(d)
    finally:
        lab.stop()
        await d.close()


def test_in_process_lab_runs_a_recipe_end_to_end(world, tmp_path: Path) -> None:
    good = precursor_masses("Li2Mn3O7", ["LiOH", "MnO2"])
    bad = precursor_masses("Li2Mn3O7", ["Li2CO3", "MnO2"])
    lab = SimLab(world, seed=5, speedup=1e7, workdir=tmp_path)
    outs: dict[str, list] = {}

    async def body(d: Dispatcher) -> None:
        for sample, masses in (("S-good", good), ("S-bad", bad)):
            outs[sample] = []
            for cmd in steps(sample, masses):
                out = await d.submit(cmd)
                assert out.status == "succeeded", out.error
                outs[sample].append((cmd, out))
        heat_cmd, heat_out = outs["S-good"][1]
        again = await d.submit(heat_cmd)  # a duplicate: answered from the driver's ledger
        assert again.result == heat_out.result

    asyncio.run(run_lab(lab, False, body))
    dose = outs["S-good"][0][1].result
    asked = {Composition(f).reduced_formula: m for f, m in good.items()}
    for item in dose["dispensed"]:
        assert item["mass_g"] == pytest.approx(asked[item["formula"]], rel=0.06)
        assert item["mass_g"] != asked[item["formula"]]  # the balance has an error
    heat = outs["S-good"][1][1].result
    expected = profile_duration_min(PROFILE, world.instruments.furnaces.cooling_c_per_min)
    assert heat["sim_time_min"] == pytest.approx(expected + world.instruments.furnaces.load_min)
    xrd = outs["S-good"][3][1].result
    assert len(xrd["two_theta"]) == len(xrd["intensities"]) == 3501
    assert "phases" not in xrd["meta"]  # the instrument does not leak the truth
    truth = lab.truth()
    # seed 5 amorphises about half of the product in S-good (an 8 % chance per crucible):
    # XRD cannot see it, so the target counts as made only if the crystalline part reaches 50 %
    good_phases = truth.sample_phases("S-good")
    assert good_phases.get("Li2Mn3O7", 0) + truth.amorphous_fraction("S-good") > 0.9
    assert truth.sample_phases("S-bad").get("Li2Mn3O7", 0) < 0.5
    assert truth.was_made("Li2Mn3O7") == (good_phases["Li2Mn3O7"] >= 0.5)
    assert not truth.was_made("LiMnO2")
    actions = [(line["sample_id"], line["action"]) for line in truth.ledger()]
    assert actions == [(s, a) for s in ("S-good", "S-bad") for a in ("dose_mix", "heat", "recover", "xrd")]
    assert truth.duplicate_executions() == 0
    assert truth.makeable_targets() == {"Li2Mn3O7"}


def test_seeded_instrument_faults_fail_before_acting(world, tmp_path: Path) -> None:
    lab = SimLab(world, seed=1, speedup=1e7, workdir=tmp_path,
                 faults=FaultConfig(instrument_error_rate=1.0))

    async def body(d: Dispatcher) -> None:
        out = await d.submit(steps("S1", {"MnO2": 1.0})[0])
        assert out.status == "failed" and "simulated instrument fault" in out.error

    asyncio.run(run_lab(lab, False, body))
    assert lab.truth().ledger() == []


def test_instrument_faults_follow_the_seed_not_the_command_ids(world, tmp_path: Path) -> None:
    """Two labs with one seed, the same steps sent as new commands (new ids): the same steps
    fail; a retry of a failed step on the same crucible is a new draw."""

    def faults(run: str) -> list[bool]:
        lab = SimLab(world, seed=3, speedup=1e7, workdir=tmp_path / run,
                     faults=FaultConfig(instrument_error_rate=0.5))
        failed: list[bool] = []

        async def body(d: Dispatcher) -> None:
            for i in range(12):
                out = await d.submit(steps(f"S{i}", {"MnO2": 1.0})[0])
                failed.append(out.status == "failed")
            first = failed.index(True)
            for _ in range(6):  # the same step on the same crucible again, as the controller would
                out = await d.submit(steps(f"S{first}", {"MnO2": 1.0})[0])
                failed.append(out.status == "failed")

        asyncio.run(run_lab(lab, False, body))
        return failed

    a, b = faults("a"), faults("b")
    assert a == b
    assert any(a[:12]) and not all(a[:12])
    assert not all(a[12:])  # the retries are not all the first attempt's fault again


def test_a_heat_retried_on_another_furnace_is_the_next_draw(world, tmp_path: Path) -> None:
    """The furnaces of a lab count attempts together: a failed firing retried on the other
    furnace draws as the second attempt, not the first again."""
    from sim_lab.instruments import _rng

    lab = SimLab(world, seed=3, speedup=1e7, workdir=tmp_path, furnaces=2,
                 faults=FaultConfig(instrument_error_rate=0.5))
    failed: list[bool] = []
    furnaces: set[str | None] = set()

    async def body(d: Dispatcher) -> None:
        while (await d.submit(steps("S0", {"MnO2": 1.0})[0])).status != "succeeded":
            pass
        for k in range(8):  # each retry on the other furnace
            out = await d.submit(steps("S0", {"MnO2": 1.0})[1], driver=f"sim-furnace-{k % 2 + 1}")
            failed.append(out.status == "failed")
            furnaces.add(out.driver)

    asyncio.run(run_lab(lab, False, body))
    assert furnaces == {"sim-furnace-1", "sim-furnace-2"}
    assert failed == [_rng(3, "fault", "heat", "S0", k).random(2)[0] < 0.5 for k in range(1, 9)]


def test_off_shelf_precursor_and_missing_crucible_are_instrument_errors(world, tmp_path: Path) -> None:
    lab = SimLab(world, seed=1, speedup=1e7, workdir=tmp_path)

    async def body(d: Dispatcher) -> None:
        out = await d.submit(steps("S1", {"Fe2O3": 1.0})[0])
        assert out.status == "failed" and "not on the shelf" in out.error
        out = await d.submit(steps("S2", {"MnO2": 1.0})[1])
        assert out.status == "failed" and "no crucible labelled S2" in out.error

    asyncio.run(run_lab(lab, False, body))


def test_station_processes_share_the_sample_store(world, tmp_path: Path) -> None:
    lab = SimLab(world, seed=2, speedup=1e7, workdir=tmp_path, heartbeat_s=0.5)
    results = {}

    async def body(d: Dispatcher) -> None:
        for cmd in steps("S-p", precursor_masses("Li2Mn3O7", ["LiOH", "MnO2"])):
            out = await d.submit(cmd)
            assert out.status == "succeeded", out.error
            results[cmd.capability] = out
        drivers = {i.identity for i in d.drivers() if i.alive}
        assert {"sim-dosing", "sim-furnace-1", "sim-xrd"} <= drivers

    asyncio.run(run_lab(lab, True, body))
    ledger = lab.truth().ledger()
    assert [line["instrument"] for line in ledger][:2] == ["sim-dosing", results["heat"].driver]
    truth = lab.truth()  # seed 2 happens to amorphise part of the product in this crucible
    made = truth.sample_phases("S-p").get("Li2Mn3O7", 0)
    assert made == max(truth.sample_phases("S-p").values())
    assert made + truth.amorphous_fraction("S-p") > 0.7


@pytest.mark.parametrize("role", ["dosing", "furnace", "xrd"])
def test_conformance_kit_passes_on_every_simulated_instrument(world, role: str, tmp_path: Path) -> None:
    report = check_driver(
        conformance_class(role, world),
        options={"world": world, "workdir": str(tmp_path), "speedup": 1e7},
        workdir=tmp_path,
        heartbeat_s=0.5,  # the heartbeat check counts beats; a loaded 2-core box needs slack
    )
    assert report.passed, report.format()


def test_a_hung_instrument_expires_and_does_nothing(world, tmp_path: Path) -> None:
    lab = SimLab(world, seed=1, speedup=1e7, workdir=tmp_path, faults=FaultConfig(timeout_rate=1.0))

    async def body(d: Dispatcher) -> None:
        cmd = steps("S1", {"MnO2": 1.0})[0]
        out = await d.submit(cmd.model_copy(update={"deadline_s": 1.0}))
        assert out.status == "expired", (out.status, out.error)

    asyncio.run(run_lab(lab, False, body))
    assert lab.truth().ledger() == []


def test_dropped_and_duplicated_frames_never_run_an_action_twice(world, tmp_path: Path) -> None:
    lab = SimLab(world, seed=4, speedup=1e7, workdir=tmp_path,
                 faults=FaultConfig(drop_rate=0.2, duplicate_rate=0.3, seed=4))

    async def body(d: Dispatcher) -> None:
        for i in range(3):
            for cmd in steps(f"S{i}", {"LiOH": 0.4, "MnO2": 1.2}):
                out = await d.submit(cmd)
                assert out.status == "succeeded", (out.status, out.error)

    asyncio.run(run_lab(lab, False, body))
    truth = lab.truth()
    assert len(truth.ledger()) == 12
    assert truth.duplicate_executions() == 0


def test_a_crashed_station_process_restarts_without_repeating_anything(world, tmp_path: Path) -> None:
    lab = SimLab(world, seed=3, speedup=1e7, workdir=tmp_path, heartbeat_s=0.5,
                 faults=FaultConfig(crash_after_commands=1))
    outcome = {}

    async def body(d: Dispatcher) -> None:
        first = steps("S1", {"MnO2": 1.0})[0]
        assert (await d.submit(first)).status == "succeeded"
        second = steps("S2", {"MnO2": 1.0})[0]
        lost = await d.submit(second)  # the dosing process dies on its second command
        outcome["lost"] = lost.status
        assert lab.processes()["sim-dosing"].wait(30) == 17
        lab.restart("sim-dosing")
        await d.wait_for({"dose_mix"}, 120)
        again = await d.submit(second)  # same id: the ledger says it was interrupted, not run
        outcome["again"] = (again.status, again.error)
        fresh = await d.submit(second.model_copy(update={"command_id": str(uuid.uuid4())}))
        assert fresh.status == "succeeded", fresh.error

    d = Dispatcher("tcp://127.0.0.1:*", heartbeat_s=0.5, lost_after=4)

    async def main() -> None:
        await d.start()
        try:
            lab.start(d.endpoint, processes=True)
            await d.wait_for({"dose_mix"}, 120)
            await body(d)
        finally:
            lab.stop()
            await d.close()

    asyncio.run(main())
    assert outcome["lost"] in ("lost", "failed", "expired")
    assert outcome["again"][0] == "failed" and "interrupted" in outcome["again"][1]
    truth = lab.truth()
    assert [(x["sample_id"], x["action"]) for x in truth.ledger()] == [("S1", "dose_mix"), ("S2", "dose_mix")]
    assert truth.duplicate_executions() == 0


def _exited(pid: int) -> bool:
    """Gone or a zombie nobody reaps (a container's pid 1 may not): either way it stopped."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state


def test_a_station_started_by_a_lab_stops_when_that_lab_is_killed(tmp_path: Path) -> None:
    # a controller that runs the simulated lab itself is its stations' parent; after its SIGKILL
    # the stations must not linger (a restarted controller would start a second set beside them)
    import os
    import signal
    import subprocess
    import time

    owner = textwrap.dedent(f"""
        import os, subprocess, sys, time
        station = subprocess.Popen([sys.executable, "-m", "sim_lab.serve", "xrd",
                                    "--connect", "tcp://127.0.0.1:9", "--identity", "sim-xrd",
                                    "--world", "demo", "--workdir", {str(tmp_path)!r},
                                    "--parent-pid", str(os.getpid())])
        print(station.pid, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", owner], stdout=subprocess.PIPE, text=True)
    station = int(proc.stdout.readline())
    time.sleep(1.0)
    assert not _exited(station)  # running while its lab lives
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 60
    while not _exited(station) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _exited(station), "the station outlived the process that started it"
