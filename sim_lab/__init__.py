"""A simulated solid-state lab: a hidden world behind the same driver protocol as real instruments.

The face other packages use:

- worlds: :func:`load_world` (bundled "demo", "alab-like" or a file), :class:`World`,
  :class:`WorldError`, :func:`build_world`, :func:`bundled_worlds`;
- physics (pure, no sockets): :func:`simulate_recipe` (precursor grams + heating profile ->
  true weight fractions), :func:`simulate` (full :class:`SampleState`), :func:`profile_duration_min`;
- XRD: :func:`simulate_pattern`;
- the lab: :class:`SimLab` (in-process or separate driver processes), :class:`FaultConfig`,
  :class:`LabTruth` (scoring only).
"""

from .builder import build_world, precursor_masses, target_truth
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
from .store import SampleStore
from .world import FORMAT, World, WorldError, bundled_worlds, load_world, parse_world
from .xrd import PatternSimulator, simulate_pattern

__all__ = [
    "CONFORMANCE_SAMPLE",
    "FORMAT",
    "BoxFurnace",
    "DosingStation",
    "FaultConfig",
    "LabTruth",
    "PatternSimulator",
    "SampleStore",
    "SimInstrument",
    "SimLab",
    "XrdStation",
    "conformance_class",
    "instrument_class",
    "simulate_pattern",
    "SampleState",
    "Segment",
    "World",
    "WorldError",
    "as_profile",
    "build_world",
    "bundled_worlds",
    "load_world",
    "parse_world",
    "precursor_masses",
    "profile_duration_min",
    "simulate",
    "simulate_recipe",
    "target_truth",
]
