"""Simulated instruments on the driver SDK: dosing/mixing station, box furnaces, XRD station.

Each is a :class:`drivers.Driver` subclass, so the controller cannot tell them from real
instruments: same registration, heartbeats, at-most-once ledger, deadlines. They act on the
crucibles in the lab's shared :class:`~sim_lab.store.SampleStore` and write one execution-ledger
line per physical action. Durations are real lab durations (simulated minutes, reported as
``sim_time_min``); the wall clock sleeps ``duration / speedup``.

Faults (seeded per command id, so a run is reproducible): an instrument error before acting, a
hang past the command's deadline (the controller sees it expire), and a hard crash of the driver
process after N commands (only when ``allow_crash``: in-process labs never kill their host).
"""

from __future__ import annotations

import asyncio
import os
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pymatgen.core import Composition

from drivers import Command, Driver, InstrumentError, ProgressFn

from .physics import dose, heat, profile_duration_min
from .store import SampleStore
from .world import World, load_world

WAVELENGTH = 1.54056  # Cu K-alpha1 (the XRD simulator's wavelength)


def _rng(*parts: Any) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(str(p).encode()) for p in parts])


class SimInstrument(Driver):
    """Common part of the simulated instruments (world, shared store, clock, faults)."""

    capabilities: ClassVar[tuple[str, ...]] = ("abstract",)
    version: ClassVar[str] = "sim-1"
    # (lab workdir, step, samples) -> executions, shared by the instruments of one process:
    # a retry that lands on another furnace of the same lab is the next attempt, not the first
    _fault_attempts: ClassVar[dict[tuple[str, str, str], int]] = {}

    def __init__(
        self,
        identity: str,
        ledger_path: str | Path,
        *,
        world: World | str = "demo",
        workdir: str | Path | None = None,
        speedup: float = 1e6,
        seed: int = 0,
        instrument_error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        crash_after_commands: int | None = None,
        allow_crash: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(identity, ledger_path, **options)
        self.world = world if isinstance(world, World) else load_world(world)
        self.workdir = Path(workdir) if workdir else Path(ledger_path).resolve().parent
        self.store = SampleStore(self.workdir / "samples.sqlite")
        if speedup <= 0:
            raise ValueError(f"speedup must be > 0, got {speedup}")
        self.speedup = float(speedup)
        self.seed = int(seed)
        self.instrument_error_rate = float(instrument_error_rate)
        self.timeout_rate = float(timeout_rate)
        self.crash_after_commands = crash_after_commands
        self.allow_crash = allow_crash
        self.commands_seen = 0

    async def execute(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        self.commands_seen += 1
        if (
            self.allow_crash
            and self.crash_after_commands is not None
            and self.commands_seen > self.crash_after_commands
        ):
            os._exit(17)  # a driver process dying mid-command, as a power cut would
        draw = self._fault_rng(command).random(2)
        if draw[0] < self.instrument_error_rate:
            raise InstrumentError(f"{self.identity}: simulated instrument fault (seeded), nothing was done")
        if draw[1] < self.timeout_rate:
            await asyncio.sleep(command.deadline_s + 5.0)
            raise InstrumentError(f"{self.identity}: instrument hung past the deadline, nothing was done")
        try:
            return await self.act(command, progress)
        except InstrumentError:
            raise
        except (ValueError, KeyError) as exc:  # bad params or a broken world: say which
            raise InstrumentError(f"{self.identity}: {exc}") from exc

    def _fault_rng(self, command: Command) -> np.random.Generator:
        """The generator of this execution's fault draws: keyed by the lab seed, the step, its
        samples and how many times the lab's instruments in this process (all furnaces share
        one) have executed that step on them.

        Why not the command id: it is a fresh UUID (time and urandom) for every command, so the
        same campaign drew different faults in every run although the seed was the same. Keyed
        by what the command does, the faults follow the seed; a retry of a failed step (a new
        command on the same samples) is the next attempt and draws again. The counts live in
        this process: after an instrument restart a retry draws as a first attempt again."""
        if not command.sample_ids:
            return _rng(self.seed, "fault", command.command_id)
        step, samples = command.capability, ",".join(sorted(command.sample_ids))
        key = (str(self.workdir.resolve()), step, samples)
        attempt = self._fault_attempts[key] = self._fault_attempts.get(key, 0) + 1
        return _rng(self.seed, "fault", step, samples, attempt)

    async def act(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        raise NotImplementedError

    async def wait_sim(self, minutes: float, progress: ProgressFn, what: str) -> None:
        """Let ``minutes`` of lab time pass (wall: minutes*60/speedup), reporting progress."""
        wall = minutes * 60.0 / self.speedup
        steps = 4 if wall > 0.2 else 1
        for i in range(steps):
            await asyncio.sleep(wall / steps)
            await progress((i + 1) / steps, f"{what}: {minutes * (i + 1) / steps:.0f} of {minutes:.0f} lab-min")


class DosingStation(SimInstrument):
    """Weighs precursors from the shelf into a new crucible and mixes them (1-2 % mass error)."""

    capabilities: ClassVar[tuple[str, ...]] = ("dose_mix",)
    capacity: ClassVar[int] = 1

    async def act(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        p = command.params
        sample_id = p["sample_id"]
        par = self.world.instruments.dosing
        rng = _rng(self.seed, "dose", sample_id)
        dispensed: dict[str, float] = {}
        total = 0.0
        for item in p["precursors"]:
            formula, target = item["formula"], float(item["target_mass_g"])
            if not self.world.has_phase(formula) or Composition(formula).reduced_formula not in self.world.precursors:
                raise InstrumentError(
                    f"precursor {formula} is not on the shelf (shelf: {', '.join(self.world.precursors)})"
                )
            got = max(0.0, target * (1.0 + rng.normal(0.0, par.mass_error_rel)))
            key = Composition(formula).reduced_formula
            dispensed[key] = dispensed.get(key, 0.0) + got
            total += got
        if total > par.max_mass_g:
            raise InstrumentError(f"{total:.2f} g exceeds the crucible's {par.max_mass_g} g")
        state = await asyncio.to_thread(dose, self.world, dispensed)
        minutes = par.mixing_min + par.minutes_per_precursor * len(dispensed)
        await self.wait_sim(minutes, progress, "dosing and mixing")
        self.store.put(
            sample_id, state, "dosing-rack", instrument=self.identity, command_id=command.command_id,
            action="dose_mix", sim_time_min=minutes,
            detail={"dispensed": {k: round(v, 6) for k, v in dispensed.items()}},
        )
        return {
            "sample_id": sample_id,
            "dispensed": [{"formula": k, "mass_g": round(v, 6)} for k, v in dispensed.items()],
            "location": "dosing-rack",
            "sim_time_min": round(minutes, 3),
        }


class BoxFurnace(SimInstrument):
    """A box furnace: runs a heating profile on up to ``capacity`` crucibles at once."""

    capabilities: ClassVar[tuple[str, ...]] = ("heat",)
    capacity: ClassVar[int] = 4

    async def act(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        p = command.params
        par = self.world.instruments.furnaces
        profile = p["profile"]
        atmosphere = p.get("atmosphere", "air")
        ids = list(p["sample_ids"])
        if len(ids) > par.capacity:
            raise InstrumentError(f"{len(ids)} crucibles do not fit: this furnace holds {par.capacity}")
        top = max(float(s["setpoint_c"]) for s in profile)
        if top > par.max_temperature_c:
            raise InstrumentError(f"setpoint {top} C above this furnace's {par.max_temperature_c} C")
        states = {}
        for sid in ids:
            state = self.store.get(sid)
            if state is None:
                raise InstrumentError(f"no crucible labelled {sid} was dosed; nothing was heated")
            states[sid] = state
        for sid, state in states.items():
            await asyncio.to_thread(
                heat, self.world, state, profile, atmosphere=atmosphere,
                seed=zlib.crc32(f"{self.seed}:{sid}".encode()),
            )
        minutes = par.load_min + profile_duration_min(profile, par.cooling_c_per_min)
        await self.wait_sim(minutes, progress, "firing")
        for sid, state in states.items():
            self.store.put(
                sid, state, self.identity, instrument=self.identity, command_id=command.command_id,
                action="heat", sim_time_min=minutes,
                detail={"profile": profile, "atmosphere": atmosphere},
            )
        return {
            "sample_ids": ids,
            "duration_min": round(minutes, 3),
            "max_temperature_c": top,
            "sim_time_min": round(minutes, 3),
        }


class XrdStation(SimInstrument):
    """Recovers and grinds a fired crucible, and records its powder pattern (Cu K-alpha1)."""

    capabilities: ClassVar[tuple[str, ...]] = ("recover", "xrd")
    capacity: ClassVar[int] = 1

    def __init__(self, identity: str, ledger_path: str | Path, **kwargs: Any) -> None:
        super().__init__(identity, ledger_path, **kwargs)
        from .xrd import PatternSimulator  # imported here: only this station needs it

        self.sim = PatternSimulator(self.world, self.workdir / "xrd-cache")

    async def act(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        if command.capability == "recover":
            return await self._recover(command, progress)
        return await self._scan(command, progress)

    async def _recover(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        sid = command.params["sample_id"]
        state = self.store.get(sid)
        if state is None:
            raise InstrumentError(f"no crucible labelled {sid} in the lab")
        par = self.world.instruments.recover
        loss = par.loss_fraction * (0.5 + _rng(self.seed, "recover", sid).random())
        state.scale(1.0 - loss)
        await self.wait_sim(par.duration_min, progress, "recovering and grinding")
        self.store.put(
            sid, state, "xrd-station", instrument=self.identity, command_id=command.command_id,
            action="recover", sim_time_min=par.duration_min,
            detail={"grind": bool(command.params.get("grind", True))},
        )
        return {
            "sample_id": sid,
            "mass_g": round(state.total_mass_g(), 6),
            "location": "xrd-station",
            "sim_time_min": round(par.duration_min, 3),
        }

    async def _scan(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        p = command.params
        sid = p["sample_id"]
        state = self.store.get(sid)
        if state is None:
            raise InstrumentError(f"no crucible labelled {sid} in the lab")
        scan = float(p.get("scan_time_min", 8.0))
        minutes = self.world.instruments.xrd.prep_min + scan
        scans_before = self.store.record(
            instrument=self.identity, command_id=command.command_id, sample_id=sid, action="xrd",
            sim_time_min=minutes, detail={"scan_time_min": scan},
        )
        tt, counts = await asyncio.to_thread(
            self.sim.pattern,
            state.weight_fractions(),
            amorphous_fraction=state.amorphous_fraction(),
            max_temperature_c=state.max_temperature_c,
            two_theta_start=float(p.get("two_theta_start", 10.0)),
            two_theta_end=float(p.get("two_theta_end", 80.0)),
            step=float(p.get("step", 0.02)),
            scan_time_min=scan,
            seed=zlib.crc32(f"{self.seed}:{sid}:{scans_before}".encode()),
        )
        await self.wait_sim(minutes, progress, "scanning")
        return {
            "sample_id": sid,
            "two_theta": [round(float(x), 4) for x in tt],
            "intensities": counts.tolist(),
            "wavelength_angstrom": WAVELENGTH,
            "meta": {
                "instrument": "simulated Bragg-Brentano diffractometer, Cu K-alpha1",
                "scan_time_min": scan,
                "step": float(p.get("step", 0.02)),
                "simulated": True,
            },
            "sim_time_min": round(minutes, 3),
        }


ROLES: dict[str, type[SimInstrument]] = {
    "dosing": DosingStation,
    "furnace": BoxFurnace,
    "xrd": XrdStation,
}


def instrument_class(role: str, world: World) -> type[SimInstrument]:
    """The class for a role with this world's furnace capacity (SDK capacity is a class attr)."""
    base = ROLES[role]
    if base is BoxFurnace and world.instruments.furnaces.capacity != BoxFurnace.capacity:
        return type("BoxFurnace", (BoxFurnace,), {"capacity": world.instruments.furnaces.capacity})
    return base
