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

from .output import fail as _fail

console = Console(soft_wrap=True)  # paths and formulas a user copies stay whole

driver_app = typer.Typer(help="Run and certify instrument drivers (ZeroMQ protocol).",
                         no_args_is_help=True)
keys_app = typer.Typer(help="CurveZMQ keys for authenticated controller/driver links.",
                       no_args_is_help=True)




@driver_app.command("serve")
def serve(
    targets: list[str] = typer.Argument(
        ..., help="MODULE:CLASS of a drivers.Driver subclass (or MODULE:CLASS=IDENTITY); "
        "several are served by this one process"),
    connect: str = typer.Option(..., "--connect", help="controller endpoint, e.g. tcp://host:5555"),
    identity: str | None = typer.Option(
        None, help="driver identity (default CLASS-HOSTNAME; with --instances the prefix)"),
    instances: int = typer.Option(1, help="instances of each target in this process"),
    ledger: Path | None = typer.Option(
        None, help="SQLite ledger (one driver: default ./IDENTITY.ledger.sqlite; several: the "
        "shared host ledger, default ./drivers-host.ledger.sqlite)"),
    heartbeat: float = typer.Option(1.0, help="heartbeat interval in seconds"),
    option: list[str] = typer.Option([], "--option", "-o", help="key=value for the class"),
    curve_keys: Path | None = typer.Option(None, help="key folder from `synthloop keys generate`"),
    curve_name: str = typer.Option("driver", help="this driver's key name in that folder"),
    socket_per_instance: bool = typer.Option(
        False, help="hosted: one connection per instance instead of one shared by all (for a "
        "controller older than the envelope of docs/protocol.md)"),
    log_level: str = typer.Option("INFO", help="logging level"),
) -> None:
    """Serve one driver, or several instances in one process, until Ctrl-C / SIGTERM
    (graceful: running commands drain)."""
    from drivers import CurveConfig, CurveError, Driver, TargetError, parse_options, serve_targets

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def announce(drivers: list[Driver]) -> None:
        for drv in drivers:
            console.print(f"driver {drv.identity} ({', '.join(drv.capabilities)}) → {connect}")

    try:
        opts = parse_options(option)
        opts.setdefault("heartbeat_s", heartbeat)
        curve = CurveConfig.client(curve_keys, curve_name) if curve_keys else None
        code = serve_targets(list(targets), connect, identity=identity, instances=instances,
                             ledger=ledger, options=opts, curve=curve, announce=announce,
                             share_connection=not socket_per_instance)
    except (TargetError, CurveError, ValueError) as exc:
        _fail(str(exc))
        return
    raise typer.Exit(code)


@driver_app.command("check")
def check(
    target: str = typer.Argument(..., help="MODULE:CLASS of a drivers.Driver subclass"),
    option: list[str] = typer.Option([], "--option", "-o", help="key=value for the class"),
    transport: str = typer.Option("ipc", help="ipc or tcp (loopback)"),
    bind: str | None = typer.Option(
        None, help="check a running driver that connects to this endpoint instead"),
    hosted: bool = typer.Option(
        False, "--hosted", help="serve it in a host process with a sibling instance"),
    heartbeat: float = typer.Option(0.2, help="heartbeat interval used by the kit"),
) -> None:
    """Run the conformance kit; exit code 0 only if every check passes."""
    from drivers import TargetError, check_driver, parse_options

    logging.basicConfig(level=logging.ERROR)
    try:
        report = check_driver(target, options=parse_options(option), transport=transport,
                              bind=bind, hosted=hosted, heartbeat_s=heartbeat)
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
    except OSError as exc:  # a folder that cannot be created (permissions, a file in the way)
        _fail(f"cannot write keys to {directory}: {exc.strerror or exc} ({exc.filename or directory})")
        return
    for path in written:
        console.print(str(path), highlight=False)
    console.print(
        f"controller: --curve-keys {directory} (allows the keys in {directory}/allowed); "
        f"drivers: copy public/controller.key and their private key", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(driver_app, name="driver")
    app.add_typer(keys_app, name="keys")
