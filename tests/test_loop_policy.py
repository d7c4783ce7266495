"""The loop's decisions with no database, no event loop and no lab: the claim rule, the next
experiment of a target, exhaustion, budget and stopping — and the ask–tell face that a script
(a replay of recorded outcomes, a person at a bench) drives with a real recipe planner."""

from __future__ import annotations

import pytest

from controller.loop import (
    AskTell,
    PlannedRecipe,
    Rules,
    TargetHistory,
    Trial,
    next_action,
    verdict,
)
from controller.loop.policy import (
    Budget,
    PlanRecipes,
    ReplaceRecipe,
    Retire,
    RunRecipe,
    Snapshot,
    adopt_replacement,
    budget_left,
    stop_reason,
    targets_wanted,
)
from controller.store import ExperimentState, FailureKind, TargetState
from recipes import HeatingSegment, PrecursorAmount, Recipe, RecipePlanner

S = ExperimentState


def _recipe(*precursors: str, t: float = 800.0) -> Recipe:
    return Recipe(target="LiMn2O4",
                  precursors=tuple(PrecursorAmount(p, 1.0, 1.0) for p in precursors),
                  profile=(HeatingSegment(5.0, t, 240.0),))


R1, R2, R3 = _recipe("Li2CO3", "MnO2"), _recipe("LiOH", "Mn2O3"), _recipe("Li2O", "MnO")


def _target(recipes: tuple[Recipe, ...] = (R1, R2, R3), trials: tuple[Trial, ...] = (),
            replaces: dict[int, int] | None = None) -> TargetHistory:
    planned = tuple(PlannedRecipe(10 + i, i + 1, r, (replaces or {}).get(10 + i))
                    for i, r in enumerate(recipes))
    return TargetHistory(1, "LiMn2O4", TargetState.ACTIVE, None, planned, trials)


def _judged(i: int, recipe_id: int, y: float, *, lower: float | None = None, attempt: int = 1) -> Trial:
    v = verdict(y, y if lower is None else lower, 0.5)
    return Trial(i, recipe_id, attempt, v.state, v.failure_kind, y,
                 y if lower is None else lower, {"LiMn2O4": y, "Mn2O3": 1 - y})


def test_the_claim_rule_judges_the_lower_bound_not_the_estimate() -> None:
    assert verdict(0.9, 0.84, 0.5).made
    v = verdict(0.62, 0.45, 0.5)
    assert not v.made and v.state == S.FAILED and v.failure_kind == FailureKind.UNVERIFIED
    # a clear yield the fit could barely tell from a look-alike phase is not a claim either
    look = verdict(0.9, 0.84, 0.5, ambiguous=True)
    assert not look.made and look.failure_kind == FailureKind.UNVERIFIED and "look-alike" in look.reason
    low = verdict(0.2, 0.1, 0.5)
    assert low.failure_kind == FailureKind.CHEMISTRY and "below threshold" in low.reason


def test_a_new_target_is_planned_then_its_recipes_run_in_order() -> None:
    rules = Rules()
    assert isinstance(next_action(_target(recipes=()), rules), PlanRecipes)
    first = next_action(_target(), rules)
    assert first == RunRecipe(1, 10, 1, "next planned recipe")
    # an open experiment blocks the next decision
    assert next_action(_target(trials=(Trial(1, 10, 1, S.RUNNING),)), rules) is None


def test_an_unverified_yield_is_repeated_once_on_a_new_sample_and_then_replaced() -> None:
    rules = Rules(verify_repeats=1)
    first = _judged(1, 10, 0.62, lower=0.45)
    action = next_action(_target(trials=(first,)), rules)
    assert isinstance(action, RunRecipe) and action.recipe_id == 10 and action.attempt == 2
    again = _judged(2, 10, 0.55, lower=0.40, attempt=2)
    action = next_action(_target(trials=(first, again)), rules)
    assert isinstance(action, ReplaceRecipe) and action.failed.id == 10
    # the planner learns what the analysis could vouch for, not the point estimate
    assert action.trial.vouched_yield == pytest.approx(0.40)


def test_a_high_yield_the_analysis_cannot_tell_from_a_look_alike_stops_for_review() -> None:
    """Seen on alab-like-v2: a made BaMnO3 (yield 1.00 twice, flagged against a look-alike) was
    sent to the planner for a replacement, which answered "nothing to replace" and the target was
    recorded as if its recipes were spent. Another recipe makes the same product and cannot
    settle an identification, so the target stops with the reason a person needs."""
    rules = Rules(verify_repeats=1)
    look = verdict(1.0, 0.95, 0.5, ambiguous=True)
    first = Trial(1, 10, 1, look.state, look.failure_kind, 1.0, 0.95, {"LiMn2O4": 1.0})
    assert isinstance(next_action(_target(trials=(first,)), rules), RunRecipe)  # verify once
    again = Trial(2, 10, 2, look.state, look.failure_kind, 0.98, 0.93, {"LiMn2O4": 0.98})
    action = next_action(_target(trials=(first, again)), rules)
    assert isinstance(action, Retire)
    assert "look-alike" in action.reason and "2x" in action.reason and "review" in action.reason


def test_instrument_failures_rerun_the_recipe_once_and_do_not_spend_it() -> None:
    rules = Rules(max_recipes=1, requeue_instrument_failures=1)
    spoiled = Trial(1, 10, 1, S.FAILED, FailureKind.INSTRUMENT)
    assert next_action(_target(trials=(spoiled,)), rules) == RunRecipe(
        1, 10, 2, "re-queued after an instrument failure of experiment 1")
    twice = Trial(2, 10, 2, S.FAILED, FailureKind.INSTRUMENT)
    # the lab spoiled it twice: move on (nothing judged, so the budget of 1 recipe is unspent)
    assert next_action(_target(trials=(spoiled, twice)), rules) == RunRecipe(1, 11, 1, "next planned recipe")


def test_a_chemistry_failure_is_replaced_and_the_budget_counts_distinct_recipes() -> None:
    rules = Rules(max_recipes=2)
    failed = _judged(1, 10, 0.1)
    assert isinstance(next_action(_target(trials=(failed,)), rules), ReplaceRecipe)
    # a replacement exists: it runs before the rest of the initial plan
    with_repl = _target(recipes=(R1, R2, R3), trials=(failed,), replaces={12: 10})
    assert next_action(with_repl, rules) == RunRecipe(1, 12, 1, "next planned recipe")
    # the same recipe judged twice (a verification repeat) spends one recipe, not two
    unverified, repeat = _judged(1, 10, 0.6, lower=0.4), _judged(2, 10, 0.3, attempt=2)
    assert not isinstance(next_action(_target(trials=(unverified, repeat)), rules), Retire)
    two = (failed, _judged(2, 11, 0.2))
    assert next_action(_target(trials=two), rules) == Retire(
        1, "2 recipes tried, none reached the yield threshold")
    # without active learning, failures fall through to the planned order
    assert next_action(_target(trials=(failed,)), Rules(active_learning=False)).recipe_id == 11


def test_a_replacement_that_duplicates_an_untried_plan_reuses_it() -> None:
    target = _target(trials=(_judged(1, 10, 0.1),))
    assert adopt_replacement(target, _recipe("LiOH", "Mn2O3")) == 11
    assert adopt_replacement(target, _recipe("Li2CO3", "MnO2")) is None  # tried already
    assert adopt_replacement(target, _recipe("LiOH", "Mn2O3", t=900)) is None


def test_budget_stop_and_refill() -> None:
    budget = Budget(max_experiments=10, max_targets=4)
    busy = Snapshot(used=10, open_experiments=1, active_targets=1, n_targets=3, n_candidates=9)
    assert budget_left(busy, budget) == (0, "budget reached: 10 experiments")
    assert stop_reason(busy, budget, pool_exhausted=False) is None  # never with work open
    spent = Snapshot(used=10, open_experiments=0, active_targets=1, n_targets=3, n_candidates=9)
    assert stop_reason(spent, budget, pool_exhausted=False) == "budget reached: 10 experiments"
    done = Snapshot(used=6, open_experiments=0, active_targets=0, n_targets=4, n_candidates=9,
                    made_targets=1)
    assert stop_reason(done, budget, pool_exhausted=False) == "all 4 targets resolved, 1 made"
    days = Budget(max_experiments=100, max_lab_days=2.0)
    assert budget_left(Snapshot(5, 0, 1, 1, 9, lab_days=2.5), days)[1] == "budget reached: 2.5 lab days"
    assert targets_wanted(Snapshot(0, 0, 1, 3, 9), budget, left=10, keep_active=5) == 1  # max_targets
    assert targets_wanted(Snapshot(0, 0, 1, 1, 9), budget, left=2, keep_active=5) == 2  # budget


@pytest.fixture(scope="module")
def planner() -> RecipePlanner:
    return RecipePlanner(stock=["Li2CO3", "LiOH", "MnO2", "Mn2O3", "MnO", "Li2O"], seed=0)


def test_ask_tell_drives_a_target_to_success_with_a_real_planner(planner) -> None:
    loop = AskTell(planner, Rules(max_recipes=5))
    loop.add_target("LiMn2O4")
    (first,) = loop.ask()
    assert first.target == "LiMn2O4" and first.attempt == 1 and first.why == "next planned recipe"
    assert loop.ask() == []  # one open experiment per target
    v = loop.tell(first.experiment_id, phases={"Mn2O3": 0.7, "LiMn2O4": 0.3}, target_yield=0.3)
    assert v.failure_kind == FailureKind.CHEMISTRY
    (second,) = loop.ask()
    assert second.why.startswith("replaces recipe")  # active learning, not the next in line
    assert second.recipe.key() != first.recipe.key()
    assert loop.tell(second.experiment_id, phases={"LiMn2O4": 0.9}, target_yield=0.9).made
    assert loop.ask() == [] and loop.status()["LiMn2O4"][0] == "made"
    with pytest.raises(ValueError, match="already told"):
        loop.tell(second.experiment_id, phases={}, target_yield=0.0)


def test_ask_tell_retires_a_target_after_its_recipe_budget(planner) -> None:
    loop = AskTell(planner, Rules(max_recipes=2), max_experiments=20)
    loop.add_target("LiMn2O4")
    seen = []
    while proposals := loop.ask():
        for p in proposals:
            seen.append(p.recipe.key())
            loop.tell(p.experiment_id, phases={"Mn2O3": 1.0}, target_yield=0.0)
    assert len(seen) == 2 and len(set(seen)) == 2
    state, reason = loop.status()["LiMn2O4"]
    assert state == "exhausted" and reason, reason
