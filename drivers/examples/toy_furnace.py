"""A toy box furnace: the smallest useful driver, and the template for a real one.

It offers the standard ``heat`` step (ramp/dwell segments, atmosphere) and a non-standard
``read_temperature`` capability. Time is scaled: ``seconds_per_min`` real seconds per furnace
minute (default 1 ms, so a 2-hour profile takes ~0.2 s). Every *physical action* (the start of
a heating program) is appended with fsync to ``actions_file`` before it begins, so tests can
count how often the instrument really acted — the at-most-once guarantee made visible.

Run it: ``synthloop driver serve drivers.examples:ToyFurnace --connect tcp://127.0.0.1:5555``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, ClassVar

from ..protocol import Command
from ..sdk import Driver, InstrumentError, ProgressFn

MAX_SETPOINT_C = 1200.0


class ToyFurnace(Driver):
    """Box furnace with two positions (capacity 2) and a thermocouple."""

    capabilities: ClassVar[tuple[str, ...]] = ("heat", "read_temperature")
    capacity: ClassVar[int] = 2
    version: ClassVar[str] = "toy-furnace 1.0"
    conformance_params: ClassVar[dict[str, dict[str, Any]]] = {"read_temperature": {}}

    def __init__(
        self,
        identity: str,
        ledger_path: str | Path,
        *,
        seconds_per_min: float = 0.001,
        actions_file: str | Path | None = None,
        **options: Any,
    ) -> None:
        super().__init__(identity, ledger_path, **options)
        self.seconds_per_min = float(seconds_per_min)
        env = os.environ.get("SYNTHLOOP_TOY_ACTIONS")
        self.actions_file = Path(actions_file) if actions_file else (Path(env) if env else None)
        self.temperature_c = 25.0

    def _record_action(self, command: Command) -> None:
        if self.actions_file is None:
            return
        with open(self.actions_file, "a", encoding="utf-8") as fh:
            fh.write(f"{self.identity} {command.capability} {command.command_id}\n")
            fh.flush()
            os.fsync(fh.fileno())

    async def execute(self, command: Command, progress: ProgressFn) -> dict[str, Any]:
        if command.capability == "read_temperature":
            return {"temperature_c": self.temperature_c}
        params = command.params
        profile = params["profile"]
        if any(seg["setpoint_c"] > MAX_SETPOINT_C for seg in profile):
            raise InstrumentError(
                f"setpoint above this furnace's limit of {MAX_SETPOINT_C:g} °C: refused"
            )
        self._record_action(command)
        minutes = 0.0
        peak = self.temperature_c
        for i, seg in enumerate(profile):
            ramp_min = abs(seg["setpoint_c"] - self.temperature_c) / seg["ramp_c_per_min"]
            seg_min = ramp_min + seg["dwell_min"]
            await asyncio.sleep(seg_min * self.seconds_per_min)
            minutes += seg_min
            self.temperature_c = seg["setpoint_c"]
            peak = max(peak, self.temperature_c)
            await progress((i + 1) / len(profile), f"segment {i + 1} at {seg['setpoint_c']:g} °C")
        self.temperature_c = 25.0  # cooled and unloaded
        return {
            "sample_ids": list(params["sample_ids"]),
            "duration_min": round(minutes, 3),
            "max_temperature_c": peak,
            "sim_time_min": round(minutes, 3),
        }
