"""A drivers lab with no driver connected: the run waits ``lab.driver_wait_s`` (was a hard
60 s), says every few seconds what it waits for, and on timeout leaves the campaign as it was —
a new one "created", not "running" with nothing running (user trial)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from controller.config import example_config_text, parse_config
from controller.loop.campaign import CampaignRunner
from controller.loop.runtime import run_async
from controller.store import Store
from controller.store.models import Campaign, Event


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drivers_campaign(tmp_path: Path, wait_s: float) -> Path:
    data = yaml.safe_load(example_config_text())
    data["lab"].update(kind="drivers", world=None, bind=f"tcp://127.0.0.1:{_free_port()}",
                       driver_wait_s=wait_s)
    data["analysis"]["workers"] = 0  # no XRD worker processes for a run that sends nothing
    (tmp_path / "campaign.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


def test_driver_wait_is_a_config_value_defaulting_to_a_minute() -> None:
    assert parse_config(yaml.safe_load(example_config_text())).lab.driver_wait_s == 60.0
    with pytest.raises(Exception, match="driver_wait_s"):
        parse_config({**yaml.safe_load(example_config_text()), "lab": {"driver_wait_s": 0}})


def test_no_drivers_times_out_saying_what_it_waited_for_and_leaves_the_campaign_created(
        tmp_path: Path, caplog, monkeypatch) -> None:
    camp = _drivers_campaign(tmp_path, wait_s=0.9)
    cfg = parse_config(yaml.safe_load((camp / "campaign.yaml").read_text()))
    monkeypatch.setattr(CampaignRunner, "wait_log_every_s", 0.3)
    with Store.for_campaign_dir(camp, cfg.store.url) as store:
        with caplog.at_level(logging.INFO, logger="controller.loop.campaign"), \
                pytest.raises(TimeoutError) as info:
            asyncio.run(run_async(cfg, camp, store))
        message = str(info.value)
        # the CLI's hint (driver serve --connect ...) keys on "no live driver"
        assert "no live driver" in message and "after 0.9 s" in message and "driver_wait_s" in message
        assert "run it again" in message
        waits = [r.getMessage() for r in caplog.records if "waiting for instrument drivers" in r.getMessage()]
        assert len(waits) >= 2 and all(cfg.lab.bind in w and "'heat'" in w for w in waits), waits
        with store.session() as s:
            row = s.exec(select(Campaign).where(Campaign.name == cfg.campaign.name)).one()
            assert row.status == "created", row.status  # was "running" with nothing running
            kinds = [e.kind for e in s.exec(select(Event).where(Event.campaign_id == row.id)).all()]
        assert "controller.no_instruments" in kinds and "controller.started" not in kinds
