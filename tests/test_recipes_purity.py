"""A plan depends only on its arguments: planning other targets first (or a restart that
forgot them) does not change a target's recipes."""

from __future__ import annotations

from recipes import RecipePlanner, TargetSpec

STOCK = ["Li2CO3", "LiOH", "Li2O", "MnO2", "Mn2O3", "MnO", "MnCO3"]


def test_recipes_do_not_depend_on_targets_planned_before() -> None:
    fresh = RecipePlanner(stock=STOCK, seed=0).initial_recipes(TargetSpec("LiMn2O4"), [])
    shared = RecipePlanner(stock=STOCK, seed=0)
    # a hypothetical target predicted far below the hull: were it remembered, every Li + Mn
    # pair would be predicted to react to it first, and LiMn2O4's ranking would change
    shared.initial_recipes(TargetSpec("Li4Mn2O5", e_form_ev_per_atom=-3.0), [])
    again = shared.initial_recipes(TargetSpec("LiMn2O4"), [])
    assert [r.to_dict() for r in again] == [r.to_dict() for r in fresh]
