"""``synthloop bench campaign``: a whole campaign against a world, one JSON object out.

Registered on the ``bench`` group that ``bench_cmds.py`` (surrogates) creates; kept in its own
module so the two parts of the group evolve independently.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def campaign(
    world: str = typer.Option("alab-like", "--world", help="bundled world name or world file"),
    strategy: str = typer.Option("full", "--strategy",
                                 help="full | random_recipes | no_active_learning | random_targets"),
    seed: int = typer.Option(0, "--seed", help="seed of every random choice"),
    budget: int = typer.Option(355, "--budget", help="maximum experiments"),
    max_recipes: int = typer.Option(5, "--max-recipes", help="recipes per target before it is given up"),
    as_json: bool = typer.Option(False, "--json", help="print only the JSON object"),
    workdir: Path | None = typer.Option(None, "--workdir", help="keep the campaign here (default: temporary)"),
    free_running: bool = typer.Option(
        False, "--free-running",
        help="decide as results arrive instead of in rounds (faster; not reproducible run to run)"),
) -> None:
    """Run a campaign against a simulated world and score it with the world's truth."""
    from ..loop import STRATEGIES
    from ..loop.bench import quiet_stdout, run_bench

    if strategy not in STRATEGIES:
        typer.echo(f"error: --strategy {strategy!r} is not one of {', '.join(STRATEGIES)}", err=True)
        raise typer.Exit(2)
    if budget < 1:
        typer.echo(f"error: --budget must be >= 1, got {budget}", err=True)
        raise typer.Exit(2)
    if not 1 <= max_recipes <= 50:
        typer.echo(f"error: --max-recipes must be 1..50, got {max_recipes}", err=True)
        raise typer.Exit(2)
    try:
        with quiet_stdout():
            result = run_bench(world, strategy, seed, budget=budget, workdir=workdir,
                               max_recipes=max_recipes, lockstep=not free_running)
    except Exception as exc:  # noqa: BLE001 - world errors and the like: say what, exit non-zero
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    if not as_json:
        typer.echo(f"# campaign benchmark on {world}, strategy {strategy}, seed {seed}", err=True)
    typer.echo(json.dumps(result))


def register(bench_app: typer.Typer) -> None:
    bench_app.command("campaign")(campaign)
