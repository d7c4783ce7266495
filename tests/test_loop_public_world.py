"""The brain's view of a simulated world holds public information only, by construction."""

from __future__ import annotations

import dataclasses

import pytest

from controller.loop import PublicWorld
from sim_lab import load_world


def test_the_public_view_of_the_demo_world_has_no_way_to_its_truth() -> None:
    world = load_world("demo")
    view = PublicWorld.from_world(world)
    assert [f.name for f in dataclasses.fields(view)] == ["target_formulas", "precursors",
                                                          "known_structures", "computed_structures"]
    assert not hasattr(view, "__dict__")  # no attribute besides the four fields (slots)
    # nothing in it refers to the world or its model (where the truth lives)
    for value in (view.target_formulas, view.precursors, *view.known_structures.values(),
                  *view.computed_structures.values()):
        assert value is not world and value is not world.model
    assert view.target_formulas == tuple(world.target_formulas())
    assert view.precursors == tuple(world.precursors)
    assert set(view.known_structures) == set(world.known_formulas())
    hypothetical = [f for f in view.target_formulas if f not in world.known_formulas()]
    assert hypothetical and not set(hypothetical) & set(view.known_structures)
    with pytest.raises(TypeError):  # read-only: the brain cannot add a structure to the view
        view.known_structures[hypothetical[0]] = view.known_structures[world.known_formulas()[0]]
    for formula, structure in view.known_structures.items():  # copies: the lab's objects stay the lab's
        assert structure is not world.known_structure(formula)
        assert structure == world.known_structure(formula)


@pytest.mark.parametrize("name", ["demo-v1", "demo", "alab-like-v2"])  # none published / all
def test_computed_structures_of_targets_are_public_but_not_the_true_ones(name: str) -> None:
    world = load_world(name)
    view = PublicWorld.from_world(world)
    assert set(view.computed_structures) == set(world.computed_formulas())
    assert bool(view.computed_structures) == (name != "demo-v1")  # an older world file: none
    if name != "demo-v1":
        assert set(view.computed_structures) == set(view.target_formulas)  # every target has one
    for formula, structure in view.computed_structures.items():
        assert formula in view.target_formulas and formula not in view.known_structures
        assert structure is not world.computed_structure(formula)
        # the lab's true crystal (hidden; read here only to check) differs from the computed one
        assert abs(structure.volume - world.structure(formula).volume) > 1e-6 * structure.volume
