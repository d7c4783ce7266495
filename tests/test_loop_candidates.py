"""The candidate pool the brain builds for a simulated lab: every wish-list target gets a
structure, and one that is a known compound gets its public one (not a prediction)."""

from __future__ import annotations

import yaml

from controller.config import example_config_text, parse_config
from controller.loop import Brain, PublicWorld
from sim_lab import load_world, widen_world


def test_known_targets_take_public_structures_and_hypothetical_ones_predicted() -> None:
    world = widen_world(load_world("demo"), name="demo-known", include_known=True)
    cfg = parse_config(yaml.safe_load(example_config_text()), "test")
    brain = Brain(cfg, world=PublicWorld.from_world(world))
    try:
        pool = {c.formula: c for c in brain.candidates()}
    finally:
        brain.close()
    known = set(world.known_formulas())
    targets = set(world.target_formulas())
    assert set(pool) <= targets and targets & known <= set(pool)  # every known target is in
    for formula, cand in pool.items():
        if formula in known:
            assert cand.source == "known-structure"
            assert cand.structure.as_dict() == world.known_structure(formula).as_dict()
        else:
            assert cand.source != "known-structure"
    assert any(f in known for f in pool) and any(f not in known for f in pool)
