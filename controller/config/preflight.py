"""What ``synthloop run`` checks beyond a well-formed file: the world, the systems against its
targets, candidate folders, auth keys and the store URL — each problem one line, before any
process starts or any row is written.
"""

from __future__ import annotations

import re
from pathlib import Path

from .loading import campaign_path
from .schema import CampaignConfig


def _elements(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[A-Z][a-z]?", text))


def preflight(cfg: CampaignConfig, campaign_dir: str | Path, *,
              lab_id: str = "") -> tuple[list[str], list[str]]:
    """What ``run`` needs beyond a well-formed file: ``(errors, notes)``, each a one-line message.

    Checked: the simulated world (a bundled name or a readable world file, relative paths from
    the campaign directory as ``run`` resolves them); the configured chemical systems against the
    world's targets (a simulated campaign aims at the world's wish list: systems with no target are
    an error when none overlaps, else a note stating the widening); the recipe files (a stock file
    or list, extra precursors: a missing or unreadable one is an error naming it, as the planner
    otherwise fell back to the whole library); on a drivers lab, a bind address drivers can
    connect to and the drivers wait; candidate CIF folders; the
    auth key folder; the store URL (a SQLite file's folder must exist and be writable, a server
    URL must connect); a lab id (``lab.id``, or ``lab_id`` = ``run --lab-id``) only on PostgreSQL.
    """
    base = Path(campaign_dir)
    errors: list[str] = []
    notes: list[str] = []
    if cfg.lab.kind == "simulated" and cfg.lab.world:
        from sim_lab import WorldError, load_world

        ref = cfg.lab.world
        if not Path(ref).is_absolute() and (base / ref).exists():
            ref = str(base / ref)
        try:
            world = load_world(ref)
        except WorldError as exc:
            errors.append(f"lab.world: {exc}")
            world = None
        if world is not None:
            _stock_on_world_shelf(cfg, base, world, notes)
            world_systems = {"-".join(sorted(_elements(f))) for f in world.target_formulas()}
            wanted = {s: _elements(s) for s in cfg.chemical_space.systems}
            # a configured system covers a world target whose elements it contains
            covered = {s for s, els in wanted.items() if any(_elements(w) <= els for w in world_systems)}
            missing = [s for s in cfg.chemical_space.systems if s not in covered]
            extra = sorted(w for w in world_systems if not any(_elements(w) <= els for els in wanted.values()))
            shown = ", ".join(sorted(world_systems))
            if not covered:
                errors.append(f"chemical_space.systems {cfg.chemical_space.systems}: world {cfg.lab.world!r} "
                              f"has no target in any of them (its targets' systems: {shown}); "
                              "name at least one of those, or use another world")
            else:
                if missing:
                    notes.append(f"chemical_space.systems: world {cfg.lab.world!r} has no target in "
                                 f"{', '.join(missing)}; those systems add no target")
                if extra:
                    notes.append(f"chemical_space.systems widened: a simulated campaign aims at world "
                                 f"{cfg.lab.world!r}'s targets, so also {', '.join(extra)}")
    errors += _recipe_file_errors(cfg, base)
    if cfg.lab.kind == "drivers" and re.match(r"^tcp://[^\s:]+:\*$", cfg.lab.bind):
        # an error, not a note: nothing tells a driver which port was drawn, so none can
        # connect and the run can only wait lab.driver_wait_s and give up
        errors.append(f"lab.bind {cfg.lab.bind!r}: a drivers lab needs a fixed port drivers can "
                      "connect to ('*' draws a random one), e.g. tcp://0.0.0.0:5555")
    for i, source in enumerate(cfg.chemical_space.candidate_sources):
        path = getattr(source, "path", None)
        if source.kind == "cif_dir" and path:
            if not Path(path).is_dir():
                hint = f" (did you mean {base / path}? run resolves it from the current directory)" \
                    if (base / path).is_dir() else ""
                errors.append(f"chemical_space.candidate_sources[{i}].path: {path!r} is not a folder{hint}")
            elif not any(Path(path).glob("*.cif")):
                errors.append(f"chemical_space.candidate_sources[{i}].path: {path!r} holds no .cif file")
        if source.kind == "screen" and path and not (Path(path) / "manifest.json").is_file():
            errors.append(f"chemical_space.candidate_sources[{i}].path: {path!r} is not a screen output "
                          "(no manifest.json; run synthloop screen POOL --out DIR)")
    if cfg.lab.auth.enabled and cfg.lab.auth.keys_dir and not Path(cfg.lab.auth.keys_dir).is_dir():
        errors.append(f"lab.auth.keys_dir: {cfg.lab.auth.keys_dir!r} is not a folder")
    problem = _store_problem(cfg.store.url, base)
    if problem:
        errors.append(f"store.url: {problem}")
    errors += _lab_id_errors(cfg, lab_id)
    return errors, notes


def _recipe_file_errors(cfg: CampaignConfig, base: Path) -> list[str]:
    """``recipes.stock`` and ``recipes.extra_precursors``: readable, and formulas throughout."""
    from recipes import PrecursorLibrary, RecipeError, read_stock_file, reduced_formula

    rc = cfg.recipes
    errors: list[str] = []
    if isinstance(rc.stock, str):
        try:
            read_stock_file(campaign_path(rc.stock, base))
        except RecipeError as exc:
            errors.append(f"recipes.stock: {exc}")
    elif isinstance(rc.stock, list):
        if not rc.stock:
            errors.append("recipes.stock: an empty list (nothing could be proposed); "
                          "use null for the whole precursor library")
        for formula in rc.stock:
            try:
                reduced_formula(formula)
            except RecipeError as exc:
                errors.append(f"recipes.stock: {exc}")
    if rc.extra_precursors:
        path = campaign_path(rc.extra_precursors, base)
        if not path.is_file():
            errors.append(f"recipes.extra_precursors: {path}: no such file")
        else:
            try:
                PrecursorLibrary.bundled(path)
            except (RecipeError, OSError, UnicodeDecodeError, ValueError) as exc:
                errors.append(f"recipes.extra_precursors: {str(exc).splitlines()[0]}")
    return errors


def _stock_on_world_shelf(cfg: CampaignConfig, base: Path, world: object, notes: list[str]) -> None:
    """A simulated lab doses from its world's shelf: a configured stock narrows it; say what it drops."""
    from recipes import RecipeError, on_shelf, read_stock_file

    stock = cfg.recipes.stock
    try:
        if isinstance(stock, str):
            stock = read_stock_file(campaign_path(stock, base))
        if not stock:
            return
        _, off = on_shelf(stock, list(getattr(world, "precursors", [])))
    except RecipeError:
        return  # reported by _recipe_file_errors
    if off:
        notes.append(f"recipes.stock: {', '.join(off)} not on world {cfg.lab.world!r}'s shelf; skipped")


def _lab_id_errors(cfg: CampaignConfig, lab_id: str) -> list[str]:
    """A lab id (lab.id or --lab-id) on a SQLite store: refused here, before a store exists.

    Why in preflight too: the loop refuses it only after it has created the store and the
    campaign row, so `run --lab-id A` on SQLite left a campaign.db behind, and `validate` said ok.
    """
    from sqlalchemy.engine import make_url

    lab = lab_id or (cfg.lab.id or "")
    try:
        backend = make_url(cfg.store.url).get_backend_name()
    except Exception:  # noqa: BLE001 - a malformed URL is preflight's to report
        return []
    if lab and backend == "sqlite":
        source = "--lab-id" if lab_id else "lab.id"
        return [f"{source} {lab!r}: several labs on one campaign need a PostgreSQL store "
                "(store.url: postgresql+psycopg://USER@HOST/DB); this store is SQLite, which takes one "
                f"controller (remove {source} to run the campaign alone)"]
    return []


def _store_problem(url: str, base: Path) -> str | None:
    import os

    if url.startswith("sqlite"):
        raw = url.split(":///", 1)[1] if ":///" in url else ""
        if raw in ("", ":memory:"):
            return None
        path = Path(raw) if Path(raw).is_absolute() else base / raw
        folder = path.parent
        if not folder.is_dir():
            return f"{url!r}: folder {folder} does not exist"
        if not os.access(folder, os.W_OK):
            return f"{url!r}: folder {folder} is not writable"
        if path.exists() and not os.access(path, os.W_OK):
            return f"{url!r}: {path} is not writable"
        return None
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(url, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any driver error is the message
        return f"{url!r}: cannot connect ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return None
