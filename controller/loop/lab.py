"""Connecting a campaign to its instruments: the dispatcher and, for a simulated lab, sim_lab.

Why the lab can be "external": a real lab's drivers run on their own machines and outlive the
controller; so can a simulated lab's (``external=True``). Then a ``kill -9`` of the
controller leaves the instruments running with their ledgers, and the restarted controller
binds the same endpoint, the drivers reconnect, and recovery asks them what happened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import CampaignConfig

log = logging.getLogger(__name__)


@dataclass
class LabHandle:
    dispatcher: Any
    world: Any | None
    sim: Any | None  # the SimLab when this process started it


def load_world_for(cfg: CampaignConfig, base_dir: Path | None = None) -> Any | None:
    """The simulated world named in the config (a bundled name or a path), or None for real drivers."""
    if cfg.lab.kind != "simulated" or not cfg.lab.world:
        return None
    from sim_lab import load_world

    ref = cfg.lab.world
    if base_dir is not None and not Path(ref).is_absolute() and (base_dir / ref).exists():
        ref = str(base_dir / ref)
    return load_world(ref)


def fault_config(cfg: CampaignConfig) -> Any | None:
    f = cfg.lab.faults
    if not any((f.instrument_error_rate, f.drop_rate, f.duplicate_rate, f.delay_ms)):
        return None
    from sim_lab import FaultConfig

    return FaultConfig(instrument_error_rate=f.instrument_error_rate, drop_rate=f.drop_rate,
                       duplicate_rate=f.duplicate_rate, delay_ms=f.delay_ms, seed=cfg.campaign.seed)


def stale_instruments(workdir: Path) -> list[int]:
    """PIDs of simulated instruments a previous (killed) controller left running for this lab.

    Why: ``kill -9`` of a controller that launched its simulated lab orphans the instrument
    processes; a restarted controller starts new ones with the same identities and ledgers, so
    the orphans must go first. Only processes whose command line is ``sim_lab.serve ...
    --workdir WORKDIR`` for exactly this campaign's lab are returned.
    """
    want = str(Path(workdir).resolve())
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if "sim_lab.serve" in args and "--workdir" in args:
            i = args.index("--workdir")
            if i + 1 < len(args) and str(Path(args[i + 1]).resolve()) == want and int(proc.name) != os.getpid():
                out.append(int(proc.name))
    return out


def reap_stale_instruments(workdir: Path) -> int:
    """SIGKILL orphaned instruments of this lab (their ledgers are durable; nothing is lost)."""
    pids = stale_instruments(workdir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            log.warning("stopped orphaned simulated instrument (pid %d) of %s", pid, workdir)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline and stale_instruments(workdir):
        time.sleep(0.05)
    return len(pids)


def curve_config(cfg: CampaignConfig, base_dir: Path) -> Any | None:
    if not cfg.lab.auth.enabled:
        return None
    from drivers import CurveConfig

    keys = Path(cfg.lab.auth.keys_dir or "")
    if not keys.is_absolute():
        keys = base_dir / keys
    return CurveConfig.for_controller(keys)


@contextlib.asynccontextmanager
async def open_lab(cfg: CampaignConfig, campaign_dir: Path, *, external: bool = False,
                   world: Any | None = None) -> AsyncIterator[LabHandle]:
    """Start the dispatcher (and the simulated instruments unless ``external``); always cleans up."""
    from drivers import Dispatcher

    dispatcher = Dispatcher(bind=cfg.lab.bind, heartbeat_s=cfg.lab.heartbeat_s,
                            lost_after=cfg.lab.lost_after_heartbeats,
                            curve=curve_config(cfg, campaign_dir))
    await dispatcher.start()
    sim = None
    try:
        if world is None:
            world = load_world_for(cfg, campaign_dir)
        if world is not None and not external:
            from sim_lab import SimLab

            reap_stale_instruments(campaign_dir / "lab")
            sim = SimLab(world, seed=cfg.campaign.seed, speedup=cfg.lab.speedup,
                         faults=fault_config(cfg), workdir=campaign_dir / "lab",
                         heartbeat_s=cfg.lab.heartbeat_s, lost_after=cfg.lab.lost_after_heartbeats)
            sim.start(dispatcher.endpoint, processes=True)
        yield LabHandle(dispatcher=dispatcher, world=world, sim=sim)
    finally:
        if sim is not None:
            try:
                sim.stop()
            except Exception as exc:  # noqa: BLE001 - cleanup must go on
                log.warning("stopping the simulated lab: %s", exc)
        await dispatcher.close()
