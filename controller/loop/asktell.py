"""The loop's decisions as an ask–tell face: ask for the next experiments, tell the outcome.

Why: a recipe strategy should be testable before it spends furnace time — against a table of
recorded outcomes, a virtual clock, or a person at a bench — and a campaign on a lab should
decide exactly as such a script does. So the step that turns a target's history into its next
experiment, :func:`advance_target`, is written once over a small :class:`Book` protocol (where
targets, recipes and experiments are kept). The orchestrator passes the SQL store
(``records.CampaignRecords``); :class:`AskTell` passes memory, with no lab, no database and no
event loop::

    loop = AskTell(RecipePlanner(stock=[...]), Rules(max_recipes=5))
    loop.add_target("LiMn2O4")
    while proposals := loop.ask():
        for p in proposals:
            loop.tell(p.experiment_id, phases={...}, target_yield=0.31)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from recipes import Exhausted, Observation, Recipe, RecipeError, RecipePlanner, TargetSpec

from ..store import ExperimentState, FailureKind, TargetState
from .history import PlannedRecipe, TargetHistory, Trial, observation
from .policy import (
    PlanRecipes,
    ReplaceRecipe,
    Retire,
    Rules,
    RunRecipe,
    Verdict,
    adopt_replacement,
    next_action,
    verdict,
)


class Book(Protocol):
    """Where a loop keeps its targets, recipes and experiments (the store, or memory)."""

    def target(self, target_id: int) -> TargetHistory: ...

    def observations(self) -> list[Observation]: ...

    def add_recipes(self, target_id: int, planned: Sequence[Recipe], *,
                    replaces: int | None = None) -> list[int]: ...

    def propose(self, target_id: int, recipe_id: int, *, attempt: int, why: str,
                budget_left: int | None = None) -> int: ...

    def retire(self, target_id: int, reason: str) -> None: ...


def advance_target(book: Book, target_id: int, planner: RecipePlanner, rules: Rules, *,
                   budget_left: int | None = None,
                   history: Callable[[], list[Observation]] | None = None) -> int:
    """Give one target its next experiment (planning or replacing recipes on the way), or
    retire it. Returns the number of experiments proposed (0 or 1).

    ``history``: the planner's memory (every judged experiment of the campaign); by default
    the book's. Planner calls are the slow part; the book writes each result before the next
    decision, so an interruption anywhere resumes from what was written.
    """
    memory = history or book.observations
    for _ in range(3):  # plan -> run, or replace -> run: at most two decisions per call
        target = book.target(target_id)
        action = next_action(target, rules)
        if action is None:
            return 0
        if isinstance(action, Retire):
            book.retire(target_id, action.reason)
            return 0
        if isinstance(action, RunRecipe):
            return book.propose(target_id, action.recipe_id, attempt=action.attempt, why=action.why,
                                budget_left=budget_left)
        if isinstance(action, PlanRecipes):
            try:
                planned = planner.initial_recipes(
                    TargetSpec(formula=action.formula, e_form_ev_per_atom=action.e_form), memory())
            except RecipeError as exc:
                book.retire(target_id, f"planner: {exc}")
                return 0
            if not planned:
                book.retire(target_id, "the planner found no recipe from the precursors on the shelf")
                return 0
            book.add_recipes(target_id, planned[:rules.max_recipes])
            continue
        if isinstance(action, ReplaceRecipe):
            trial = action.trial
            failed = observation(action.failed.recipe, trial)
            out = planner.replace(action.failed.recipe, failed, memory())
            if isinstance(out, Exhausted):
                book.retire(target_id, f"planner: {out.reason}")
                return 0
            recipe_id = adopt_replacement(target, out)
            if recipe_id is None:
                (recipe_id,) = book.add_recipes(target_id, [out], replaces=action.failed.id)
            return book.propose(target_id, recipe_id, attempt=1,
                                why=f"replaces recipe {action.failed.id} "
                                    f"(yield {trial.target_yield or 0:.2f})",
                                budget_left=budget_left)
    raise RuntimeError(f"target {target_id}: no decision after planning (a policy bug)")


@dataclass(frozen=True)
class Proposal:
    """An experiment to run: which target, which recipe, which attempt, and why."""

    experiment_id: int
    target: str
    recipe: Recipe
    attempt: int
    why: str


@dataclass
class _MemoryTarget:
    history: TargetHistory
    reason: str | None = None
    whys: dict[int, str] = field(default_factory=dict)


class AskTell:
    """The closed loop's recipe decisions in memory: no lab, no database, no event loop.

    ``ask()`` returns one new experiment for every active target that has none open (the
    loop's rule: a target's next recipe waits for its last result); ``tell()`` takes the
    outcome and returns the verdict, with the same claim, repeat, replacement and exhaustion
    rules a campaign uses (``policy.py``).
    """

    def __init__(self, planner: RecipePlanner, rules: Rules | None = None, *,
                 max_experiments: int | None = None):
        self.planner = planner
        self.rules = rules or Rules()
        self.max_experiments = max_experiments
        self._targets: dict[int, _MemoryTarget] = {}
        self._trial_target: dict[int, int] = {}
        self._next_id = 1

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    # the Book protocol -------------------------------------------------------
    def target(self, target_id: int) -> TargetHistory:
        return self._targets[target_id].history

    def observations(self) -> list[Observation]:
        return [o for t in self._targets.values() for o in t.history.observations()]

    def add_recipes(self, target_id: int, planned: Sequence[Recipe], *,
                    replaces: int | None = None) -> list[int]:
        t = self._targets[target_id]
        n = len(t.history.recipes)
        new = tuple(PlannedRecipe(self._new_id(), n + i, r, replaces)
                    for i, r in enumerate(planned, start=1))
        t.history = replace(t.history, recipes=t.history.recipes + new)
        return [r.id for r in new]

    def propose(self, target_id: int, recipe_id: int, *, attempt: int, why: str,
                budget_left: int | None = None) -> int:
        if budget_left is not None and budget_left <= 0:
            return 0
        t = self._targets[target_id]
        trial = Trial(self._new_id(), recipe_id, attempt, ExperimentState.QUEUED)
        t.history = replace(t.history, trials=t.history.trials + (trial,))
        t.whys[trial.id] = why
        self._trial_target[trial.id] = target_id
        return 1

    def retire(self, target_id: int, reason: str) -> None:
        self._set_state(target_id, TargetState.EXHAUSTED, reason)

    def _set_state(self, target_id: int, state: TargetState, reason: str) -> None:
        t = self._targets[target_id]
        t.history = replace(t.history, state=state)
        t.reason = reason

    # the face ----------------------------------------------------------------
    def add_target(self, formula: str, *, e_form: float | None = None) -> int:
        """A compound to make; returns its id."""
        tid = self._new_id()
        self._targets[tid] = _MemoryTarget(TargetHistory(tid, formula, TargetState.ACTIVE, e_form))
        return tid

    @property
    def experiments_used(self) -> int:
        return len(self._trial_target)

    def ask(self) -> list[Proposal]:
        """The next experiment of every active target that is waiting for one."""
        out = []
        for tid in list(self._targets):
            left = None if self.max_experiments is None else self.max_experiments - self.experiments_used
            if left is not None and left <= 0:
                break
            before = {t.id for t in self.target(tid).trials}
            if advance_target(self, tid, self.planner, self.rules, budget_left=left):
                t = self._targets[tid]
                (trial,) = [x for x in t.history.trials if x.id not in before]
                out.append(Proposal(trial.id, t.history.formula, t.history.recipe(trial.recipe_id).recipe,
                                    trial.attempt, t.whys[trial.id]))
        return out

    def tell(self, experiment_id: int, *, phases: Mapping[str, float], target_yield: float,
             yield_lower: float | None = None) -> Verdict:
        """The outcome of an experiment: phases (formula -> weight fraction) and the target's
        yield, with the lower bound of that yield when the analysis gives one."""
        lower = target_yield if yield_lower is None else yield_lower
        v = verdict(target_yield, lower, self.rules.yield_threshold)
        self._finish(experiment_id, replace_fields=dict(
            state=v.state, failure_kind=v.failure_kind, target_yield=float(target_yield),
            yield_lower=float(lower), phases=dict(phases)))
        if v.made:
            self._set_state(self._trial_target[experiment_id], TargetState.MADE,
                            f"made by experiment {experiment_id} (yield {target_yield:.2f})")
        return v

    def tell_failure(self, experiment_id: int, reason: str) -> None:
        """The lab, not the chemistry, spoiled the experiment (it is re-run once)."""
        self._finish(experiment_id, replace_fields=dict(state=ExperimentState.FAILED,
                                                        failure_kind=FailureKind.INSTRUMENT))
        self._targets[self._trial_target[experiment_id]].whys[experiment_id] += f"; failed: {reason}"

    def _finish(self, experiment_id: int, *, replace_fields: dict) -> None:
        tid = self._trial_target.get(experiment_id)
        if tid is None:
            raise KeyError(f"no experiment {experiment_id} was asked for")
        t = self._targets[tid]
        trials = list(t.history.trials)
        i = next(i for i, x in enumerate(trials) if x.id == experiment_id)
        if trials[i].finished:
            raise ValueError(f"experiment {experiment_id} was already told ({trials[i].state})")
        trials[i] = replace(trials[i], **replace_fields)
        t.history = replace(t.history, trials=tuple(trials))

    def status(self) -> dict[str, tuple[str, str | None]]:
        """formula -> (target state, reason)."""
        return {t.history.formula: (t.history.state.value, t.reason) for t in self._targets.values()}
