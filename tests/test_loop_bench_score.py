"""Scoring a campaign against the simulated world's truth (``synthloop bench campaign``): the
share of makeable targets made counts only makeable ones, and a claim the truth contradicts is
a false claim.

The truth here is a small table standing in for the simulated lab's hidden state (the thing
under test is the arithmetic of ``score`` over a real store, not the lab's physics, which
tests/test_sim_lab_*.py cover)."""

from __future__ import annotations

from pathlib import Path

from controller.loop.bench import score
from controller.store import Experiment, ExperimentState, Recipe, Store, Target, TargetState


class _Truth:
    """What a ``sim_lab.LabTruth`` answers: per sample the true phase fractions."""

    def __init__(self, phases: dict[str, dict[str, float]], makeable: set[str]) -> None:
        self.phases = phases
        self.makeable = makeable

    def sample_phases(self, sample_id: str) -> dict[str, float]:
        return self.phases.get(sample_id, {})

    def was_made(self, formula: str) -> bool:
        return any(p.get(formula, 0.0) >= 0.5 for p in self.phases.values())

    def makeable_targets(self) -> set[str]:
        return set(self.makeable)

    def duplicate_executions(self) -> int:
        return 0


def test_made_of_makeable_counts_only_makeable_targets_and_false_claims(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    cid = store.ensure_campaign("score", seed=0).id
    assert cid is not None
    # A: makeable, made, claimed. B: made although the world's search called it unmakeable.
    # C: makeable, attempted, not made, but claimed (a false claim). D: makeable, never tried.
    rows = {"LiMn2O4": ("s-a", {"LiMn2O4": 0.8}, TargetState.MADE),
            "BaTiO3": ("s-b", {"BaTiO3": 0.7}, TargetState.ACTIVE),
            "CaTiO3": ("s-c", {"CaTiO3": 0.3, "CaO": 0.7}, TargetState.MADE)}
    with store.session() as s:
        for formula, (sample, _, state) in rows.items():
            t = Target(campaign_id=cid, formula=formula, state=state.value,
                       best_yield=0.62 if formula == "CaTiO3" else None)
            s.add(t)
            s.flush()
            r = Recipe(target_id=t.id, ordinal=1)
            s.add(r)
            s.flush()
            s.add(Experiment(campaign_id=cid, target_id=t.id, recipe_id=r.id, sample_id=sample,
                             state=ExperimentState.SUCCEEDED.value))
        s.add(Target(campaign_id=cid, formula="Li2MnO3"))
        s.commit()
    truth = _Truth({sample: phases for sample, phases, _ in rows.values()},
                   makeable={"LiMn2O4", "CaTiO3", "Li2MnO3"})

    out = score(store, cid, truth, threshold=0.5)

    assert out["targets_attempted"] == 3 and out["targets_made"] == 2
    assert out["targets_makeable"] == 3 and out["makeable_attempted"] == 2
    assert out["makeable_made"] == 1  # not 2: BaTiO3 is made but outside the makeable set
    assert out["made_beyond_makeable"] == ["BaTiO3"]
    assert out["targets_claimed"] == 2 and out["false_claims"] == 1
    assert out["false_claim_targets"] == [
        {"formula": "CaTiO3", "claimed_yield": 0.62, "true_fraction": 0.3}]
    assert out["experiments"] == 3 and out["experiments_per_made_target"] == 1.5
