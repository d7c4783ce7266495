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

from .output import err_console
from .output import fail as _fail

console = Console(soft_wrap=True)  # paths and formulas a user copies stay whole

recipes_app = typer.Typer(help="Recipe planning: precursor sets, reactions, conditions.",
                          no_args_is_help=True)




def _print_warnings(caught: list) -> None:
    """Print the planner's own warnings (a stocked powder it cannot use, ...), not libraries'.

    Why a filter: recording every warning also catches third-party deprecation notices
    (``torch.jit.script is deprecated``), which a chemist cannot act on and which read as if
    something were wrong with the recipes. Deprecation, future and runtime warnings are
    dropped; the planner warns with UserWarning.
    """
    for w in caught:
        if issubclass(w.category, UserWarning):
            err_console.print(f"warning: {w.message}", highlight=False, markup=False)


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
        shelf = _parse_stock(stock)  # a stock file's problems are RecipeErrors too
    except RecipeError as exc:
        _fail(f"--stock: {exc}")
        return
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            planner = RecipePlanner(
                stock=shelf,
                max_recipes=max_recipes,
                strategy=strategy,  # type: ignore[arg-type]
                seed=seed,
                extra_precursors=extra_precursors,
                min_temperature_c=min_temperature,
                max_temperature_c=max_temperature,
            )
            recipes = planner.initial_recipes(TargetSpec(formula, e_form), [])
    except RecipeError as exc:
        hint = ""
        if shelf is None and "no stocked precursor provides" in str(exc):
            hint = (" (no --stock was given, so the stock is the bundled precursor library, which "
                    "has none: name your powders with --stock A,B,C or add them with --extra-precursors FILE)")
        _fail(f"{exc}{hint}")
        return
    _print_warnings(caught)  # e.g. a stocked powder the planner cannot use: named, then skipped
    energy = _target_energy(recipes)
    if energy is not None and energy["kind"] == "hull_estimate":
        # the driving forces below rest on a guess: say so where the chemist looks first
        err_console.print(
            f"warning: {formula} is not on the Materials Project table; its formation energy is "
            f"estimated as on the convex hull ({energy['e_form_ev_per_atom']:.3f} eV/atom), and the "
            "driving forces below rest on that guess (0 when the precursors already sit on that hull); "
            "give --e-form if you know it", highlight=False, markup=False)
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
                    "target_energy": energy,  # what the driving forces rest on (table, given, hull guess)
                }
                for r in recipes
            ]
        }
        print(json.dumps(out))
        return
    console.print(f"[bold]{len(recipes)} recipe(s) for {formula}[/] (strategy {strategy})")
    if energy is not None:
        console.print(f"target energy: {energy['source']}", highlight=False, markup=False)
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


def _target_energy(recipes: list) -> dict | None:
    """The target formation energy the recipes' driving forces rest on, and where it came from
    (``table``: the Materials Project table; ``given``: --e-form; ``hull_estimate``: assumed on
    the convex hull because the table does not know the compound)."""
    if not recipes:
        return None
    d = recipes[0].details
    if d.get("target_e_form_ev_per_atom") is None:
        return None
    return {"e_form_ev_per_atom": float(d["target_e_form_ev_per_atom"]),
            "source": str(d.get("target_energy_source", "")),
            "kind": str(d.get("target_energy_kind", "table"))}


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
    if not successes:
        best = max(outcomes, key=lambda o: o.yield_of(key))
        stop = (f"nothing to find: no recorded experiment reached the threshold {threshold:g} for {key} "
                f"(best yield {best.yield_of(key):.2f}, row {best.row})")
    elif not stop:
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
    outcomes: Path = typer.Argument(..., help="OUTCOMES.csv with columns precursors (A;B), temperature_c, "
                                    "dwell_min (optional), products (FORMULA:FRACTION;...)"),
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
    from surrogates import reduced_formula

    try:
        key = reduced_formula(target)
    except ValueError as exc:  # surrogates.UnknownCompositionError
        _fail(f"--target: {exc}")
        return
    try:
        rows = parse_outcomes(outcomes)
        _check_finite(rows, outcomes)
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
    _print_warnings(caught)
    products = sorted({f for o in rows for f in o.products})
    if key not in products:
        err_console.print(f"warning: no row of {outcomes} lists {key} among its products (products named: "
                          f"{', '.join(products) or 'none'}); is --target right?", highlight=False, markup=False)
    for s, why in result["unusable_sets"].items():
        err_console.print(f"warning: recorded set {s} cannot be proposed: {why}", highlight=False, markup=False)
    names = _names_as_written(outcomes)
    for e in result["order"]:  # as the table spells them (LiOH, not pymatgen's LiHO)
        e["precursors"] = [names.get(p, p) for p in e["precursors"]]
    if as_json:
        print(json.dumps(result))
        return
    n = len(rows)
    console.print(f"[bold]replay of {result['target']}[/] ({strategy}, {n} recorded experiment{'s' * (n != 1)}, "
                  f"budget {result['budget']})", highlight=False)
    for i, e in enumerate(result["order"], 1):
        mark = "made" if e["target_yield"] >= threshold else ""
        console.print(f"  {i:>3}. {' + '.join(e['precursors'])} at {e['temperature_c']:.0f} °C: "
                      f"yield {e['target_yield']:.2f} {mark}", highlight=False)
    if not result["successful_sets_total"]:
        console.print(f"stopped: {result['stopped']}", highlight=False)
        return
    rnd = result["random"]
    console.print(
        f"first success at {result['first_success_at']} (random order: {rnd['first_success_at_expected']}); "
        f"{result['successful_sets_found']}/{result['successful_sets_total']} successful sets found; "
        f"all found after {result['experiments_to_all_successes']} (random order: "
        f"{rnd['experiments_to_all_successes_expected']}); stopped: {result['stopped']}",
        highlight=False,
    )


def _check_finite(rows: list, source: Path) -> None:
    """Refuse a row whose temperature or dwell is not a finite number (``nan``, ``inf``).

    Why here: the table reader accepts ``nan``/``inf`` as a dwell (``float()`` parses them and
    the ``<= 0`` check lets them through); a ``nan`` row can never be matched to the planner's
    proposal and ended the replay in a traceback. Named with its row, like the reader's errors.
    """
    import math

    from recipes import OutcomeTableError

    for o in rows:
        for name, value in (("temperature_c", o.temperature_c), ("dwell_min", o.dwell_min)):
            if not math.isfinite(value):
                raise OutcomeTableError(f"{source} row {o.row}: {name} {value!r} is not a finite number")


def _names_as_written(path: Path) -> dict[str, str]:
    """Reduced formula -> the table's own spelling of each precursor (first one seen)."""
    import csv

    from surrogates import reduced_formula

    names: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return names
    for raw in csv.DictReader(text.splitlines()):
        cell = next((v for k, v in raw.items() if (k or "").strip() == "precursors"), "") or ""
        for p in (x.strip() for x in cell.split(";")):
            try:
                names.setdefault(reduced_formula(p), p)
            except ValueError:  # surrogates.UnknownCompositionError; the reader named it already
                continue
    return names


def register(app: typer.Typer) -> None:
    app.add_typer(recipes_app, name="recipes")
