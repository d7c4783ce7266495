"""`synthloop xrd`: analyse and plot real or simulated powder patterns against candidate CIFs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the analysis stack (pymatgen, scipy) loads only when an xrd command runs
    from ..xrd import PhaseAnalysis

console = Console()
err_console = Console(stderr=True)

xrd_app = typer.Typer(
    name="xrd",
    help="Phase identification and weight fractions from powder XRD patterns.",
    no_args_is_help=True,
)

PHASES_HELP = "candidate phases: CIF files (name = file stem) or names of bundled CIFs"


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _run(pattern: Path, phases: list[str], target: str | None) -> PhaseAnalysis:
    from ..xrd import (
        XrdAnalysisError,
        XrdFormatError,
        XrdReferenceError,
        analyze,
        load_phase,
        read_pattern,
    )

    if not phases:
        _fail("give at least one candidate phase with --phases")
    try:
        pat = read_pattern(pattern)
        refs = [load_phase(p) for p in phases]
        return analyze(pat, refs, target=target)
    except (XrdFormatError, XrdReferenceError, XrdAnalysisError) as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


# `--phases A B C` (several values after one flag, as users of other XRD tools type it): Click
# options take one value each, so the values after the first arrive as extra arguments.
_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": False}


def _all_phases(ctx: typer.Context, phases: list[str]) -> list[str]:
    extra = [a for a in ctx.args if not a.startswith("-")]
    bad = [a for a in ctx.args if a.startswith("-")]
    if bad:
        _fail(f"unknown option(s): {' '.join(bad)}")
    return list(phases) + extra


@xrd_app.command("analyze", context_settings=_EXTRA)
def analyze_cmd(
    ctx: typer.Context,
    pattern: Path = typer.Argument(..., help="pattern file: .xrdml, .xy, .xye, .csv"),
    phases: list[str] = typer.Option(..., "--phases", "-p", help=PHASES_HELP),
    target: str | None = typer.Option(None, "--target", help="phase name or formula whose yield to report"),
    as_json: bool = typer.Option(False, "--json", help="print exactly one JSON object"),
) -> None:
    """Fit PATTERN with the candidate phases; print phases found, weight fractions and Rwp."""
    res = _run(pattern, _all_phases(ctx, phases), target)
    if as_json:
        print(json.dumps(res.to_dict(), allow_nan=False))
        return
    table = Table(title=f"{pattern.name}  Rwp {res.rwp:.4f}  (Rexp {res.rexp:.4f})")
    for col in ("phase", "formula", "wt %", "± wt %", "FWHM@30° (deg)", "Δχ²"):
        table.add_column(col)
    for p in res.phases:
        table.add_row(p.name, p.formula, f"{p.weight_fraction * 100:.1f}",
                      f"{p.weight_fraction_std * 100:.1f}", f"{p.fwhm_deg_at_30:.3f}",
                      f"{p.delta_chi2:.0f}")
    console.print(table)
    for name, why in res.rejected.items():
        console.print(f"  not found: {name} ({why})", highlight=False)
    if res.unexplained_peaks:
        console.print("  unexplained peaks at 2θ = "
                      + ", ".join(f"{v:.2f}" for v in res.unexplained_peaks)
                      + " (an unknown phase?)", highlight=False)
    if res.target is not None:
        console.print(f"  target {res.target}: yield {res.target_yield * 100:.1f} wt%")


@xrd_app.command("plot", context_settings=_EXTRA)
def plot_cmd(
    ctx: typer.Context,
    pattern: Path = typer.Argument(..., help="pattern file: .xrdml, .xy, .xye, .csv"),
    phases: list[str] = typer.Option(..., "--phases", "-p", help=PHASES_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="image file to write (.png)"),
) -> None:
    """Draw observed, fitted, difference and each phase's contribution to OUT."""
    from ..xrd import plot_analysis

    res = _run(pattern, _all_phases(ctx, phases), None)
    path = plot_analysis(res, out)
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(xrd_app, name="xrd")
