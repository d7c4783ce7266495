"""What the loop knows of a target and its experiments, as plain typed records.

Why a module of its own: the decisions (``policy.py``) read these records and nothing else, and
two places build them — the store (``records.py``, for a campaign with a lab) and memory
(``asktell.py``, for a script with no lab and no database). Keeping the types apart from both
builders lets the policy run without SQL, asyncio or instruments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from recipes import Observation, Recipe

from ..store import ExperimentState, FailureKind, TargetState


@dataclass(frozen=True)
class Trial:
    """One experiment of a target: its recipe, attempt, state and (once analysed) its result.

    ``target_yield`` is the analysis' best estimate; ``yield_lower`` the bound the claim rule
    uses (the lower end of the yield's uncertainty). ``phases`` maps formula -> weight fraction.
    """

    id: int
    recipe_id: int
    attempt: int
    state: ExperimentState
    failure_kind: FailureKind | None = None
    target_yield: float | None = None
    yield_lower: float | None = None
    phases: Mapping[str, float] = field(default_factory=dict, hash=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.state in (ExperimentState.SUCCEEDED, ExperimentState.FAILED,
                              ExperimentState.CANCELLED)

    @property
    def judged(self) -> bool:
        """Succeeded or failed on its chemistry (a yield was measured and judged): the
        experiments that spend one of the target's recipes."""
        return (self.state == ExperimentState.SUCCEEDED
                or (self.state == ExperimentState.FAILED
                    and self.failure_kind in (FailureKind.CHEMISTRY, FailureKind.UNVERIFIED)))

    @property
    def observed(self) -> bool:
        """Judged with a measured yield: what the planner learns from."""
        return self.judged and self.target_yield is not None

    @property
    def vouched_yield(self) -> float:
        """The yield the planner may learn from: the lower bound where the analysis could not
        vouch for its point estimate (an unverified claim), else the estimate."""
        y = float(self.target_yield or 0.0)
        if self.failure_kind == FailureKind.UNVERIFIED and self.yield_lower is not None:
            return float(self.yield_lower)
        return y


@dataclass(frozen=True)
class PlannedRecipe:
    """A recipe planned for a target: its place in the plan and what it replaced, if anything."""

    id: int
    ordinal: int
    recipe: Recipe
    replaces: int | None = None


@dataclass(frozen=True)
class TargetHistory:
    """A target with every recipe planned for it and every experiment run on it, in id order."""

    id: int
    formula: str
    state: TargetState
    predicted_e_form: float | None
    recipes: tuple[PlannedRecipe, ...] = ()
    trials: tuple[Trial, ...] = ()

    def recipe(self, recipe_id: int) -> PlannedRecipe:
        return next(r for r in self.recipes if r.id == recipe_id)

    def observations(self) -> list[Observation]:
        """The target's judged experiments as the planner's observations."""
        return [observation(self.recipe(t.recipe_id).recipe, t) for t in self.trials if t.observed]


def observation(recipe: Recipe, trial: Trial) -> Observation:
    """One judged experiment as the planner sees it (yield clipped to a weight fraction)."""
    return Observation(recipe=recipe, phases={k: float(v) for k, v in trial.phases.items()},
                       target_yield=min(max(trial.vouched_yield, 0.0), 1.0))
