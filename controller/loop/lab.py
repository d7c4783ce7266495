"""Connecting a campaign to its instruments: the dispatcher and, for a simulated lab, sim_lab.

Why the lab can be "external": a real lab's drivers run on their own machines and outlive the
controller; so can a simulated lab's (``external=True``). Then a ``kill -9`` of the
controller leaves the instruments running with their ledgers, and the restarted controller
binds the same endpoint, the drivers reconnect, and recovery asks them what happened.
"""

from __future__ import annotations

import contextlib
import logging
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
                       duplicate_rate=f.duplicate_rate, delay_ms=f.delay_ms)


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

            sim = SimLab(world, seed=cfg.campaign.seed, speedup=cfg.lab.speedup,
                         faults=fault_config(cfg), workdir=campaign_dir / "lab")
            sim.start(dispatcher.endpoint, processes=True)
        yield LabHandle(dispatcher=dispatcher, world=world, sim=sim)
    finally:
        if sim is not None:
            try:
                sim.stop()
            except Exception as exc:  # noqa: BLE001 - cleanup must go on
                log.warning("stopping the simulated lab: %s", exc)
        await dispatcher.close()
