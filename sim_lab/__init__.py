"""A simulated solid-state lab: a hidden world behind the same driver protocol as real instruments.

The face other packages use:

- worlds: :func:`load_world` (bundled "demo", "alab-like", "alab-like-v2", ... or a file),
  :class:`World`, :class:`WorldError`, :func:`build_world`, :func:`recalibrate_world`,
  :func:`bundled_worlds`; statistics: :func:`world_stats`, :func:`target_outcomes`;
- physics (pure, no sockets): :func:`simulate_recipe` (precursor grams + heating profile ->
  true weight fractions), :func:`simulate` (full :class:`SampleState`), :func:`profile_duration_min`;
- XRD: :func:`simulate_pattern`;
- the lab: :class:`SimLab` (in-process or separate driver processes), :class:`FaultConfig`,
  :class:`LabTruth` (scoring only).
"""

# Lazy face: a station process imports only what it uses (the XRD calculator and the phase-diagram
# code take seconds to import on a busy machine; furnaces and the dosing station never need them).
import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "build_world": "builder",
    "widen_world": "builder",
    "recalibrate_world": "builder",
    "precursor_masses": "builder",
    "target_truth": "builder",
    "CONFORMANCE_SAMPLE": "conformance",
    "conformance_class": "conformance",
    "BoxFurnace": "instruments",
    "DosingStation": "instruments",
    "SimInstrument": "instruments",
    "XrdStation": "instruments",
    "instrument_class": "instruments",
    "FaultConfig": "lab",
    "LabTruth": "lab",
    "SimLab": "lab",
    "SampleState": "physics",
    "Segment": "physics",
    "as_profile": "physics",
    "profile_duration_min": "physics",
    "simulate": "physics",
    "simulate_recipe": "physics",
    "SampleStore": "store",
    "world_stats": "stats",
    "target_outcomes": "stats",
    "FORMAT": "world",
    "World": "world",
    "WorldError": "world",
    "bundled_worlds": "world",
    "load_world": "world",
    "parse_world": "world",
    "PatternSimulator": "xrd",
    "simulate_pattern": "xrd",
}

__all__ = [
    "BoxFurnace",
    "CONFORMANCE_SAMPLE",
    "DosingStation",
    "FORMAT",
    "FaultConfig",
    "LabTruth",
    "PatternSimulator",
    "SampleState",
    "SampleStore",
    "Segment",
    "SimInstrument",
    "SimLab",
    "World",
    "WorldError",
    "XrdStation",
    "as_profile",
    "build_world",
    "widen_world",
    "recalibrate_world",
    "bundled_worlds",
    "conformance_class",
    "instrument_class",
    "load_world",
    "parse_world",
    "precursor_masses",
    "profile_duration_min",
    "simulate",
    "simulate_pattern",
    "simulate_recipe",
    "target_outcomes",
    "target_truth",
    "world_stats",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sim_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from .builder import build_world, precursor_masses, recalibrate_world, target_truth, widen_world
    from .conformance import CONFORMANCE_SAMPLE, conformance_class
    from .instruments import BoxFurnace, DosingStation, SimInstrument, XrdStation, instrument_class
    from .lab import FaultConfig, LabTruth, SimLab
    from .physics import (
        SampleState,
        Segment,
        as_profile,
        profile_duration_min,
        simulate,
        simulate_recipe,
    )
    from .stats import target_outcomes, world_stats
    from .store import SampleStore
    from .world import FORMAT, World, WorldError, bundled_worlds, load_world, parse_world
    from .xrd import PatternSimulator, simulate_pattern
