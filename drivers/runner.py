"""Load a driver class by ``MODULE:CLASS`` and serve it; the engine behind
``synthloop driver serve`` and ``python -m drivers serve`` (the latter starts fast: it imports
only this package, which is what tests and lab PCs without the full controller want).

One target and no ``--instances``: one driver, its own ledger file (as always). Several
targets (``MODULE:CLASS`` or ``MODULE:CLASS=IDENTITY``) or ``--instances N``: the instances run
in this one process (:class:`drivers.host.DriverHost`) over one shared host ledger — what a lab
PC controlling several instruments should run.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .faults import FaultConfig
from .host import DriverHost
from .sdk import Driver
from .security import CurveConfig


class TargetError(ValueError):
    """``MODULE:CLASS`` that cannot be loaded or is not a driver (names the problem)."""


def load_target(spec: str) -> Callable[..., Driver]:
    """Resolve ``package.module:ClassName`` to a Driver subclass (or a factory returning one)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TargetError(f"expected MODULE:CLASS (e.g. drivers.examples:ToyFurnace), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import module {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, type):
        if not issubclass(obj, Driver):
            raise TargetError(f"{spec} is a class but not a drivers.Driver subclass")
        return obj
    if callable(obj):
        return obj
    raise TargetError(f"{spec} is neither a Driver subclass nor a factory")


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings → dict; values parsed as JSON when possible (numbers, bools)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"option must be key=value with a Python identifier key, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def default_identity(target: Callable[..., Driver]) -> str:
    return f"{getattr(target, '__name__', 'driver').lower()}-{socket.gethostname()}"


def build_driver(
    target: Callable[..., Driver], identity: str, ledger: str | Path, options: dict[str, Any]
) -> Driver:
    """Instantiate; a TypeError from unknown options becomes a clear TargetError."""
    try:
        driver = target(identity, ledger, **options)
    except TypeError as exc:
        raise TargetError(f"cannot construct {getattr(target, '__name__', target)}: {exc}") from exc
    if not isinstance(driver, Driver):
        raise TargetError(f"factory returned {type(driver).__name__}, not a drivers.Driver")
    return driver


DEFAULT_HOST_LEDGER = "drivers-host.ledger.sqlite"


def host_identities(specs: list[str], instances: int, identity: str | None,
                    ) -> list[tuple[Callable[..., Driver], str]]:
    """(target, identity) per instance. ``MODULE:CLASS=IDENTITY`` names a target's identity;
    otherwise ``--identity`` (one target only) or CLASS-HOSTNAME. With ``instances`` > 1 each
    target gets IDENTITY-1 … IDENTITY-N. Raises TargetError for a bad spec."""
    if instances < 1:
        raise ValueError(f"--instances must be >= 1, got {instances}")
    if identity is not None and len(specs) > 1:
        raise ValueError("--identity names one driver; with several targets write "
                         "MODULE:CLASS=IDENTITY")
    out: list[tuple[Callable[..., Driver], str]] = []
    for spec in specs:
        target_spec, eq, ident = spec.partition("=")
        target = load_target(target_spec)
        base = (ident if eq else None) or identity or default_identity(target)
        names = [base] if instances == 1 else [f"{base}-{i + 1}" for i in range(instances)]
        out.extend((target, name) for name in names)
    return out


def serve_main(argv: list[str] | None = None) -> int:
    """``python -m drivers serve MODULE:CLASS [MODULE:CLASS[=ID] ...] --connect ENDPOINT [...]``
    (blocking)."""
    p = argparse.ArgumentParser(prog="python -m drivers serve")
    p.add_argument("targets", nargs="+", metavar="target",
                   help="MODULE:CLASS (or MODULE:CLASS=IDENTITY) of a drivers.Driver subclass; "
                   "several: served by one process")
    p.add_argument("--connect", required=True, help="controller ROUTER endpoint")
    p.add_argument("--identity", default=None, help="identity of the driver (with --instances: "
                   "prefix of IDENTITY-1..N)")
    p.add_argument("--instances", type=int, default=1,
                   help="instances of each target in this process (default 1)")
    p.add_argument("--ledger", default=None, help="SQLite ledger path (one driver: default "
                   f"./IDENTITY.ledger.sqlite; hosted: the shared file, default "
                   f"./{DEFAULT_HOST_LEDGER})")
    p.add_argument("--heartbeat", type=float, default=1.0)
    p.add_argument("--lost-after", type=int, default=5)
    p.add_argument("--option", action="append", default=[], help="key=value passed to the class")
    p.add_argument("--curve-keys", default=None, help="key folder (synthloop keys generate)")
    p.add_argument("--curve-name", default="driver")
    p.add_argument("--fault-seed", type=int, default=None,
                   help="turn on transport fault injection with this seed (instance i of a "
                   "host: seed + i)")
    p.add_argument("--fault-drop", type=float, default=0.0)
    p.add_argument("--fault-duplicate", type=float, default=0.0)
    p.add_argument("--fault-delay", type=float, default=0.0)
    p.add_argument("--socket-per-instance", action="store_true",
                   help="hosted: give every instance its own connection instead of sharing one "
                   "(for a controller older than the envelope of docs/protocol.md)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options = parse_options(args.option)
        options.setdefault("heartbeat_s", args.heartbeat)
        options.setdefault("lost_after", args.lost_after)
        if args.fault_seed is not None:
            options["faults"] = FaultConfig(seed=args.fault_seed, drop=args.fault_drop,
                                            duplicate=args.fault_duplicate, delay=args.fault_delay)
        curve = CurveConfig.client(args.curve_keys, args.curve_name) if args.curve_keys else None
        return serve_targets(args.targets, args.connect, identity=args.identity,
                             instances=args.instances, ledger=args.ledger, options=options,
                             curve=curve, share_connection=not args.socket_per_instance)
    except (TargetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def host_drivers(plan: list[tuple[Callable[..., Driver], str]],
                 options: dict[str, Any]) -> list[Driver]:
    """The driver instances of one host, each with its own ledger path (an old single-driver
    ledger found there is adopted into the shared one).

    A ``faults`` option gives instance *i* (0-based, in ``plan`` order) the seed ``seed + i``:
    with one shared seed every instance would drop, duplicate and delay the very same frames
    of its own stream in lock-step, which is not the independent transport faults a soak test
    means — and the run stays reproducible from the one ``--fault-seed``."""
    faults = options.get("faults")
    out = []
    for index, (target, ident) in enumerate(plan):
        opts = dict(options)
        if isinstance(faults, FaultConfig):
            opts["faults"] = dataclasses.replace(faults, seed=faults.seed + index)
        out.append(build_driver(target, ident, f"{ident}.ledger.sqlite", opts))
    return out


def serve_targets(specs: list[str], connect: str, *, identity: str | None = None,
                  instances: int = 1, ledger: str | Path | None = None,
                  options: dict[str, Any] | None = None, curve: CurveConfig | None = None,
                  announce: Callable[[list[Driver]], None] | None = None,
                  share_connection: bool = True) -> int:
    """Build and serve (blocking) what ``serve`` was asked for: one driver alone, or several
    instances in a host. Raises TargetError/ValueError before anything starts."""
    opts = dict(options or {})
    plan = host_identities(specs, instances, identity)
    if len(plan) == 1:
        target, ident = plan[0]
        driver = build_driver(target, ident, ledger or f"{ident}.ledger.sqlite", opts)
        if announce is not None:
            announce([driver])
        driver.run(connect, curve=curve)
        return 0
    # every instance keeps its own ledger path: an old single-driver ledger found there is
    # adopted into the shared one, so its finished ids are still answered, never re-run
    drivers = host_drivers(plan, opts)
    host = DriverHost(drivers, ledger=ledger or DEFAULT_HOST_LEDGER,
                      share_connection=share_connection)
    if announce is not None:
        announce(drivers)
    return host.run(connect, curve=curve)
