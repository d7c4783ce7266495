"""The ``serve`` command: the monitoring web app of a campaign."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from .output import err_console


def serve(
    campaign_dir: Path = typer.Argument(..., help="campaign directory with campaign.yaml"),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port to listen on"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (0.0.0.0 exposes it to the network)"),
    read_only: bool = typer.Option(False, "--read-only", help="refuse every write action (approve, reject, edit)"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
) -> None:
    """Serve the campaign's web app: overview, proposal queue with approvals, results, models."""
    try:
        from ..config import ConfigError
        from ..web import serve as run_server
    except ImportError as exc:  # fastapi/uvicorn are the `web` extra
        # escaped: rich read "[web]" as a style tag and printed "pip install -e '.'"
        err_console.print(f"[bold red]error:[/] the web app needs the 'web' extra ({escape(str(exc))}); "
                          + escape("install with: pip install -e '.[web]'"), highlight=False)
        raise typer.Exit(2) from None
    try:
        run_server(campaign_dir, host=host, port=port, read_only=read_only, log_level=log_level)
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
