"""Simulated instruments wrapped for the drivers conformance kit.

Why a wrapper: the kit sends fixed example params (``Li2CO3`` + ``Fe2O3``, sample ``S-conf-N``)
that a world's shelf or sample store may not hold. The wrapper declares
``conformance_params`` built from the world's own shelf and pre-doses one crucible the heat,
recover and xrd checks act on. Nothing else changes: the kit exercises the real instrument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .instruments import SimInstrument, instrument_class
from .physics import dose
from .world import World, load_world

CONFORMANCE_SAMPLE = "S-conformance"


def conformance_class(role: str, world: World | str) -> type[SimInstrument]:
    """A subclass of the role's instrument that the drivers conformance kit can run."""
    w = world if isinstance(world, World) else load_world(world)
    base = instrument_class(role, w)
    shelf = w.precursors[:2]
    params: dict[str, dict[str, Any]] = {
        "dose_mix": {
            "sample_id": "S-conformance-dose",
            "precursors": [{"formula": f, "target_mass_g": 0.5} for f in shelf],
        },
        "heat": {
            "sample_ids": [CONFORMANCE_SAMPLE],
            "profile": [{"ramp_c_per_min": 10.0, "setpoint_c": 800.0, "dwell_min": 60.0}],
            "atmosphere": "air",
        },
        "recover": {"sample_id": CONFORMANCE_SAMPLE, "grind": True},
        "xrd": {"sample_id": CONFORMANCE_SAMPLE, "two_theta_start": 10.0, "two_theta_end": 80.0,
                "step": 0.02, "scan_time_min": 8.0},
    }

    def __init__(self: SimInstrument, identity: str, ledger_path: str | Path, **kwargs: Any) -> None:
        kwargs.setdefault("world", w)
        base.__init__(self, identity, ledger_path, **kwargs)
        if self.store.get(CONFORMANCE_SAMPLE) is None:
            state = dose(self.world, {f: 0.5 for f in shelf})
            self.store.put(CONFORMANCE_SAMPLE, state, "dosing-rack", instrument="conformance-setup",
                           command_id="conformance-setup", action="dose_mix", sim_time_min=0.0)

    return type(base.__name__, (base,), {"conformance_params": params, "__init__": __init__,
                                         "__module__": base.__module__})
