"""``synthloop bench campaign``: one whole campaign against a world, scored with the lab's truth.

Why the truth only here: the controller never sees it (it decides from its own XRD analysis);
the benchmark compares what the controller *claimed* with what the simulated world *knows*
happened in each sample, which is how false claims are counted.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlmodel import select

from surrogates import reduced_formula

from ..config import parse_config
from ..store import Experiment, ExperimentState, Store, Target, TargetState
from .campaign import RunOptions
from .records import CampaignRecords
from .runtime import _threads, run_async
from .strategy import STRATEGIES


def bench_config(world_ref: str, systems: list[str], *, seed: int, budget: int, strategy: str,
                 fast: bool = True, max_recipes: int = 5) -> dict:
    """The campaign a benchmark runs: the world's systems, a budget, a compact ensemble."""
    return {
        "campaign": {"name": f"bench-{strategy}-{seed}", "seed": seed, "budget": {"max_experiments": budget}},
        "chemical_space": {"systems": systems, "max_candidates": 2000,
                           "candidate_sources": [{"kind": "prototypes"}]},
        "surrogate": {"ensemble_size": 3 if fast else 5, "hidden": 32 if fast else 64,
                      "layers": 2 if fast else 3, "epochs": 40 if fast else 150, "retrain_every": 16},
        "acquisition": {"strategy": "qlogei", "batch_size": 6},
        "recipes": {"max_recipes_per_target": max_recipes, "yield_threshold": 0.5},
        "lab": {"kind": "simulated", "world": world_ref, "speedup": 1e7, "step_retries": 2,
                "heartbeat_s": 0.5},
        "store": {"url": "sqlite:///campaign.db"},
    }


def score(store: Store, campaign_id: int, truth: Any, threshold: float) -> dict[str, Any]:
    """Compare the controller's claims with the simulated world's truth."""
    with store.session() as s:
        targets = s.exec(select(Target).where(Target.campaign_id == campaign_id)).all()
        exps = s.exec(select(Experiment).where(Experiment.campaign_id == campaign_id,
                                               Experiment.state != ExperimentState.CANCELLED.value)).all()
    attempted = {t.id: t for t in targets if any(e.target_id == t.id for e in exps)}
    made_truth = {reduced_formula(t.formula) for t in attempted.values() if truth.was_made(t.formula)}
    claimed = [t for t in attempted.values() if t.state == TargetState.MADE]
    false_claims: list[dict[str, Any]] = []
    for t in claimed:
        winners = [e for e in exps if e.target_id == t.id and e.state == ExperimentState.SUCCEEDED]
        true_fraction = max((truth.sample_phases(e.sample_id).get(t.formula, 0.0) for e in winners),
                            default=0.0)
        if true_fraction < threshold:
            # which target, what the controller measured, what the sample truly held: what a
            # reader needs to tell an analysis error from a threshold case
            false_claims.append({"formula": t.formula, "claimed_yield": t.best_yield,
                                 "true_fraction": round(true_fraction, 4)})
    makeable = {reduced_formula(f) for f in truth.makeable_targets()}
    n_made = len(made_truth)
    return {
        "targets_attempted": len(attempted),
        "targets_made": n_made,
        "targets_makeable": len(makeable),
        # the "made of makeable" share counts only the makeable ones: a campaign can also make
        # a target the world builder's recipe search called unmakeable (or a formula outside
        # the world's target list), which must not lift that share above what it is
        "makeable_attempted": len({reduced_formula(t.formula) for t in attempted.values()} & makeable),
        "makeable_made": len(made_truth & makeable),
        "made_beyond_makeable": sorted(made_truth - makeable),
        "targets_claimed": len(claimed),
        "false_claims": len(false_claims),
        "false_claim_targets": false_claims,
        "experiments": len(exps),
        "experiments_per_made_target": (len(exps) / n_made) if n_made else None,
        "duplicate_executions": int(truth.duplicate_executions()),
        "campaign_fingerprint": CampaignRecords(store, campaign_id).fingerprint(),
    }


def quiet_stdout():  # noqa: ANN201 - context manager
    """Send fd 1 to stderr meanwhile (child processes too), so stdout carries only the JSON."""
    import contextlib
    import os
    import sys

    @contextlib.contextmanager
    def _cm():
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)

    return _cm()


def run_bench(world: str, strategy: str, seed: int, *, budget: int | None = None,
              workdir: Path | None = None, fast: bool = True, max_recipes: int = 5,
              lockstep: bool = True) -> dict[str, Any]:
    """Run one benchmark campaign in a temporary directory and return its scores.

    ``max_recipes``: recipes tried per target before it is given up (5, as the A-Lab planned).
    ``lockstep``: decide in rounds (the same seed gives the same campaign); False decides as
    results arrive, as a controller on real instruments does.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    _threads()
    from sim_lab import load_world

    ref = str(Path(world).resolve()) if Path(world).exists() else world
    w = load_world(ref)
    budget = budget or 355
    data = bench_config(ref, sorted(w.systems), seed=seed, budget=budget, strategy=strategy, fast=fast,
                        max_recipes=max_recipes)
    cfg = parse_config(data, f"bench config ({world})")
    with tempfile.TemporaryDirectory(prefix="synthloop-bench-") as tmp:
        cdir = Path(workdir) if workdir else Path(tmp)
        cdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with Store.for_campaign_dir(cdir, cfg.store.url) as store:

            def scorer(runner: Any, lab: Any) -> dict[str, Any]:
                return score(store, runner.campaign_id, lab.sim.truth(), cfg.recipes.yield_threshold)

            summary, scores = asyncio.run(run_async(cfg, cdir, store, options=RunOptions(strategy=strategy, lockstep=lockstep),
                                                    score=scorer))
    return {"world": world, "strategy": strategy, "seed": seed, "budget": budget,
            "max_recipes_per_target": max_recipes, **scores,
            "lab_days": round(summary.lab_days, 3), "wall_s": round(time.monotonic() - started, 2),
            "model_versions": summary.model_versions, "stop_reason": summary.stop_reason,
            "lockstep": lockstep}
