"""The campaign's acquisition step on a real (tiny) ensemble over the demo world's candidates.

Public energies: compositions the Materials Project table has computed are ranked by that
energy. EHVI (``acquisition.strategy: qehvi``): the brain's selection step picks a batch
that respects what is measured and in flight — first on stability alone, then, once the yield head has
learned from campaign results, on the stability/yield front."""

from __future__ import annotations

import pytest

from controller.config import parse_config
from controller.loop.bench import bench_config
from controller.loop.brain import Brain
from controller.loop.public_world import PublicWorld
from surrogates import Candidate


@pytest.fixture(scope="module")
def brain_and_pool():
    from sim_lab import load_world

    world = load_world("demo")
    data = bench_config("demo", sorted(world.systems), seed=0, budget=10, strategy="full")
    data["surrogate"].update({"ensemble_size": 3, "hidden": 8, "layers": 1, "epochs": 4})
    data["acquisition"]["strategy"] = "qehvi"
    cfg = parse_config(data, "qehvi test config")
    brain = Brain(cfg, world=PublicWorld.from_world(world))
    # as the campaign's pool records hand them to the brain: structures serialised
    cands = [Candidate(c.id, c.formula, c.structure.as_dict(), c.source, c.provenance)
             for c in brain.candidates()]
    trained = brain.train(cands, [], None, seed=0)
    yield brain, cands, trained
    brain.close()


def test_a_campaign_step_selects_a_batch_with_qehvi(brain_and_pool) -> None:
    brain, cands, trained = brain_and_pool
    assert brain.cfg.acquisition.strategy == "qehvi"
    n = len(cands)
    assert n >= 4
    pending, excluded = {0}, {0, 1}
    picks = brain.select(trained.model, cands, 2, pending, excluded, seed=0)
    idx = [p.index for p in picks]
    assert len(idx) == 2 == len(set(idx)) and not set(idx) & excluded
    assert all(p.value >= 0 and "e_decomp" in p.predicted for p in picks)
    # the yield head fine-tuned on four campaign results: the second objective takes part
    results = [(cands[i].id, y) for i, y in zip(range(4), (0.9, 0.0, 0.6, 0.1), strict=False)]
    tuned = brain.train(cands, results, trained.model, seed=1)
    assert tuned.model.metrics.get("fine_tuned_on", 0) >= 4
    objectives = brain.surrogate._pareto_objectives(cands, yield_known=True)
    assert len(objectives) == 2
    picks = brain.select(tuned.model, cands, min(3, n - 4), set(), {0, 1, 2, 3}, seed=0)
    assert len(picks) == min(3, n - 4) and not {p.index for p in picks} & {0, 1, 2, 3}


def test_targets_with_a_public_energy_are_ranked_by_it_not_by_the_network(brain_and_pool) -> None:
    """A composition the Materials Project table has computed takes that formation energy in
    acquisition (every member alike: no model spread); the others keep the network's."""
    import numpy as np

    import surrogates

    brain, cands, trained = brain_and_pool
    kp = surrogates.known_phases()
    raw = trained.model.predict(brain.surrogate._structures(cands))
    table = brain.surrogate._with_public_energies(cands, raw)
    je = list(table.outputs).index("e_form")
    public = [i for i, c in enumerate(cands) if kp.formation_energy(c.formula) is not None]
    other = [i for i in range(len(cands)) if i not in public]
    assert public, "the demo pool should hold at least one MP composition"
    for i in public:
        assert np.allclose(table.values[:, i, je], kp.formation_energy(cands[i].formula))
    np.testing.assert_array_equal(table.values[:, other], raw.values[:, other])
    assert np.allclose(trained.predictions["e_form"][0][public],
                       [kp.formation_energy(cands[i].formula) for i in public])
