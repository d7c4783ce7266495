"""Campaign commands: init, validate, run, status, demo, approve, reject, proposals, pause, resume, stop, report."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..config import ConfigError, example_config_text, load_config, preflight
from ..store import Store, StoreError, iso
from .output import err_console
from .output import fail as _fail

console = Console(soft_wrap=True)  # paths and formulas a user copies stay whole

CONFIG_FILE = "campaign.yaml"


def _config_path(target: Path) -> Path:
    return target / CONFIG_FILE if target.is_dir() else target


def _require_dir(campaign_dir: Path) -> None:
    """A campaign directory that does not exist is named as one (not as 'no such file')."""
    if not campaign_dir.exists():
        raise ConfigError(f"{campaign_dir}: no such campaign directory "
                          f"(create one with `synthloop init {campaign_dir}`)")


def open_campaign_store(campaign_dir: Path) -> tuple[Store, str]:
    """Open the store of a campaign directory as its config says; returns (store, campaign name)."""
    _require_dir(campaign_dir)
    cfg = load_config(_config_path(campaign_dir))
    return Store.for_campaign_dir(campaign_dir, cfg.store.url), cfg.campaign.name


def _checked_config(path: Path, hint: str = "", lab_id: str = ""):  # noqa: ANN202 - (CampaignConfig, notes)
    """The campaign's config and preflight's notes, or exit 2 naming every problem."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        _fail(str(exc))
    errors, notes = preflight(cfg, path.parent, lab_id=lab_id)
    if errors:
        _fail(f"{path}: " + "; ".join(errors) + hint)
    return cfg, notes


def _campaign_name(directory: Path) -> str:
    """A valid campaign name from a directory name (letters, digits, _ . - and spaces)."""
    import re

    name = re.sub(r"[^A-Za-z0-9_.\- ]+", "-", directory.resolve().name).strip("-. ")[:120]
    return name if name and name[0].isalnum() else f"campaign-{name}".rstrip("-")


def init(
    directory: Path = typer.Argument(..., help="campaign directory to create (may exist if empty)"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing campaign.yaml"),
    name: str = typer.Option("", "--name", help="campaign name (default: the directory's name)"),
) -> None:
    """Write a commented example campaign.yaml into DIRECTORY, naming the campaign after it."""
    import re

    target = directory / CONFIG_FILE
    if target.exists() and not force:
        _fail(f"{target} exists; use --force to overwrite it")
    campaign_name = name or _campaign_name(directory)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\- ]{0,119}", campaign_name):
        _fail(f"--name {campaign_name!r}: use letters, digits, _ . - and spaces, starting with a letter or digit")
    text = example_config_text()
    text = re.sub(r"(?m)^(  name: )demo-campaign( *)", lambda m: m.group(1) + campaign_name
                  + " " * max(1, len("demo-campaign") + len(m.group(2)) - len(campaign_name)), text, count=1)
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    console.print(f"wrote {target}\nnext: edit it, then `synthloop validate {target}`", markup=False, highlight=False)


def validate(file: Path = typer.Argument(..., help="campaign YAML file or campaign directory")) -> None:
    """Check a campaign configuration without running anything."""
    path = _config_path(file)
    cfg, notes = _checked_config(path)
    console.print(
        f"[green]ok[/]: campaign {cfg.campaign.name!r}, seed {cfg.campaign.seed}, "
        f"{len(cfg.chemical_space.systems)} chemical system(s), lab {cfg.lab.kind}"
        + (f" (world {cfg.lab.world})" if cfg.lab.kind == "simulated" else ""), highlight=False, soft_wrap=True
    )
    for note in notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)


def status(
    campaign_dir: Path = typer.Argument(..., help="campaign directory"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Show what the campaign's store holds: experiments by state and the latest events."""
    try:
        store, name = open_campaign_store(campaign_dir)
    except ConfigError as exc:
        _fail(str(exc))
    with store:
        try:
            campaign = store.get_campaign(name)
        except StoreError:
            payload = {"campaign": name, "status": "not started", "experiments": {}, "events": []}
            if as_json:
                print(json.dumps(payload))
            else:
                console.print(f"campaign {name!r}: not started (the store has no record of it yet)")
            return
        counts = store.experiment_counts(campaign.id)
        events = store.recent_events(campaign.id, limit=10)
    payload = {
        "campaign": campaign.name,
        "status": campaign.status,
        "seed": campaign.seed,
        "created_at": iso(campaign.created_at),
        "experiments": counts,
        "experiments_total": sum(counts.values()),
        "events": [
            {"id": e.id, "ts": iso(e.ts), "kind": e.kind, "entity": e.entity, "entity_id": e.entity_id,
             "from": e.from_state, "to": e.to_state, "message": e.message}
            for e in events
        ],
    }
    if as_json:
        print(json.dumps(payload))
        return
    console.print(f"campaign [bold]{campaign.name}[/] — {campaign.status}, seed {campaign.seed}")
    table = Table("state", "experiments")
    for state, n in sorted(counts.items()):
        table.add_row(state, str(n))
    table.add_row("[bold]total[/]", str(sum(counts.values())))
    console.print(table)
    for e in events:
        arrow = f" {e.from_state}→{e.to_state}" if e.to_state else ""
        console.print(f"  {iso(e.ts)} {e.kind}{arrow} {e.message or ''}", highlight=False, markup=False)
    waiting = counts.get("proposed", 0)
    if waiting and campaign.status in ("running", "paused", "created"):
        # approval mode: nothing moves until a person decides, and nothing else said so
        console.print(
            f"{waiting} proposed experiment(s) wait for a decision: `synthloop proposals {campaign_dir}`, then "
            f"`synthloop approve|reject {campaign_dir} ID...`; on a simulated lab (rounds) the next round "
            "starts only when every proposed experiment is decided", highlight=False, markup=False, soft_wrap=True)


def run(
    campaign_dir: Path = typer.Argument(..., help="campaign directory with campaign.yaml"),
    strategy: str = typer.Option("full", "--strategy",
                                 help="full | random_recipes | no_active_learning | random_targets"),
    external_lab: bool = typer.Option(
        False, "--external-lab",
        help="the simulated lab's instruments already run on their own (connected to lab.bind); "
             "do not start them here"),
    live: bool = typer.Option(True, "--live/--no-live", help="show the live progress view"),
    max_wall_s: float = typer.Option(
        0.0, "--max-wall-s",
        help="end the campaign after this many seconds of this run, as `synthloop stop` does: it is then "
             "finished and a later run does not continue it (0 = no limit; to interrupt and resume "
             "later, press Ctrl-C or send SIGTERM)"),
    lab_id: str = typer.Option("", "--lab-id",
                               help="this lab's name when several labs share the campaign on PostgreSQL "
                                    "(overrides lab.id)"),
    free_running: bool = typer.Option(
        False, "--free-running",
        help="decide as results arrive (as on real instruments) even for a simulated lab"),
    log_level: str = typer.Option(
        "INFO", "--log-level",
        help="level of the campaign log (CAMPAIGN_DIR/logs/controller.log); warnings also go to stderr"),
) -> None:
    """Run (or resume after a crash) the closed-loop campaign in CAMPAIGN_DIR."""
    from ..loop import STRATEGIES, RunOptions, run_campaign
    from .logs import LogLevelError, campaign_logging, parse_level

    if strategy not in STRATEGIES:
        _fail(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    try:
        _require_dir(campaign_dir)
    except ConfigError as exc:
        _fail(str(exc))
    path = _config_path(campaign_dir)
    try:
        level = parse_level(log_level)
    except LogLevelError as exc:
        _fail(str(exc))
    cfg, _ = _checked_config(path, hint=" (nothing was started; `synthloop validate` checks this)", lab_id=lab_id)
    try:
        log_file = campaign_logging(path.parent, level, name=f"controller-{lab_id}" if lab_id else "controller")
    except OSError as exc:
        _fail(f"{path.parent}: cannot write the campaign log: {exc}")
    console.print(f"log: {log_file}", highlight=False, markup=False)
    if cfg.lab.kind == "drivers":  # a real lab: say what the run is waiting for (it was silent)
        console.print(f"lab: waiting for the instrument drivers to connect to {cfg.lab.bind}; "
                      + _drivers_hint(cfg.lab.bind), highlight=False, markup=False, soft_wrap=True)
    db = _sqlite_file(cfg.store.url, path.parent)
    fresh = db is not None and not db.exists()
    try:
        result = run_campaign(campaign_dir, options=RunOptions(strategy=strategy, max_wall_s=max_wall_s or None,
                                                              lockstep=False if free_running else None),
                              external_lab=external_lab, live=live, lab_id=lab_id or None)
    except (ConfigError, ValueError, OSError, StoreError) as exc:
        if fresh:
            _remove_unstarted_store(db)
        first = str(exc).splitlines()[0] if str(exc) else ""
        hint = f"; {_drivers_hint(cfg.lab.bind)}" if "no live driver" in first else ""
        _fail(f"{path}: cannot run: {type(exc).__name__}: {first}{hint}")
    except KeyboardInterrupt:
        _interrupted(campaign_dir)
    _print_result(result)


def _drivers_hint(bind: str) -> str:
    """How a lab engineer starts drivers for this campaign's endpoint (the run gave up after a
    minute with 'no live driver ... (connected: [])' and no word on what to start, or where)."""
    import re

    m = re.match(r"^tcp://([^:]+):(\d+|\*)$", bind)
    if m and m.group(2) == "*":
        return ("lab.bind has no fixed port ('*'), so drivers cannot know where to connect: "
                "set one, e.g. tcp://0.0.0.0:5555")
    connect = bind
    if m and m.group(1) in ("0.0.0.0", "*"):
        connect = f"tcp://THIS-HOST:{m.group(2)}"
    return (f"start them with `synthloop driver serve MODULE:CLASS[=IDENTITY] ... --connect {connect}` "
            "(`synthloop driver check MODULE:CLASS` tests a driver first)")


def _interrupted(campaign_dir: Path) -> None:
    """Ctrl-C: say that nothing is lost and how to go on (SIGTERM says so in run_campaign), exit 130.

    Why: the run used to end with exit 130 and no word, so a user could not tell an interrupted
    campaign (resumable) from a broken one.
    """
    err_console.print(f"campaign interrupted (Ctrl-C); `synthloop run {campaign_dir}` resumes it",
                      markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(130)


def _sqlite_file(url: str, base: Path) -> Path | None:
    from sqlalchemy.engine import make_url

    from ..store.store import resolve_url

    parsed = make_url(resolve_url(url, base))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _remove_unstarted_store(db: Path) -> None:
    """A store this failed run created and that holds no campaign is removed with its WAL files."""
    import sqlite3

    try:
        with sqlite3.connect(db) as conn:
            started = conn.execute("SELECT count(*) FROM campaign").fetchone()[0]
    except sqlite3.Error:
        started = 0
    if started:
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def _print_result(result) -> None:  # noqa: ANN001 - CampaignResult (imported lazily)
    s = result.summary
    console.print(f"campaign [bold]{s.campaign}[/]: {s.status} ({s.stop_reason or '-'}); "
                  f"{s.experiments} experiments, {s.targets_made} of {s.targets_attempted} targets made, "
                  f"{s.model_versions} model version(s), {s.lab_days:.2f} lab days, {s.wall_s:.1f} s")
    if result.report is not None:
        console.print(f"report: {result.report.report}\nexperiments: {result.report.csv}, {result.report.json}",
                      markup=False, highlight=False)


def _actor() -> str:
    import getpass

    try:
        return f"user:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no login name (containers): still attributable
        return "user:unknown"


def _control(campaign_dir: Path, action, *args, **kwargs):  # noqa: ANN001, ANN202
    from ..loop import ControlError

    try:
        store, name = open_campaign_store(campaign_dir)
    except ConfigError as exc:
        _fail(str(exc))
    with store:
        try:
            return action(store, name, *args, actor=_actor(), **kwargs)
        except (ControlError, StoreError) as exc:
            _fail(str(exc))


def _decide_each(campaign_dir: Path, action, ids: list[int], verb: str, **kwargs) -> None:  # noqa: ANN001
    """Apply approve/reject to every id, each on its own; then exit 2 if any was refused.

    Why each on its own: `approve DIR 2 999 5` used to stop at the unknown 999, so 5 was neither
    approved nor reported and the user could not tell which ids had been decided.
    """
    from ..loop import ControlError

    try:
        store, name = open_campaign_store(campaign_dir)
    except ConfigError as exc:
        _fail(str(exc))
    refused: list[int] = []
    with store:
        for eid in ids:
            try:
                exp = action(store, name, eid, actor=_actor(), **kwargs)
            except (ControlError, StoreError) as exc:
                err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
                refused.append(eid)
                continue
            console.print(f"experiment {exp.id} ({exp.sample_id}) {verb}", markup=False, highlight=False)
    if refused:
        _fail(f"{len(refused)} of {len(ids)} experiment(s) not {verb}: {', '.join(map(str, refused))}")


def approve(
    campaign_dir: Path = typer.Argument(..., help="campaign directory"),
    experiment_id: list[int] = typer.Argument(..., help="experiment id(s) to approve"),
) -> None:
    """Approve proposed experiment(s) (approval mode): the scheduler may then run them."""
    from ..loop import approve as do

    _decide_each(campaign_dir, do, experiment_id, "approved")


def reject(
    campaign_dir: Path = typer.Argument(..., help="campaign directory"),
    experiment_id: list[int] = typer.Argument(..., help="experiment id(s) to reject"),
    reason: str = typer.Option("", "--reason", help="why (kept in the event log)"),
) -> None:
    """Reject proposed experiment(s): they are cancelled and the planner moves on."""
    from ..loop import reject as do

    _decide_each(campaign_dir, do, experiment_id, "rejected", reason=reason)


def pause(campaign_dir: Path = typer.Argument(..., help="campaign directory")) -> None:
    """Pause: no new instrument step starts; steps already running finish and are recorded."""
    from ..loop import pause as do

    _control(campaign_dir, do)
    console.print("campaign paused (resume with `synthloop resume`)")


def resume(campaign_dir: Path = typer.Argument(..., help="campaign directory")) -> None:
    """Resume a paused campaign."""
    from ..loop import resume as do

    _control(campaign_dir, do)
    console.print("campaign resumed")


def stop(campaign_dir: Path = typer.Argument(..., help="campaign directory")) -> None:
    """Stop: unstarted experiments are cancelled, running ones finish, then the campaign ends."""
    from ..loop import stop as do

    _control(campaign_dir, do)
    console.print("campaign stopping (a running controller finishes what is on the instruments)")


def report(campaign_dir: Path = typer.Argument(..., help="campaign directory")) -> None:
    """(Re)write the report (Markdown + PNG plots) and the CSV/JSON export from the store."""
    from ..loop import write_report

    try:
        store, name = open_campaign_store(campaign_dir)
        cfg = load_config(_config_path(campaign_dir))
    except ConfigError as exc:
        _fail(str(exc))
    with store:
        try:
            files = write_report(store, name, campaign_dir / "report", threshold=cfg.recipes.yield_threshold)
        except StoreError as exc:
            _fail(str(exc))
    console.print(f"report: {files.report}\nexperiments: {files.csv}, {files.json}", markup=False, highlight=False)


def demo(
    directory: Path = typer.Option(Path("demo-campaign"), "--dir", help="campaign directory to use"),
    live: bool = typer.Option(True, "--live/--no-live", help="show the live progress view"),
) -> None:
    """Run a real campaign on the bundled `demo` world (simulated instruments over ZeroMQ)."""
    from ..loop import run_campaign
    from ..loop.demo import DemoError, prepare_demo, print_demo_summary

    try:
        prepare_demo(directory)
    except DemoError as exc:
        _fail(str(exc))
    from .logs import campaign_logging

    campaign_logging(directory)
    console.print(f"demo campaign in {escape(str(directory))}: simulated instruments as separate processes over "
                  "ZeroMQ on loopback, SQLite store")
    try:
        result = run_campaign(directory, live=live)
    except KeyboardInterrupt:
        _interrupted(directory)
    _print_result(result)
    print_demo_summary(directory, console)


def proposals(
    campaign_dir: Path = typer.Argument(..., help="campaign directory"),
    as_json: bool = typer.Option(False, "--json", help="print the web app's /api/proposals JSON"),
    limit: int = typer.Option(200, "--limit", min=1, max=500, help="at most this many proposals"),
) -> None:
    """List proposed experiments — the ids `synthloop approve/reject` take — with target, recipe and why."""
    from sqlmodel import Session, select

    from ..store import Campaign
    from ..web.queries import proposals as read_proposals

    try:
        store, name = open_campaign_store(campaign_dir)
        cfg = load_config(_config_path(campaign_dir))
    except ConfigError as exc:
        _fail(str(exc))
    with store, Session(store.engine) as session:
        campaign = session.exec(select(Campaign).where(Campaign.name == name)).first()
        data = read_proposals(session, campaign, limit=limit, cfg=cfg)
    if as_json:
        print(json.dumps(data, default=str))
        return
    if campaign is None:
        console.print(f"campaign {name!r}: not started (no proposals yet)")
        return
    if not data["targets"]:
        console.print(f"campaign {name!r}: no proposed experiment")
        return
    table = Table("id", "target", "recipe", "heating", "why", title=f"{data['total']} proposed experiment(s)")
    for t in data["targets"]:
        why_target = t.get("why") or ""
        for item in t["proposals"]:
            e, r = item["experiment"], item["recipe"]
            peak, dwell = r.get("max_temperature_c"), r.get("total_dwell_min")
            heating = (f"{peak:.0f} °C, {dwell / 60:.1f} h" if peak is not None and dwell else "–") + f", {r['atmosphere']}"
            why = "; ".join(x for x in (why_target, r.get("rationale") or "") if x)
            table.add_row(str(e["id"]), t["formula"], r["reaction"], heating, why or "–")
    console.print(table)
    console.print("approve with `synthloop approve DIR ID...`, reject with `synthloop reject DIR ID... --reason TEXT`",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    for fn in (init, validate, run, status, demo, approve, reject, proposals, pause, resume, stop, report):
        app.command(fn.__name__)(fn)


