"""`synthloop xrd`: analyse and plot real or simulated powder patterns against candidate CIFs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .output import check_out_file, err_console
from .output import fail as _fail

if TYPE_CHECKING:  # the analysis stack (pymatgen, scipy) loads only when an xrd command runs
    from ..xrd import PhaseAnalysis

console = Console(soft_wrap=True)  # paths and formulas a user copies stay whole

xrd_app = typer.Typer(
    name="xrd",
    help="Phase identification and weight fractions from powder XRD patterns.",
    no_args_is_help=True,
)

_BUNDLED_DIR = Path(__file__).resolve().parents[1] / "xrd" / "data" / "cifs"
_BUNDLED = sorted(c.stem for c in _BUNDLED_DIR.glob("*.cif"))  # a glob, not an import: help stays fast
PHASES_HELP = ("candidate phases: CIF files (name = file stem), names of bundled CIFs or their formulas "
               f"(bundled: {', '.join(_BUNDLED) or 'none'}; `synthloop xrd phases` lists them)")


def _bundled_phase(spec: str) -> str:
    """A formula given for a bundled CIF (``NiO`` → ``NiO_225_sym``); anything else unchanged."""
    if Path(spec).is_file() or spec in _BUNDLED:
        return spec
    matches = [b for b in _BUNDLED if b.split("_")[0] == spec]
    if len(matches) > 1:
        _fail(f"--phases {spec}: several bundled phases have that formula ({', '.join(matches)}); name one")
    return matches[0] if matches else spec




TABLE_SUFFIXES = (".csv", ".json")
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".eps", ".ps")


def _check_out(out: Path | None, option: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output path that cannot be written before any fitting starts.

    Why first: a folder of scans takes minutes; an --out in a missing folder or with a suffix no
    writer knows used to fail with a traceback after the work, and the results were lost.
    """
    if out is None:
        return
    if out.suffix.lower() not in suffixes:
        _fail(f"{option} {out}: expected a {' / '.join(suffixes)} file")
    check_out_file(out, option)


def _write_out(out: Path, write) -> None:  # noqa: ANN001 - a callable taking the path
    """Write an output file, turning an OS error (permissions, full disk) into a one-line error."""
    try:
        write(out)
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror or exc}")


def _settings(preset: str, profile: Path | None):
    """AnalysisSettings of a preset (simulated | real_samples), with an instrument profile."""
    from ..xrd import AnalysisSettings
    from ..xrd.calibration import CalibrationError, InstrumentProfile

    if preset not in PRESETS:
        _fail(f"--preset {preset!r}: expected one of {', '.join(PRESETS)}")
    settings = AnalysisSettings.real_samples() if preset == "real_samples" else AnalysisSettings()
    if profile is not None:
        try:
            settings = InstrumentProfile.load(profile).apply(settings)
        except CalibrationError as exc:
            _fail(str(exc))
    return settings


PRESETS = ("simulated", "real_samples")
PRESET_HELP = ("analysis settings: 'simulated' (library defaults) or 'real_samples' (tuned on real "
               "A-Lab products: spill-over, look-alike and cell rules, systematic sigma)")
PROFILE_HELP = "instrument profile YAML from `synthloop xrd calibrate` (zero shift, widths, spill-over)"


def _composition(formula: str | None):
    """The weighed composition of --composition, or None; a formula pymatgen cannot read is a
    usage error (exit 2) naming the option."""
    if formula is None:
        return None
    from pymatgen.core import Composition

    try:
        comp = Composition(formula)
        float(comp.weight)  # unknown symbols parse (as DummySpecies) and fail only here
    except Exception as exc:  # noqa: BLE001 - pymatgen raises several types for bad formulas
        _fail(f"--composition {formula!r}: not a chemical formula")
        raise AssertionError("unreachable") from exc
    if comp.num_atoms <= 0:
        _fail(f"--composition {formula!r}: no atoms")
    return comp


def _run(pattern: Path, phases: list[str], target: str | None, settings=None,
         composition=None) -> PhaseAnalysis:
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
        return analyze(pat, refs, target=target, settings=settings, composition=composition)
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
    return [_bundled_phase(p) for p in [*phases, *extra]]


PATTERN_SUFFIXES = (".xrdml", ".xy", ".xye", ".csv", ".txt", ".dat")  # what read_pattern reads
# instrument formats read_pattern does not read: named when a folder holds them, not skipped
# silently (a folder of 6 scans showing 5 rows and no word about the sixth)
UNREAD_SCAN_SUFFIXES = (".raw", ".brml", ".rasx", ".ras", ".uxd", ".udf", ".rd", ".sd", ".gsa", ".gsas", ".cpi")


TABLE_COLUMNS = ("pattern", "phases", "target", "target_yield", "target_yield_std", "rwp", "ambiguous", "error")


def _is_own_table(f: Path) -> bool:
    """A results table this command wrote (``--out table.csv`` inside the scanned folder): its
    first line is our header. Why: read as a pattern it failed the next run of the same folder."""
    if f.suffix.lower() != ".csv":
        return False
    try:
        with f.open(encoding="utf-8", errors="replace") as fh:
            first = fh.readline().strip()
    except OSError:
        return False
    return first == ",".join(TABLE_COLUMNS)


def _batch_items(folder: Path, phases: list[str], skip: Path | None = None) -> list[tuple[Path, list[str] | None]]:
    """Pattern files under FOLDER (recursively), each with its candidates: --phases if given,
    else the CIFs in a ``phases/`` folder beside the pattern (the A-Lab layout), else None.
    The --out file and results tables written by this command are not patterns."""
    items = []
    skip_resolved = skip.resolve() if skip is not None else None
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or f.suffix.lower() not in PATTERN_SUFFIXES or "phases" in f.parts:
            continue
        if (skip_resolved is not None and f.resolve() == skip_resolved) or _is_own_table(f):
            continue
        if phases:
            items.append((f, phases))
        else:
            cifs = sorted(str(c) for c in (f.parent / "phases").glob("*.cif"))
            items.append((f, cifs or None))
    return items


def _table_row(res: PhaseAnalysis) -> dict:
    """The columns of one analysed pattern in the folder table (and a single scan's --out)."""
    return {
        "phases": "; ".join(f"{p.name} {p.weight_fraction * 100:.1f}±{p.weight_fraction_std * 100:.1f}"
                            for p in res.phases),
        "target_yield": res.target_yield, "target_yield_std": res.target_yield_std,
        "rwp": round(res.rwp, 5),
        "ambiguous": "; ".join(" / ".join(a["phases"]) + f" (kept {a['kept']})" for a in res.ambiguities),
    }


def _write_table(out: Path, rows: list[dict]) -> None:
    """Rows as JSON (a list of objects) for a .json suffix, else CSV with TABLE_COLUMNS."""
    import csv

    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(rows, indent=1))
        return
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(TABLE_COLUMNS))
        w.writeheader()
        w.writerows(rows)


def _batch(folder: Path, phases: list[str], target: str | None, out: Path | None,
           as_json: bool, settings=None, composition=None) -> None:
    """Analyse every pattern in FOLDER; one table (and optionally one CSV/JSON file)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ..xrd import (
        XrdAnalysisError,
        XrdFormatError,
        XrdReferenceError,
        analyze,
        load_phase,
        read_pattern,
    )

    items = _batch_items(folder, phases, skip=out)
    unread = sorted(str(f.relative_to(folder)) for f in folder.rglob("*")
                    if f.is_file() and f.suffix.lower() in UNREAD_SCAN_SUFFIXES)
    if unread:
        err_console.print(f"warning: {len(unread)} scan(s) in a format this command does not read, skipped "
                          f"(export them as .xrdml or .xy): {', '.join(unread)}",
                          markup=False, highlight=False, soft_wrap=True)
    if not items:
        _fail(f"{folder}: no pattern files ({', '.join(PATTERN_SUFFIXES)}) in it")
    rows: list[dict] = []
    cache: dict[str, object] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("analysing", total=len(items))
        for f, cands in items:
            rel = str(f.relative_to(folder))
            bar.update(task, description=rel[:40])
            row: dict = dict.fromkeys(TABLE_COLUMNS, "") | {"pattern": rel, "target": target,
                                                             "target_yield": None,
                                                             "target_yield_std": None, "rwp": None}
            try:
                if not cands:
                    raise XrdAnalysisError(f"{f}: no candidate phases (give --phases or put CIFs "
                                           "in a phases/ folder beside the pattern)")
                refs = []
                for c in cands:
                    if c not in cache:
                        cache[c] = load_phase(c)
                    refs.append(cache[c])
                tgt = target
                if tgt is not None and not any(r.name == tgt or r.formula == tgt for r in refs):
                    try:
                        from pymatgen.core import Composition

                        red = Composition(tgt).reduced_formula
                    except Exception:  # noqa: BLE001
                        red = None
                    if not any(r.formula == red for r in refs):
                        tgt = None  # this pattern's candidates do not include the target
                res = analyze(read_pattern(f), refs, target=tgt, settings=settings,
                              composition=composition)
                row.update(_table_row(res))
            except (XrdFormatError, XrdReferenceError, XrdAnalysisError) as exc:
                row["error"] = str(exc)
            rows.append(row)
            bar.advance(task)
    if out is not None:
        _write_out(out, lambda path: _write_table(path, rows))
    failed = [r for r in rows if r["error"]]
    if as_json:
        print(json.dumps(rows, allow_nan=False))
    else:
        table = Table(title=escape(str(folder)))
        for col in ("pattern", "phases (wt % ± σ)", "target yield", "Rwp", "ambiguous / error"):
            table.add_column(col)
        for r in rows:
            ty = ("" if r["target_yield"] is None else
                  f"{r['target_yield'] * 100:.1f} ± {(r['target_yield_std'] or 0) * 100:.1f}")
            table.add_row(escape(r["pattern"]), escape(r["phases"]), ty,  # cells are rich markup
                          "" if r["rwp"] is None else f"{r['rwp']:.4f}",
                          escape(r["error"] or r["ambiguous"]))
        console.print(table)
        # the count on a line of its own: a table title wraps at the terminal's width
        console.print(f"{folder}: {len(rows)} patterns, {len(failed)} failed", markup=False,
                      highlight=False, soft_wrap=True)
        if out is not None:
            console.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@xrd_app.command("analyze", context_settings=_EXTRA)
def analyze_cmd(
    ctx: typer.Context,
    pattern: Path = typer.Argument(..., help=f"pattern file ({', '.join(PATTERN_SUFFIXES)}) or a folder "
                                   "of them (batch: one table)"),
    phases: list[str] = typer.Option([], "--phases", "-p", help=PHASES_HELP + "; for a folder, "
                                     "default: the CIFs in a phases/ folder beside each pattern"),
    target: str | None = typer.Option(None, "--target", help="phase name or formula whose yield to report"),
    as_json: bool = typer.Option(False, "--json", help="print exactly one JSON document"),
    out: Path | None = typer.Option(None, "--out", "-o", help="also write the result table (one row "
                                    "per pattern) to this .csv or .json file"),
    preset: str = typer.Option("simulated", "--preset", help=PRESET_HELP),
    profile: Path | None = typer.Option(None, "--profile", help=PROFILE_HELP),
    composition: str | None = typer.Option(
        None, "--composition", help="the sample's weighed (nominal) composition, e.g. Li2MgCl4: "
        "decides between look-alike phases the pattern cannot separate (by mass balance; "
        "weighted by the preset's composition_weight) and is reported with them"),
) -> None:
    """Fit PATTERN with the candidate phases; print phases found, weight fractions and Rwp.

    Given a folder, analyse every pattern file in it (recursively) and print one table; a
    pattern that cannot be analysed gets its error in the table and the exit code is 1.
    """
    settings = _settings(preset, profile)
    comp = _composition(composition)
    _check_out(out, "--out", TABLE_SUFFIXES)
    if pattern.is_dir():
        _batch(pattern, _all_phases(ctx, phases), target, out, as_json, settings, comp)
        return
    res = _run(pattern, _all_phases(ctx, phases), target, settings, comp)
    if out is not None:  # one row, the folder table's columns (it was silently ignored)
        row = dict.fromkeys(TABLE_COLUMNS, "") | {"pattern": pattern.name, "target": res.target} | _table_row(res)
        _write_out(out, lambda path: _write_table(path, [row]))
        if not as_json:
            console.print(f"wrote {out}", markup=False, highlight=False)
    if as_json:
        print(json.dumps(res.to_dict(), allow_nan=False))
        return
    table = Table(title=escape(f"{pattern.name}  Rwp {res.rwp:.4f}  (Rexp {res.rexp:.4f})"))
    for col in ("phase", "formula", "wt %", "± wt %", "FWHM@30° (deg)", "Δχ²"):
        table.add_column(col)
    for p in res.phases:
        table.add_row(escape(p.name), p.formula, f"{p.weight_fraction * 100:.1f}",
                      f"{p.weight_fraction_std * 100:.1f}", f"{p.fwhm_deg_at_30:.3f}",
                      _delta_chi2(p.delta_chi2))
    console.print(table)
    for name, why in res.rejected.items():
        console.print(f"  not found: {name} ({why})", highlight=False, markup=False)
    if res.unexplained_peaks:
        console.print("  unexplained peaks at 2θ = "
                      + ", ".join(f"{v:.2f}" for v in res.unexplained_peaks)
                      + " (an unknown phase?)", highlight=False)
    for a in res.ambiguities:
        console.print(f"  ambiguous: {' / '.join(a['phases'])} look alike (similarity "
                      f"{a['similarity']:.2f}, Δχ² {a['delta_chi2']:.0f}); kept {a['kept']}"
                      + (f"; mass balance vs {a['composition']}: misplaced atoms "
                         + ", ".join(f"{k} {v:.2f}" for k, v in a["misplaced_atoms"].items())
                         if "composition" in a else ""), highlight=False)
    st = res.structure_type
    if st and st.get("family"):
        console.print(f"  structure type of the target: {st['family']} ({st['template_formula']}"
                      f"{', ' + st['space_group'] if st.get('space_group') else ''}), "
                      f"{'used for the yield' if st['used_for_yield'] else 'not used'} "
                      f"(fit gain {st['fit_gain']}, needs {st['threshold']}); searched because "
                      f"{st['trigger']}", highlight=False)
    if res.target is not None:
        std = res.target_yield_std or 0.0
        console.print(f"  target {res.target}: yield {res.target_yield * 100:.1f} ± "
                      f"{std * 100:.1f} wt%")


def _delta_chi2(value: float | None) -> str:
    """Δχ² of dropping a phase; '–' where there is none to drop against (a lone phase: nan)."""
    import math

    return "–" if value is None or not math.isfinite(value) else f"{value:.0f}"


@xrd_app.command("plot", context_settings=_EXTRA)
def plot_cmd(
    ctx: typer.Context,
    pattern: Path = typer.Argument(..., help=f"pattern file: {', '.join(PATTERN_SUFFIXES)}"),
    phases: list[str] = typer.Option(..., "--phases", "-p", help=PHASES_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="image file to write (.png, or .pdf, .svg, ...)"),
) -> None:
    """Draw observed, fitted, difference and each phase's contribution to OUT."""
    from ..xrd import plot_analysis

    _check_out(out, "--out", IMAGE_SUFFIXES)
    res = _run(pattern, _all_phases(ctx, phases), None)
    written: list[Path] = []
    _write_out(out, lambda path: written.append(plot_analysis(res, path)))
    console.print(f"wrote {written[0]}", markup=False, highlight=False)


@xrd_app.command("calibrate")
def calibrate_cmd(
    scan: Path = typer.Argument(..., help=f"scan of a reference standard ({', '.join(PATTERN_SUFFIXES)})"),
    cif: str = typer.Option(..., "--cif", help="the standard's CIF (or a bundled phase name)"),
    out: Path = typer.Option(..., "--out", "-o", help="instrument profile to write (.yaml)"),
) -> None:
    """Learn this instrument's profile from a standard: zero shift, Caglioti U/V/W, pseudo-Voigt
    mixing, fixed-slit spill-over angle; `xrd analyze --profile` and the campaign config's
    `analysis.instrument_profile` reuse it."""
    from ..xrd import XrdAnalysisError, XrdFormatError, XrdReferenceError, load_phase, read_pattern
    from ..xrd.calibration import CalibrationError, calibrate

    _check_out(out, "--out", (".yaml", ".yml"))
    try:
        prof = calibrate(read_pattern(scan), load_phase(_bundled_phase(cif)))
    except (XrdFormatError, XrdReferenceError, XrdAnalysisError, CalibrationError) as exc:
        _fail(str(exc))
        return
    _write_out(out, prof.save)
    spill = ("none" if prof.footprint_two_theta is None
             else f"below 2θ = {prof.footprint_two_theta:.1f}°")
    console.print(f"{escape(scan.name)}: zero shift {prof.zero_shift_deg:+.4f}°, FWHM "
                  f"{prof.fwhm(30.0):.3f}° at 30° / {prof.fwhm(90.0):.3f}° at 90° "
                  f"(U {prof.caglioti_u:.4g}, V {prof.caglioti_v:.4g}, W {prof.caglioti_w:.4g}; "
                  f"{prof.peaks_used} reflections), η {prof.eta:.2f}, spill-over {spill}, "
                  f"Rwp {prof.rwp:.4f}", highlight=False)
    console.print(f"wrote {out}", markup=False, highlight=False)


@xrd_app.command("phases")
def phases_cmd() -> None:
    """List the bundled reference phases `--phases` accepts (by name or by formula)."""
    for name in _BUNDLED:
        console.print(f"{name}\t{name.split('_')[0]}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(xrd_app, name="xrd")
