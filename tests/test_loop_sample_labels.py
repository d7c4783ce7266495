"""A crucible's label says what is in it (campaign, target, recipe ordinal, attempt) and stays
unique in the store. Real store, the loop's records (the ``book`` fixture of test_loop_claims:
one target, LiMn2O4, with recipe 1)."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlmodel import select

from controller.store import Experiment
from recipes import HeatingSegment, PrecursorAmount, Recipe

sys.path.insert(0, str(Path(__file__).parent))
from test_loop_claims import book  # noqa: E402,F401 - the fixture


def test_labels_name_target_recipe_and_attempt_and_never_collide(book) -> None:  # noqa: F811
    records, tid, r1 = book
    (r2,) = records.add_recipes(tid, [Recipe(
        target="LiMn2O4", precursors=(PrecursorAmount("LiOH", 1.0, 0.5),),
        profile=(HeatingSegment(5, 750, 240),))])
    assert records.propose(tid, r1, attempt=1, why="first") == 1
    assert records.propose(tid, r1, attempt=2, why="repeat") == 1
    assert records.propose(tid, r2, attempt=1, why="next recipe") == 1
    # the same recipe attempt proposed again (e.g. by hand): a suffix, not a clash
    assert records.propose(tid, r1, attempt=1, why="again") == 1
    # no budget left: nothing is written
    assert records.propose(tid, r2, attempt=2, why="over budget", budget_left=0) == 0
    with records.store.session() as s:
        labels = [e.sample_id for e in s.exec(select(Experiment).order_by(Experiment.id))]
    c = f"C{records.campaign_id}-LiMn2O4"
    assert labels == [f"{c}-R1-A1", f"{c}-R1-A2", f"{c}-R2-A1", f"{c}-R1-A1-2"]
