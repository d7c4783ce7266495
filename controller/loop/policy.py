"""Every decision the closed loop makes, once, as plain functions of typed records.

Why pure: the same decisions drive a campaign on real instruments, a simulated lab, a replay of
recorded outcomes and a unit test. Nothing here touches SQL, asyncio, a model or a lab; the
orchestrator (``campaign.py``) and the ask-tell face (``asktell.py``) gather the records, ask
these functions what to do, and carry it out.

The rules, each in one place:
- **claim** (:func:`verdict`): a target is made only when the *lower bound* of its measured
  yield clears the threshold; a point estimate above it with a bound below is ``unverified``.
- **next experiment of a target** (:func:`next_action`): verify an unverified yield once on a
  new sample; re-run what an instrument spoiled; otherwise replace a failed recipe (active
  learning) or take the next planned one; retire the target when its budget is spent.
- **exhaustion** (:func:`exhausted`): a target's budget is ``max_recipes`` distinct recipes
  judged on their chemistry (``recipes.recipes_tried``, the count the planner uses too).
- **budget, stop, refill, retrain**: :func:`budget_left`, :func:`stop_reason`,
  :func:`targets_wanted`, :func:`should_retrain`.
"""

from __future__ import annotations

from dataclasses import dataclass

from recipes import Recipe, recipes_tried

from ..store import OPEN_STATES, ExperimentState, FailureKind, TargetState
from .history import PlannedRecipe, TargetHistory, Trial


@dataclass(frozen=True)
class Rules:
    """The campaign settings the decisions depend on (from ``campaign.yaml`` and the strategy)."""

    max_recipes: int = 5
    yield_threshold: float = 0.5
    verify_repeats: int = 1
    requeue_instrument_failures: int = 1
    active_learning: bool = True

    @classmethod
    def from_config(cls, cfg, *, active_learning: bool = True,  # noqa: ANN001 - CampaignConfig
                    requeue_instrument_failures: int = 1) -> Rules:
        return cls(max_recipes=cfg.recipes.max_recipes_per_target,
                   yield_threshold=cfg.recipes.yield_threshold,
                   verify_repeats=cfg.analysis.verify_repeats,
                   requeue_instrument_failures=requeue_instrument_failures,
                   active_learning=active_learning)


@dataclass(frozen=True)
class PlanRecipes:
    """The target has no recipes yet: ask the planner for its initial ones."""

    target_id: int
    formula: str
    e_form: float | None


@dataclass(frozen=True)
class RunRecipe:
    """Propose one experiment of a planned recipe."""

    target_id: int
    recipe_id: int
    attempt: int
    why: str


@dataclass(frozen=True)
class ReplaceRecipe:
    """A recipe failed on its chemistry: ask the planner for a better one (ARROWS3)."""

    target_id: int
    failed: PlannedRecipe
    trial: Trial


@dataclass(frozen=True)
class Retire:
    """Nothing sensible is left to try for the target."""

    target_id: int
    reason: str


Action = PlanRecipes | RunRecipe | ReplaceRecipe | Retire


@dataclass(frozen=True)
class Verdict:
    """What an analysed experiment means for its target."""

    state: ExperimentState
    failure_kind: FailureKind | None
    reason: str
    made: bool


def verdict(target_yield: float, lower: float, threshold: float, *,
            ambiguous: bool = False) -> Verdict:
    """The claim rule: made only when the yield's lower bound clears the threshold and the
    analysis could tell the target from its look-alikes.

    Why the bound: point estimates claimed partly glassy or poorly fitted samples as made; a
    yield above the threshold whose bound is below it is ``unverified`` and earns a repeat.
    Why the look-alikes: on real A-Lab products the verdict agreed with the expert on 95 % of
    scans where the fit could separate the target from a same-structure phase, and on 82 % where
    it could not (docs/benchmarks.md, XRD) — such a call is ``unverified`` too, not a claim.
    """
    if lower >= threshold and not ambiguous:
        return Verdict(ExperimentState.SUCCEEDED, None,
                       f"yield {target_yield:.2f} (lower bound {lower:.2f}) >= threshold {threshold:.2f}",
                       made=True)
    if lower >= threshold:
        return Verdict(ExperimentState.FAILED, FailureKind.UNVERIFIED,
                       f"yield {target_yield:.2f} clears the threshold {threshold:.2f}, but the fit "
                       "could barely tell the target from a look-alike phase", made=False)
    if target_yield >= threshold:
        return Verdict(ExperimentState.FAILED, FailureKind.UNVERIFIED,
                       f"yield {target_yield:.2f} but its lower bound {lower:.2f} is below the "
                       f"threshold {threshold:.2f}", made=False)
    return Verdict(ExperimentState.FAILED, FailureKind.CHEMISTRY,
                   f"yield {target_yield:.2f} below threshold {threshold:.2f}", made=False)


def verification_repeats(trials: tuple[Trial, ...], allowed: int) -> set[int]:
    """Unverified experiments that earn a repeat: the first ``allowed`` per recipe."""
    seen: dict[int, int] = {}
    out: set[int] = set()
    for t in trials:
        if t.state == ExperimentState.FAILED and t.failure_kind == FailureKind.UNVERIFIED:
            n = seen.get(t.recipe_id, 0)
            if n < allowed:
                out.add(t.id)
            seen[t.recipe_id] = n + 1
    return out


def exhausted(target: TargetHistory, rules: Rules) -> str | None:
    """Why the target's recipe budget is spent, or None while recipes are left."""
    tried = recipes_tried(target.formula, target.observations())
    if tried >= rules.max_recipes:
        return f"{tried} recipes tried, none reached the yield threshold"
    return None


def next_action(target: TargetHistory, rules: Rules) -> Action | None:
    """The target's next step, or None while one of its experiments is still open."""
    if target.state != TargetState.ACTIVE:
        return None
    if any(t.state in OPEN_STATES for t in target.trials):
        return None
    if not target.recipes:
        return PlanRecipes(target.id, target.formula, target.predicted_e_form)
    last = target.trials[-1] if target.trials else None
    repeats = verification_repeats(target.trials, rules.verify_repeats)
    # a yield above the threshold the analysis cannot vouch for: the same recipe on a new
    # sample settles it without spending a recipe
    if last is not None and last.id in repeats:
        return RunRecipe(target.id, last.recipe_id, last.attempt + 1,
                         f"repeat to verify experiment {last.id} (unverified yield "
                         f"{last.target_yield or 0:.2f}, lower bound {last.yield_lower or 0:.2f})")
    # an experiment the lab, not the chemistry, spoiled: the same recipe again
    if (last is not None and last.state == ExperimentState.FAILED
            and last.failure_kind == FailureKind.INSTRUMENT
            and last.attempt <= rules.requeue_instrument_failures):
        return RunRecipe(target.id, last.recipe_id, last.attempt + 1,
                         f"re-queued after an instrument failure of experiment {last.id}")
    # an unverified yield whose lower bound clears the threshold: the analysis measured enough
    # target but could not tell it from a look-alike phase. Another recipe makes the same
    # product and cannot settle that (the planner would answer "nothing to replace"), so the
    # target stops here with the reason a person needs, not as if its recipes were spent.
    if (last is not None and last.state == ExperimentState.FAILED
            and last.failure_kind == FailureKind.UNVERIFIED
            and last.vouched_yield >= rules.yield_threshold):
        n = sum(1 for t in target.trials if t.recipe_id == last.recipe_id and t.judged)
        return Retire(target.id, f"unverified: recipe {last.recipe_id} measured {n}x with yield "
                                 f"≥ {last.vouched_yield:.2f}, but the analysis could not tell the "
                                 "target from a look-alike phase; review the patterns (or use "
                                 "another characterisation) before claiming it")
    spent = exhausted(target, rules)
    if spent:
        return Retire(target.id, spent)
    tried = {t.recipe_id for t in target.trials}
    # a recipe that failed on its chemistry is replaced by the active-learning planner
    if (last is not None and last.judged and last.state == ExperimentState.FAILED
            and rules.active_learning
            and not any(r.replaces == last.recipe_id for r in target.recipes)):
        return ReplaceRecipe(target.id, target.recipe(last.recipe_id), last)
    # otherwise the next untried recipe: replacements first (newest first: the planner's
    # latest word), then the initial plan in its order
    untried = sorted((r for r in target.recipes if r.id not in tried),
                     key=lambda r: (r.replaces is None, -r.id if r.replaces else r.ordinal))
    if not untried:
        return Retire(target.id, f"all {len(target.recipes)} planned recipes tried")
    return RunRecipe(target.id, untried[0].id, 1, "next planned recipe")


def adopt_replacement(target: TargetHistory, replacement: Recipe) -> int | None:
    """An untried planned recipe the planner's replacement duplicates (its id), else None:
    the same recipe is never planned twice."""
    tried = {t.recipe_id for t in target.trials}
    key = replacement.key()
    return next((r.id for r in target.recipes if r.id not in tried and r.recipe.key() == key), None)


@dataclass(frozen=True)
class Budget:
    """The campaign's limits (``campaign.budget``)."""

    max_experiments: int
    max_lab_days: float | None = None
    max_targets: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """Counts of a campaign at one moment (what stopping and refilling depend on)."""

    used: int               # experiments that count against the budget
    open_experiments: int   # experiments not yet in a terminal state
    active_targets: int
    n_targets: int
    n_candidates: int
    lab_days: float | None = None  # only when the budget has a lab-day limit
    made_targets: int = 0


def budget_left(snap: Snapshot, budget: Budget) -> tuple[int, str | None]:
    """Experiments still allowed, and the reason when none is."""
    if snap.used >= budget.max_experiments:
        return 0, f"budget reached: {snap.used} experiments"
    if budget.max_lab_days is not None and snap.lab_days is not None \
            and snap.lab_days >= budget.max_lab_days:
        return 0, f"budget reached: {snap.lab_days:.1f} lab days"
    return budget.max_experiments - snap.used, None


def stop_reason(snap: Snapshot, budget: Budget, *, pool_exhausted: bool) -> str | None:
    """Why the campaign is over, or None. Never while an experiment is open."""
    if snap.open_experiments:
        return None
    _, spent = budget_left(snap, budget)
    if spent:
        return spent
    if snap.active_targets == 0 and (
            snap.n_targets >= snap.n_candidates or pool_exhausted
            or (budget.max_targets is not None and snap.n_targets >= budget.max_targets)):
        return f"all {snap.n_targets} targets resolved, {snap.made_targets} made"
    return None


def targets_wanted(snap: Snapshot, budget: Budget, *, left: int, keep_active: int) -> int:
    """How many new targets to choose so the furnaces stay busy, within the budget."""
    want = min(keep_active - snap.active_targets, left)
    if budget.max_targets is not None:
        want = min(want, budget.max_targets - snap.n_targets)
    return max(want, 0)


def keep_active(batch_size: int, furnace_slots: int) -> int:
    """Targets to keep in work: one more than the furnaces can fire at once, at least a batch."""
    return max(batch_size, furnace_slots + 1)


def should_retrain(n_results: int, n_results_at_last: int, *, every: int, learns: bool) -> bool:
    """Retrain the surrogate once ``every`` new XRD-verified results have arrived."""
    return learns and n_results - n_results_at_last >= every
