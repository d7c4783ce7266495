"""Campaign commands: init, validate, run, status, demo."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..config import ConfigError, example_config_text, load_config
from ..store import Store, StoreError, iso

console = Console()
err_console = Console(stderr=True)

CONFIG_FILE = "campaign.yaml"


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _config_path(target: Path) -> Path:
    return target / CONFIG_FILE if target.is_dir() else target


def open_campaign_store(campaign_dir: Path) -> tuple[Store, str]:
    """Open the store of a campaign directory as its config says; returns (store, campaign name)."""
    cfg = load_config(_config_path(campaign_dir))
    return Store.for_campaign_dir(campaign_dir, cfg.store.url), cfg.campaign.name


def init(
    directory: Path = typer.Argument(..., help="campaign directory to create (may exist if empty)"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing campaign.yaml"),
) -> None:
    """Write a commented example campaign.yaml into DIRECTORY."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CONFIG_FILE
    if target.exists() and not force:
        _fail(f"{target} exists; use --force to overwrite it")
    target.write_text(example_config_text(), encoding="utf-8")
    console.print(f"wrote {target}\nnext: edit it, then `synthloop validate {target}`")


def validate(file: Path = typer.Argument(..., help="campaign YAML file or campaign directory")) -> None:
    """Check a campaign configuration without running anything."""
    try:
        cfg = load_config(_config_path(file))
    except ConfigError as exc:
        _fail(str(exc))
    console.print(
        f"[green]ok[/]: campaign {cfg.campaign.name!r}, seed {cfg.campaign.seed}, "
        f"{len(cfg.chemical_space.systems)} chemical system(s), lab {cfg.lab.kind}"
        + (f" (world {cfg.lab.world})" if cfg.lab.kind == "simulated" else "")
    )


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
        console.print(f"  {iso(e.ts)} {e.kind}{arrow} {e.message or ''}", highlight=False)


def run(campaign_dir: Path = typer.Argument(..., help="campaign directory with campaign.yaml")) -> None:
    """Run (or resume) the closed-loop campaign in CAMPAIGN_DIR."""
    try:
        store, name = open_campaign_store(campaign_dir)
    except ConfigError as exc:
        _fail(str(exc))
    cfg = load_config(_config_path(campaign_dir))
    with store:
        store.ensure_campaign(name, seed=cfg.campaign.seed,
                              config_yaml=_config_path(campaign_dir).read_text(encoding="utf-8"))
    _fail(
        "the closed-loop scheduler is not built yet (issue: closed-loop campaign controller); "
        f"the campaign store in {campaign_dir} is created and migrated, nothing was run",
        code=3,
    )


def demo(
    directory: Path = typer.Option(Path("demo-campaign"), "--dir", help="campaign directory to use"),
) -> None:
    """Run the demo on the embedded defaults (today: configuration and store only, and it says so)."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.exists():
        cfg_path.write_text(example_config_text(), encoding="utf-8")
    cfg = load_config(cfg_path)
    with Store.for_campaign_dir(directory, cfg.store.url) as store:
        campaign = store.ensure_campaign(cfg.campaign.name, seed=cfg.campaign.seed,
                                         config_yaml=cfg_path.read_text(encoding="utf-8"))
        revision = store.current_revision()
        tables = store.table_names()
    console.print(f"demo campaign {campaign.name!r} in {directory}: configuration valid, "
                  f"store at schema revision {revision} with {len(tables)} tables")
    console.print(
        "[yellow]The closed loop is not built yet:[/] this demo validated the configuration and "
        "created the campaign store; instruments, planning and learning arrive with their issues."
    )


def register(app: typer.Typer) -> None:
    for fn in (init, validate, run, status, demo):
        app.command(fn.__name__)(fn)


