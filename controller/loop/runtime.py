"""Running a campaign directory: config + store + lab + brain + loop + live view + report.

This is what ``synthloop run`` and ``synthloop demo`` call. ``asyncio`` runs in the calling
thread; a ``kill -9`` at any moment leaves the store consistent and the next call resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import CampaignConfig, load_config
from ..store import Store
from .brain import Brain
from .campaign import CampaignRunner, RunOptions, RunSummary
from .lab import open_lab
from .public_world import PublicWorld
from .report import ReportFiles, write_report

log = logging.getLogger(__name__)

CONFIG_FILE = "campaign.yaml"


@dataclass
class CampaignResult:
    summary: RunSummary
    report: ReportFiles | None
    truth: dict[str, Any] | None = None


def with_lab_id(cfg: CampaignConfig, lab_id: str | None) -> CampaignConfig:
    """The config with ``lab.id`` set (validated as in the file: a bad id is a clear error)."""
    if not lab_id:
        return cfg
    from pydantic import ValidationError

    from ..config import ConfigError, LabSection

    try:
        lab = LabSection.model_validate({**cfg.lab.model_dump(), "id": lab_id})
    except ValidationError as exc:
        raise ConfigError(f"--lab-id {lab_id!r}: {exc.errors()[0]['msg']}") from None
    return cfg.model_copy(update={"lab": lab})


def _threads() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


async def run_async(
    cfg: CampaignConfig,
    campaign_dir: Path,
    store: Store,
    *,
    options: RunOptions | None = None,
    external_lab: bool = False,
    live: Any | None = None,
    config_yaml: str = "",
    score: Any | None = None,
) -> tuple[RunSummary, Any]:
    """Run to the end (or to a stop); ``score(runner, lab)`` is called before the lab stops.

    SIGTERM cancels the run cleanly: the simulated instruments this process started are stopped
    (not orphaned) and the store stays resumable, exactly as after a crash.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    async with open_lab(cfg, campaign_dir, external=external_lab) as lab:
        world = PublicWorld.from_world(lab.world) if lab.world is not None else None
        brain = Brain(cfg, world=world, strategy=(options or RunOptions()).strategy,
                      base_dir=campaign_dir)
        brain.analysis_pool.warm_up()  # XRD workers import while the surrogate pretrains
        try:
            runner = CampaignRunner(cfg, store, lab.dispatcher, brain, options=options,
                                    on_update=(live.update if live is not None else None),
                                    config_yaml=config_yaml)
            summary = await runner.run()
            scored = score(runner, lab) if score is not None else None
        finally:
            await asyncio.to_thread(brain.close)
    return summary, scored


def run_campaign(
    campaign_dir: str | Path,
    *,
    options: RunOptions | None = None,
    external_lab: bool = False,
    live: bool = True,
    report: bool = True,
    lab_id: str | None = None,
) -> CampaignResult:
    """Run or resume the campaign in ``campaign_dir`` and write its report when it finishes.

    ``lab_id`` (``--lab-id``) overrides the config's ``lab.id``: this controller is then one lab
    of several sharing the campaign's PostgreSQL store (``claims.py``)."""
    _threads()
    campaign_dir = Path(campaign_dir)
    cfg_path = campaign_dir / CONFIG_FILE if campaign_dir.is_dir() else campaign_dir
    campaign_dir = cfg_path.parent
    cfg = with_lab_id(load_config(cfg_path), lab_id)
    config_yaml = cfg_path.read_text(encoding="utf-8")
    with Store.for_campaign_dir(campaign_dir, cfg.store.url) as store:
        view = None
        if live:
            from .display import LiveView

            view = LiveView(store, cfg.campaign.budget.max_experiments)
        try:
            if view is not None:
                with view:
                    summary, _ = asyncio.run(run_async(cfg, campaign_dir, store, options=options,
                                                       external_lab=external_lab, live=view,
                                                       config_yaml=config_yaml))
            else:
                summary, _ = asyncio.run(run_async(cfg, campaign_dir, store, options=options,
                                                   external_lab=external_lab, config_yaml=config_yaml))
        except asyncio.CancelledError:
            raise SystemExit(f"campaign interrupted (SIGTERM); `synthloop run {campaign_dir}` resumes it") from None
        files = None
        if report and summary.status == "finished":
            files = write_report(store, cfg.campaign.name, campaign_dir / "report",
                                 threshold=cfg.recipes.yield_threshold,
                                 extra={"wall time of this run": f"{summary.wall_s:.1f} s"})
    return CampaignResult(summary=summary, report=files)
