"""``synthloop bench``: reproducible figures, one JSON object per command.

``bench surrogate`` trains the default GNN ensemble on one labelled structure table (CSV with
a ``cif`` column, gzipped or not) and scores it on another: MAE, RMSE, 90 % interval
coverage, training time and prediction throughput (graph construction included).
``bench campaign`` (controller/loop) is registered on the same group by its own module.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

bench_app = typer.Typer(help="Benchmarks that print one JSON object.", no_args_is_help=True)


def surrogate(
    train: Path = typer.Option(..., "--train", help="training CSV (.csv or .csv.gz) with a cif column"),
    test: Path = typer.Option(..., "--test", help="test CSV with the same columns"),
    target: str = typer.Option(..., "--target", help="numeric target column, e.g. heat_ref"),
    as_json: bool = typer.Option(False, "--json", help="print only the JSON object (no progress)"),
    architecture: str = typer.Option("cgcnn", "--architecture", help="cgcnn | megnet"),
    members: int = typer.Option(5, "--members", min=1, help="ensemble members"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="max epochs (default: config)"),
    workers: int = typer.Option(2, "--workers", min=1, help="parallel training processes"),
    seed: int = typer.Option(0, "--seed", help="seed of every random choice"),
) -> None:
    """Train the default ensemble on TRAIN, predict TEST, print one JSON object of figures."""
    import torch

    from surrogates import DatasetError, EnsembleConfig, evaluate_regression

    torch.set_num_threads(1)
    for path in (train, test):
        if not path.exists():
            typer.echo(f"error: {path}: no such file", err=True)
            raise typer.Exit(2)
    kwargs = {"architecture": architecture, "members": members, "workers": workers, "seed": seed}
    if epochs is not None:
        kwargs["epochs"] = epochs
    try:
        cfg = EnsembleConfig(**kwargs)
        progress = None if as_json else (lambda m: print(m, file=sys.stderr, flush=True))
        result = evaluate_regression(train, test, target, cfg, progress=progress)
    except (DatasetError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(result))


def register(app: typer.Typer) -> None:
    """Add the ``bench`` group (with ``surrogate`` and the controller's ``campaign``)."""
    from . import bench_campaign_cmds

    bench_app.command("surrogate")(surrogate)
    bench_campaign_cmds.register(bench_app)
    app.add_typer(bench_app, name="bench")
