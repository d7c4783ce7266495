"""`synthloop sim-lab build-world | widen-world | show | stats | serve`: build, run and inspect simulated labs.

Why here: the engines live in ``sim_lab`` (world builder, instruments, launcher); these commands
put them under the one ``synthloop`` entry point with clear errors for bad input.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .output import check_out_file, err_console
from .output import fail as _fail

console = Console(soft_wrap=True)  # paths and formulas a user copies stay whole

simlab_app = typer.Typer(help="Simulated lab: build worlds, serve them as drivers, inspect them.",
                         no_args_is_help=True)




def _check_out(out: Path) -> None:
    """Refuse a world file that cannot be written before the build starts.

    Why first: a build relaxes structures with CHGNet for minutes; `--out /missing/w.json` ran
    5 CPU-minutes before failing on the write (a user trial, h11), and the work was lost.
    """
    if out.suffix not in {".json", ".yaml", ".yml", ".bz2"}:
        _fail(f"--out {out}: use a .json, .json.bz2 or .yaml file name")
    check_out_file(out)


@simlab_app.command("build-world")
def build_world_cmd(
    systems: str = typer.Option(..., "--systems", help="comma-separated, e.g. Li-Mn-O,Ba-Ti-O"),
    out: Path = typer.Option(..., "--out", help="world file to write (.json, .json.bz2 or .yaml)"),
    seed: int = typer.Option(0, help="seed of every random choice"),
    name: str | None = typer.Option(None, help="world name (default from the systems)"),
    n_targets: int | None = typer.Option(None, help="pick this many targets from the candidates"),
    makeable_fraction: float | None = typer.Option(None, help="aim for this makeable fraction"),
    max_e_hull: float = typer.Option(0.02, help="targets: computed e_above_hull in air at a furnace "
                                     "temperature <= this (eV/atom)"),
    relax_steps: int = typer.Option(40, help="CHGNet FIRE steps per structure (0: single point)"),
    shelf: str = typer.Option("wide", help="'wide' (hydroxides, nitrates, more oxides) or 'narrow'"),
    decorations: int = typer.Option(25, help="prototype-decoration compositions per (sub)system"),
    relax_cache: Path | None = typer.Option(None, help="folder keeping CHGNet relaxations between builds"),
    mp_off_hull: float = typer.Option(0.08, help="also MP compositions up to this far above its hull (eV/atom)"),
    holdout: float = typer.Option(1.0, help="share of known multi-cation phases without an experimental "
                                  "CIF held out as computed-only targets"),
    energy_noise: float = typer.Option(0.02, help="true minus computed energy, sd (eV/atom)"),
) -> None:
    """Build a world: MP energies for known phases, CHGNet for hypothetical ones, hidden truth."""
    from sim_lab import WorldError, build_world

    items = [s.strip() for s in systems.split(",") if s.strip()]
    if not items:
        _fail("--systems is empty; give e.g. Li-Mn-O,Ba-Ti-O")
    _check_out(out)
    try:
        world = build_world(items, out, seed=seed, name=name, n_targets=n_targets,
                            makeable_fraction=makeable_fraction, max_e_hull=max_e_hull,
                            relax_steps=relax_steps, shelf=shelf, decorations_per_system=decorations,
                            energy_noise_ev=energy_noise, relax_cache=relax_cache, mp_off_hull=mp_off_hull, holdout_fraction=holdout, log=lambda m: console.print(m, highlight=False))
    except WorldError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror or exc}")
    console.print(f"[green]wrote[/] {escape(str(out))}: {len(world.phase_formulas())} phases, "
                  f"{len(world.target_formulas())} targets")


@simlab_app.command("widen-world")
def widen_world_cmd(
    world: str = typer.Argument(..., help="bundled world name or world file to widen"),
    out: Path = typer.Option(..., "--out", help="world file to write (.json, .json.bz2 or .yaml)"),
    name: str = typer.Option(..., help="name of the new world"),
    max_e_hull: float = typer.Option(0.08, help="targets: every candidate with e_above_hull <= this"),
    include_known: bool = typer.Option(False, "--include-known",
                                       help="also every known multi-cation phase that is not a precursor"),
) -> None:
    """Same chemistry, every candidate target (for campaigns longer than the world's targets allow)."""
    from sim_lab import WorldError, load_world, widen_world

    _check_out(out)
    try:
        wide = widen_world(load_world(world), name=name, max_e_hull=max_e_hull, include_known=include_known,
                           log=lambda m: console.print(m, highlight=False))
    except WorldError as exc:
        _fail(str(exc))
    try:
        wide.save(out)
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror or exc}")
    console.print(f"[green]wrote[/] {escape(str(out))}: {len(wide.target_formulas())} targets")


@simlab_app.command("show")
def show(world: str = typer.Argument("demo", help="bundled world name or world file")) -> None:
    """Summarise a world (systems, shelf, target candidates) without revealing the truth."""
    from sim_lab import WorldError, load_world

    try:
        w = load_world(world)
    except WorldError as exc:
        _fail(str(exc))
    console.print(f"world {w.name!r}: {w.model.description}")
    console.print(f"systems: {', '.join(w.systems)}")
    console.print(f"shelf: {', '.join(w.precursors)}")
    table = Table("targets (candidates)")
    for f in w.target_formulas():
        table.add_row(f)
    console.print(table)
    console.print(f"{len(w.phase_formulas())} phases; furnaces: {w.instruments.furnaces.count} x "
                  f"{w.instruments.furnaces.capacity} crucibles")


@simlab_app.command("stats")
def stats_cmd(
    world: str = typer.Argument(..., help="bundled world name or world file"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    recompute: bool = typer.Option(False, help="run the truth search again even if stored"),
) -> None:
    """Hidden-truth statistics of a world: makeable share, recipe success, precursor dependence."""
    import json

    from sim_lab import WorldError, load_world, world_stats

    try:
        w = load_world(world)
    except WorldError as exc:
        _fail(str(exc))
    say = (lambda m: err_console.print(m, highlight=False)) if as_json else (
        lambda m: console.print(m, highlight=False))
    figures = world_stats(w, recompute=recompute, progress=say)
    if as_json:
        print(json.dumps(figures))
        return
    table = Table("figure", "value")
    for k, v in figures.items():
        if isinstance(v, list) and len(v) > 6:
            v = f"{len(v)}: {', '.join(map(str, v[:6]))}, ..."
        table.add_row(k, str(v))
    console.print(table)


@simlab_app.command("serve")
def serve(
    world: str = typer.Argument(..., help="bundled world name or world file"),
    connect: str = typer.Option(..., "--connect", help="controller ROUTER endpoint"),
    workdir: Path = typer.Option(Path("sim-lab"), help="sample store, ledgers and logs"),
    seed: int = typer.Option(0),
    speedup: float = typer.Option(1e6, help="simulated seconds per wall second"),
    furnaces: int | None = typer.Option(None, help="number of furnaces (default: the world's)"),
    error_rate: float = typer.Option(0.0, help="seeded instrument errors per command"),
    timeout_rate: float = typer.Option(0.0, help="seeded hangs past the deadline per command"),
    drop_rate: float = typer.Option(0.0, help="dropped outgoing frames"),
    crash_after: int | None = typer.Option(None, help="each station process dies after N commands"),
    in_process: bool = typer.Option(False, help="one process for all instruments"),
) -> None:
    """Run the simulated lab as driver processes connected to ENDPOINT until Ctrl-C."""
    from sim_lab import FaultConfig, SimLab, WorldError

    try:
        faults = FaultConfig(instrument_error_rate=error_rate, timeout_rate=timeout_rate,
                             drop_rate=drop_rate, crash_after_commands=crash_after, seed=seed)
        lab = SimLab(world, seed=seed, speedup=speedup, faults=faults, workdir=workdir,
                     furnaces=furnaces)
    except (WorldError, ValueError) as exc:
        _fail(str(exc))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    lab.start(connect, processes=not in_process)
    console.print(f"simulated lab {lab.world.name!r} serving {connect} "
                  f"({', '.join(i for _, i in lab.roles())}); workdir {workdir}; Ctrl-C stops")
    try:
        while not done.wait(1.0):
            for name, proc in lab.processes().items():
                if proc.poll() is not None:
                    err_console.print(f"{name} exited with code {proc.returncode}; restarting")
                    lab.restart(name)
    finally:
        lab.stop()


def register(app: typer.Typer) -> None:
    app.add_typer(simlab_app, name="sim-lab")
