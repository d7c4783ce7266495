"""A crucible's label says what is in it (campaign, target, recipe ordinal, attempt) and stays
unique in the store. Real store, real runner (the ``runner`` fixture of test_loop_claims: one
target, LiMn2O4, with recipe 1)."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlmodel import select

from controller.loop.campaign import CampaignRunner
from controller.store import Experiment, Recipe

sys.path.insert(0, str(Path(__file__).parent))
from test_loop_claims import runner  # noqa: E402,F401 - the fixture


def test_labels_name_target_recipe_and_attempt_and_never_collide(runner: CampaignRunner,  # noqa: F811
                                                                 ) -> None:
    store, (tid, r1) = runner.store, runner.ids
    with store.session() as s:
        second = Recipe(target_id=tid, ordinal=2)
        s.add(second)
        s.commit()
        r2 = second.id
    assert runner._create_experiment(tid, r1, attempt=1, why="first") == 1
    assert runner._create_experiment(tid, r1, attempt=2, why="repeat") == 1
    assert runner._create_experiment(tid, r2, attempt=1, why="next recipe") == 1
    # the same recipe attempt proposed again (e.g. by hand): a suffix, not a clash
    assert runner._create_experiment(tid, r1, attempt=1, why="again") == 1
    with store.session() as s:
        labels = [e.sample_id for e in s.exec(select(Experiment).order_by(Experiment.id))]
    c = f"C{runner.campaign_id}-LiMn2O4"
    assert labels == [f"{c}-R1-A1", f"{c}-R1-A2", f"{c}-R2-A1", f"{c}-R1-A1-2"]
