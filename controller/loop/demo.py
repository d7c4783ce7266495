"""The bundled demo: a small, real campaign on the ``demo`` world, sized for ≤ 3 min on 2 cores.

Why its own config rather than the example file: the example is written for a person to edit
(a 5-member ensemble trained for 150 epochs); the demo must finish quickly on a laptop, so it
uses a smaller ensemble and budget — but every part is the real one.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from sqlmodel import select

from ..config import parse_config
from ..store import Experiment, ExperimentState, Recipe, Store, Target

MARKER = ".synthloop-demo"


class DemoError(RuntimeError):
    """The demo directory cannot be used (it holds something that is not a demo campaign)."""


def demo_config(systems: list[str]) -> dict:
    return {
        "campaign": {
            "name": "demo-campaign",
            "seed": 7,
            "approval_mode": False,
            "description": "synthloop demo: the bundled 'demo' world, simulated instruments",
            "budget": {"max_experiments": 36},
        },
        "chemical_space": {"systems": systems, "max_candidates": 400,
                           # the wish list of the world, structures by prototype decoration
                           "candidate_sources": [{"kind": "prototypes"}]},
        "surrogate": {"architecture": "cgcnn", "ensemble_size": 3, "hidden": 32, "layers": 2,
                      "epochs": 40, "retrain_every": 8},
        "acquisition": {"strategy": "qlogei", "batch_size": 4},
        "recipes": {"max_recipes_per_target": 5, "yield_threshold": 0.5},
        "lab": {"kind": "simulated", "world": "demo", "speedup": 200000.0, "step_retries": 2},
        "store": {"url": "sqlite:///campaign.db"},
    }


def prepare_demo(directory: Path) -> Path:
    """Write a fresh demo campaign into ``directory`` (replacing an earlier demo run there)."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not (directory / MARKER).exists():
        raise DemoError(f"{directory} exists and is not a demo campaign directory; "
                        "choose another --dir (the demo never overwrites other campaigns)")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("created by `synthloop demo`; safe to delete\n", encoding="utf-8")
    from sim_lab import load_world

    world = load_world("demo")
    data = demo_config(sorted(world.systems))
    parse_config(data, "demo config")  # the demo's own config must be valid
    path = directory / "campaign.yaml"
    path.write_text("# written by `synthloop demo`\n" + yaml.safe_dump(data, sort_keys=False),
                    encoding="utf-8")
    return path


# --------------------------------------------------------------------------- what the demo did


@dataclass(frozen=True)
class TriedRecipe:
    """One recipe of a target as the demo ran it: what it was, what it replaced, what it gave."""

    ordinal: int  # 1.. in the order the target's recipes first ran
    reaction: str
    peak_c: float | None
    replaces: int | None  # number of the failed recipe this one replaced (the planner's choice)
    yields: tuple[float, ...]
    succeeded: bool
    unconfirmed: bool = False  # a yield above the threshold the analysis could not confirm


@dataclass(frozen=True)
class TargetStory:
    formula: str
    state: str  # made | exhausted | active | ...
    recipes: tuple[TriedRecipe, ...]


@dataclass(frozen=True)
class DemoOutcome:
    """The demo campaign as its store records it — what the closing summary prints and what the
    demo test checks. Why from the store: the summary must be what ``synthloop status`` and the
    report see, not what this process happened to remember."""

    targets: tuple[TargetStory, ...]
    experiments: int
    stop_reason: str = ""
    made: tuple[str, ...] = field(default=())

    @property
    def replaced(self) -> int:
        """Recipes the planner proposed in place of a failed one."""
        return sum(r.replaces is not None for t in self.targets for r in t.recipes)

    @property
    def replaced_succeeded(self) -> int:
        """Of those, the ones that reached the target (the loop learning from a failure)."""
        return sum(r.replaces is not None and r.succeeded for t in self.targets for r in t.recipes)


def demo_outcome(store: Store, campaign_name: str) -> DemoOutcome:
    """Read the finished (or interrupted) demo campaign from its store."""
    from ..web.queries import reaction_text  # the same reaction text the web app shows

    campaign = store.get_campaign(campaign_name)
    with store.session() as s:
        targets = s.exec(select(Target).where(Target.campaign_id == campaign.id).order_by(Target.id)).all()
        exps = s.exec(select(Experiment).where(Experiment.campaign_id == campaign.id)
                      .order_by(Experiment.id)).all()
        ids = [t.id for t in targets]
        recipes = s.exec(select(Recipe).where(Recipe.target_id.in_(ids)).order_by(Recipe.id)).all() if ids else []
    by_recipe: dict[int, list[Experiment]] = {}
    for e in exps:
        by_recipe.setdefault(e.recipe_id, []).append(e)
    stories = []
    for t in targets:
        # numbered in the order they first ran (the planner's own ordinals count recipes it
        # planned but never needed, which reads as gaps)
        ran = sorted((r for r in recipes if r.target_id == t.id and r.id in by_recipe),
                     key=lambda r: by_recipe[r.id][0].id)
        number = {r.id: i for i, r in enumerate(ran, 1)}
        tried = []
        for r in ran:
            runs = by_recipe[r.id]
            peak = max((float(seg.get("setpoint_c") or 0.0) for seg in r.profile or []), default=None)
            tried.append(TriedRecipe(
                ordinal=number[r.id], reaction=reaction_text(r, t.formula), peak_c=peak,
                replaces=(number.get(r.replaces_recipe_id, 0) or None) if r.replaces_recipe_id else None,
                yields=tuple(e.target_yield for e in runs if e.target_yield is not None),
                succeeded=any(e.state == ExperimentState.SUCCEEDED for e in runs),
                unconfirmed=any(e.failure_kind == "unverified" for e in runs)))
        stories.append(TargetStory(t.formula, t.state, tuple(tried)))
    stop = next((e.message or "" for e in store.recent_events(campaign.id, limit=50)
                 if e.kind == "campaign.finished"), "")
    return DemoOutcome(targets=tuple(stories), experiments=len(exps), stop_reason=stop,
                       made=tuple(t.formula for t in targets if t.state == "made"))


def print_demo_summary(directory: Path, console: object) -> DemoOutcome:
    """Print the closing summary of the demo campaign in ``directory`` (from its store)."""
    from ..config import load_config
    from .display import print_demo_outcome

    directory = Path(directory)
    cfg = load_config(directory / "campaign.yaml")
    with Store.for_campaign_dir(directory, cfg.store.url) as store:
        outcome = demo_outcome(store, cfg.campaign.name)
    print_demo_outcome(console, outcome, directory)
    return outcome
