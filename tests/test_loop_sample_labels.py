"""A crucible's label says what is in it (campaign, target, recipe ordinal, attempt) and stays
unique in the store. Real store, real runner."""

from __future__ import annotations

from pathlib import Path

import yaml
from sqlmodel import select

from controller.config import example_config_text, parse_config
from controller.loop.campaign import CampaignRunner
from controller.store import Experiment, Recipe, Store, Target


def test_labels_name_target_recipe_and_attempt_and_never_collide(tmp_path: Path) -> None:
    cfg = parse_config(yaml.safe_load(example_config_text()), "test")
    with Store.for_campaign_dir(tmp_path) as store:
        camp = store.ensure_campaign(cfg.campaign.name, seed=0)
        runner = CampaignRunner(cfg, store, transport=None, brain=None)
        runner.campaign_id = camp.id
        with store.session() as s:
            t = Target(campaign_id=camp.id, formula="LiMn2O4")
            s.add(t)
            s.flush()
            recipes = [Recipe(target_id=t.id, ordinal=k) for k in (1, 2)]
            s.add_all(recipes)
            s.commit()
            tid, (r1, r2) = t.id, [r.id for r in recipes]
        assert runner._create_experiment(tid, r1, attempt=1, why="first") == 1
        assert runner._create_experiment(tid, r1, attempt=2, why="repeat") == 1
        assert runner._create_experiment(tid, r2, attempt=1, why="next recipe") == 1
        # the same recipe attempt proposed again (e.g. by hand): a suffix, not a clash
        assert runner._create_experiment(tid, r1, attempt=1, why="again") == 1
        with store.session() as s:
            labels = [e.sample_id for e in s.exec(select(Experiment).order_by(Experiment.id))]
    c = f"C{camp.id}-LiMn2O4"
    assert labels == [f"{c}-R1-A1", f"{c}-R1-A2", f"{c}-R2-A1", f"{c}-R1-A1-2"]
