"""SIGKILL the controller at 20 seeded random moments of a campaign, restarting it each time:
the instruments' ledger shows no command executed twice, and the store lost no experiment."""

from __future__ import annotations

import os
from pathlib import Path

from controller.loop.drill import run_drill

WORLD = os.environ.get("SYNTHLOOP_TEST_WORLD", "demo")  # a bundled world name or a world file


def test_sigkill_at_twelve_random_points_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    report = run_drill(tmp_path, world=WORLD, points=12, seed=11, budget=12, max_offset_s=1.5,
                       final_timeout_s=150)
    assert report.kills == 12, report.to_dict()
    assert report.finished
    assert report.duplicate_executions == 0, report.to_dict()
    assert report.lost_experiments == 0, report.to_dict()
    assert report.commands_not_in_store == 0, report.to_dict()
    assert report.open_experiments == 0, report.to_dict()
    assert report.executed_commands > 0  # the kills happened while the lab was working
