"""`synthloop recipes propose FORMULA`: the planner's initial recipes for one target.

Why a command: a chemist checks what the planner would do for a compound (reactions, driving
forces, temperatures, reasons) before trusting it with furnace time, and can restrict the
shelf with ``--stock`` to see what the lab's own powders allow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

recipes_app = typer.Typer(help="Recipe planning: precursor sets, reactions, conditions.",
                          no_args_is_help=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"error: {message}", highlight=False, markup=False)
    raise typer.Exit(code)


def _parse_stock(stock: str | None) -> list[str] | None:
    """A comma-separated list of formulas, or a file (one per line, or YAML)."""
    from recipes import read_stock_file

    if stock is None:
        return None
    if os.path.exists(stock) or any(stock.endswith(s) for s in (".txt", ".yaml", ".yml", ".csv")):
        return read_stock_file(Path(stock))
    items = [s.strip() for s in stock.split(",") if s.strip()]
    if not items:
        _fail("--stock is empty; give formulas separated by commas or a file")
    return items


@recipes_app.command("propose")
def propose(
    formula: str = typer.Argument(..., help="target formula, e.g. LiMn2O4"),
    stock: str | None = typer.Option(
        None, "--stock", help="precursors on the shelf: A,B,C or a file (default: whole library)"
    ),
    e_form: float | None = typer.Option(
        None, "--e-form", help="target formation energy (eV/atom) if not on the MP table"
    ),
    max_recipes: int = typer.Option(5, "--max-recipes", min=1, max=50),
    strategy: str = typer.Option("full", "--strategy", help="full | driving_force | random"),
    extra_precursors: Path | None = typer.Option(
        None, "--extra-precursors", help="YAML file adding precursors to the library"
    ),
    min_temperature: float = typer.Option(300.0, "--min-temperature"),
    max_temperature: float = typer.Option(1300.0, "--max-temperature"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Print up to five initial recipes with reactions, driving forces, conditions, reasons."""
    import warnings

    from recipes import RecipeError, RecipePlanner, TargetSpec

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            planner = RecipePlanner(
                stock=_parse_stock(stock),
                max_recipes=max_recipes,
                strategy=strategy,  # type: ignore[arg-type]
                seed=seed,
                extra_precursors=extra_precursors,
                min_temperature_c=min_temperature,
                max_temperature_c=max_temperature,
            )
        recipes = planner.initial_recipes(TargetSpec(formula, e_form), [])
    except RecipeError as exc:
        _fail(str(exc))
        return
    for w in caught:  # e.g. a stocked powder the planner cannot use: named, then skipped
        err_console.print(f"warning: {w.message}", highlight=False, markup=False)
    if as_json:
        out = {
            "recipes": [
                {
                    "precursors": list(r.precursor_formulas),
                    "temperature_c": r.temperature_c,
                    "dwell_min": r.dwell_min,
                    "driving_force_mev_per_atom": r.driving_force_mev_per_atom,
                    "rationale": r.rationale,
                    "reaction": r.details["reaction"]["equation"],
                    "masses_g": {p.formula: p.mass_g for p in r.precursors},
                    "profile": [s.to_dict() for s in r.profile],
                    "predicted_yield": r.predicted_yield,
                }
                for r in recipes
            ]
        }
        print(json.dumps(out))
        return
    console.print(f"[bold]{len(recipes)} recipe(s) for {formula}[/] (strategy {strategy})")
    for i, r in enumerate(recipes, 1):
        console.print(f"\n[bold]{i}. {' + '.join(r.precursor_formulas)}[/]", highlight=False)
        console.print(f"   reaction: {r.details['reaction']['equation']}", highlight=False)
        console.print(
            f"   driving force {r.driving_force_mev_per_atom:.0f} meV/atom; "
            f"{r.temperature_c:.0f} °C for {r.dwell_min:.0f} min in {r.atmosphere}",
            highlight=False,
        )
        masses = ", ".join(f"{p.formula} {p.mass_g:.4f} g" for p in r.precursors)
        console.print(f"   weigh: {masses}", highlight=False)
        console.print(f"   why: {r.rationale}", highlight=False, markup=False)


def replay_outcomes(outcomes: list, target: str, *, strategy: str = "full", budget: int | None = None,
                    seed: int = 0, threshold: float = 0.5, random_draws: int = 4000,
                    planner_options: dict | None = None) -> dict:
    """Replay a planner on recorded outcomes through the campaign's ask–tell face.

    The planner is restricted (``candidate_space``) to the table's (precursor set,
    temperature, dwell) rows; every experiment it asks for is answered by the row's recorded
    products. When the target is made, the loop retires it as a campaign does; the replay then
    adds the target again, so the planner looks for the next successful set (the sets already
    found and every row already run stay excluded), until every set that reached the threshold
    is found, the budget is spent, or the planner has nothing left to propose.
    """
    from controller.loop import AskTell, Rules
    from recipes import CandidateSpace, RecipePlanner
    from surrogates import reduced_formula

    key = reduced_formula(target)
    budget = len(outcomes) if budget is None else int(budget)
    rows = {(o.precursors, round(o.temperature_c, 1), round(o.dwell_min, 1)): o for o in outcomes}
    space = CandidateSpace.from_outcomes(key, outcomes)
    planner = RecipePlanner(strategy=strategy, seed=seed, candidate_space=space,  # type: ignore[arg-type]
                            max_attempts=budget, yield_threshold=threshold, **(planner_options or {}))
    loop = AskTell(planner, Rules(max_recipes=budget, yield_threshold=threshold), max_experiments=budget)
    successes = {o.precursors for o in outcomes if o.yield_of(key) >= threshold}
    order: list[dict] = []
    found: set[tuple[str, ...]] = set()
    first = all_at = None
    stop = ""
    loop.add_target(key)
    while loop.experiments_used < budget and found != successes:
        proposals = loop.ask()
        if not proposals:
            state, reason = loop.status()[key]
            if state == "made":
                loop.add_target(key)  # look for the next successful set
                continue
            stop = reason or state
            break
        for prop in proposals:
            r = prop.recipe
            k = (tuple(sorted(reduced_formula(f) for f in r.precursor_formulas)),
                 round(r.temperature_c, 1), round(r.dwell_min, 1))
            row = rows.get(k)
            if row is None:  # the candidate space forbids it: a planner bug, not a user error
                raise RuntimeError(f"the planner proposed an experiment that is not in the table: {k}")
            y = row.yield_of(key)
            loop.tell(prop.experiment_id, phases=dict(row.products), target_yield=y)
            order.append({"precursors": list(row.precursors), "temperature_c": row.temperature_c,
                          "dwell_min": row.dwell_min, "target_yield": round(y, 4), "row": row.row,
                          "why": prop.why})
            if y >= threshold:
                found.add(row.precursors)
                first = first or len(order)
                if found == successes:
                    all_at = len(order)
    if not stop:
        stop = "every successful set found" if found == successes else f"budget of {budget} experiments spent"
    exp_first, exp_all = _random_expectation(outcomes, key, threshold, random_draws, seed)
    return {
        "target": key,
        "strategy": strategy,
        "budget": budget,
        "experiments_recorded": len(outcomes),
        "order": order,
        "first_success_at": first,
        "successful_sets_total": len(successes),
        "successful_sets_found": len(found),
        "experiments_to_all_successes": all_at,
        "random": {"first_success_at_expected": exp_first, "experiments_to_all_successes_expected": exp_all},
        "stopped": stop,
        "unusable_sets": {" + ".join(s): why for s, why in planner.space_unusable.items()},
    }


def _random_expectation(outcomes: list, key: str, threshold: float, draws: int,
                        seed: int) -> tuple[float | None, float | None]:
    """Expected experiments to the first success and to every successful set for a random
    order over the rows, skipping (like the planner) the rows of a set already found."""
    import numpy as np

    ok = [o.yield_of(key) >= threshold for o in outcomes]
    sets = [o.precursors for o in outcomes]
    successes = {s for s, g in zip(sets, ok, strict=True) if g}
    if not successes:
        return None, None
    n, k = len(outcomes), sum(ok)
    first = (n + 1) / (k + 1)
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(draws):
        found: set = set()
        count = 0
        for i in rng.permutation(n):
            if sets[i] in found:
                continue
            count += 1
            if ok[i]:
                found.add(sets[i])
                if found == successes:
                    break
        total += count
    return round(first, 3), round(total / draws, 3)


@recipes_app.command("replay")
def replay(
    outcomes: Path = typer.Argument(..., help="OUTCOMES.csv: precursors;..., temperature_c, [dwell_min], products"),
    target: str = typer.Option(..., "--target", help="the target formula the table is about"),
    budget: int | None = typer.Option(None, "--budget", min=1, help="experiments allowed (default: all rows)"),
    seed: int = typer.Option(0, "--seed"),
    strategy: str = typer.Option("full", "--strategy", help="full | driving_force | random"),
    threshold: float = typer.Option(0.5, "--threshold", help="target weight fraction that counts as made"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Replay the planner on recorded outcomes: it may only choose recorded experiments."""
    import warnings

    from recipes import OutcomeTableError, RecipeError, parse_outcomes

    try:
        rows = parse_outcomes(outcomes)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = replay_outcomes(rows, target, strategy=strategy, budget=budget, seed=seed,
                                     threshold=threshold)
    except OutcomeTableError as exc:
        _fail(str(exc))
        return
    except RecipeError as exc:
        _fail(f"replay of {target}: {exc}")
        return
    for w in caught:
        err_console.print(f"warning: {w.message}", highlight=False, markup=False)
    for s, why in result["unusable_sets"].items():
        err_console.print(f"warning: recorded set {s} cannot be proposed: {why}", highlight=False, markup=False)
    if as_json:
        print(json.dumps(result))
        return
    console.print(f"[bold]replay of {result['target']}[/] ({strategy}, {len(rows)} recorded experiments, "
                  f"budget {result['budget']})", highlight=False)
    for i, e in enumerate(result["order"], 1):
        mark = "made" if e["target_yield"] >= threshold else ""
        console.print(f"  {i:>3}. {' + '.join(e['precursors'])} at {e['temperature_c']:.0f} °C: "
                      f"yield {e['target_yield']:.2f} {mark}", highlight=False)
    rnd = result["random"]
    console.print(
        f"first success at {result['first_success_at']} (random order: {rnd['first_success_at_expected']}); "
        f"{result['successful_sets_found']}/{result['successful_sets_total']} successful sets found; "
        f"all found after {result['experiments_to_all_successes']} (random order: "
        f"{rnd['experiments_to_all_successes_expected']}); stopped: {result['stopped']}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(recipes_app, name="recipes")
