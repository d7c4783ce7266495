"""`synthloop driver serve|check` and `synthloop keys generate`: run and certify instrument drivers.

Why thin: the engines live in the drivers package (``drivers.runner``, ``drivers.conformance``,
``drivers.generate_keys``) so a lab PC can run ``python -m drivers serve`` without the controller;
these commands give the same behaviour under the one ``synthloop`` entry point.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

driver_app = typer.Typer(help="Run and certify instrument drivers (ZeroMQ protocol).",
                         no_args_is_help=True)
keys_app = typer.Typer(help="CurveZMQ keys for authenticated controller/driver links.",
                       no_args_is_help=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@driver_app.command("serve")
def serve(
    target: str = typer.Argument(..., help="MODULE:CLASS of a drivers.Driver subclass"),
    connect: str = typer.Option(..., "--connect", help="controller endpoint, e.g. tcp://host:5555"),
    identity: str | None = typer.Option(None, help="driver identity (default CLASS-HOSTNAME)"),
    ledger: Path | None = typer.Option(None, help="SQLite ledger (default ./IDENTITY.ledger.sqlite)"),
    heartbeat: float = typer.Option(1.0, help="heartbeat interval in seconds"),
    option: list[str] = typer.Option([], "--option", "-o", help="key=value for the class"),
    curve_keys: Path | None = typer.Option(None, help="key folder from `synthloop keys generate`"),
    curve_name: str = typer.Option("driver", help="this driver's key name in that folder"),
    log_level: str = typer.Option("INFO", help="logging level"),
) -> None:
    """Serve one driver until Ctrl-C / SIGTERM (graceful: running commands drain)."""
    from drivers import (
        CurveConfig,
        CurveError,
        TargetError,
        build_driver,
        default_identity,
        load_target,
        parse_options,
    )

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cls = load_target(target)
        opts = parse_options(option)
        opts.setdefault("heartbeat_s", heartbeat)
        ident = identity or default_identity(cls)
        curve = CurveConfig.client(curve_keys, curve_name) if curve_keys else None
        drv = build_driver(cls, ident, ledger or Path(f"{ident}.ledger.sqlite"), opts)
    except (TargetError, CurveError, ValueError) as exc:
        _fail(str(exc))
        return
    console.print(f"driver {ident} ({', '.join(drv.capabilities)}) → {connect}")
    drv.run(connect, curve=curve)


@driver_app.command("check")
def check(
    target: str = typer.Argument(..., help="MODULE:CLASS of a drivers.Driver subclass"),
    option: list[str] = typer.Option([], "--option", "-o", help="key=value for the class"),
    transport: str = typer.Option("ipc", help="ipc or tcp (loopback)"),
    bind: str | None = typer.Option(
        None, help="check a running driver that connects to this endpoint instead"),
    heartbeat: float = typer.Option(0.2, help="heartbeat interval used by the kit"),
) -> None:
    """Run the conformance kit; exit code 0 only if every check passes."""
    from drivers import TargetError, check_driver, parse_options

    logging.basicConfig(level=logging.ERROR)
    try:
        report = check_driver(target, options=parse_options(option), transport=transport,
                              bind=bind, heartbeat_s=heartbeat)
    except (TargetError, ValueError) as exc:
        _fail(str(exc))
        return
    console.print(report.format(), highlight=False)
    raise typer.Exit(0 if report.passed else 1)


@keys_app.command("generate")
def generate(
    directory: Path = typer.Argument(..., help="folder for public/, private/ and allowed/"),
    name: list[str] = typer.Option(
        [], "--name", "-n", help="key pair names (default: controller and driver)"),
) -> None:
    """Create CurveZMQ key pairs; every non-controller key is allowed by default."""
    from drivers import CurveError, generate_keys

    try:
        written = generate_keys(directory, list(name) or None)
    except CurveError as exc:
        _fail(str(exc))
        return
    for path in written:
        console.print(str(path), highlight=False)
    console.print(
        f"controller: --curve-keys {directory} (allows the keys in {directory}/allowed); "
        f"drivers: copy public/controller.key and their private key", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(driver_app, name="driver")
    app.add_typer(keys_app, name="keys")
