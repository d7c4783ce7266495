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
    from recipes import RecipeError, RecipePlanner, TargetSpec

    try:
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


def register(app: typer.Typer) -> None:
    app.add_typer(recipes_app, name="recipes")
