"""Campaign strategies: named combinations of the other packages' own vocabularies.

Why not a vocabulary of its own: the recipe planner has its strategies (``recipes.STRATEGIES``)
and acquisition has its strategies (``surrogates.STRATEGIES``). A campaign strategy is a
choice of one of each plus whether the loop learns from its results — so it is written as
exactly that, and the baselines a benchmark compares against are visible as what they switch
off, not as names translated somewhere inside the brain.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Strategy:
    """How a campaign decides.

    ``recipes``: the planner's strategy (``recipes.STRATEGIES``). ``acquisition``: the target
    acquisition strategy (``surrogates.STRATEGIES``); None = the campaign file's
    ``acquisition.strategy``. ``learns``: replace failed recipes by active learning and
    retrain the surrogate on campaign results.
    """

    name: str
    recipes: str = "full"
    acquisition: str | None = None
    learns: bool = True


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("full"),
    # the planner's seeded random baseline: random stocked sets that balance
    Strategy("random_recipes", recipes="random"),
    # recipes ranked by driving force alone; nothing is learned from results
    Strategy("no_active_learning", recipes="driving_force", learns=False),
    # targets chosen at random from the pool instead of by the surrogate
    Strategy("random_targets", acquisition="random"),
)}


def strategy(name: str) -> Strategy:
    """The named strategy; a ValueError lists the names that exist."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; one of {', '.join(STRATEGIES)}") from None
