"""The closed loop: choose targets, plan recipes, run experiments, analyse, learn, repeat.

Why this structure: every *decision* (a candidate pool, a model version, a target, a recipe,
an experiment, an analysis, a verdict) is a row committed before anything acts on it, and the
loop derives what to do next only from the store. A controller killed at any instant and
started again therefore re-derives the same next steps, re-attaches to whatever was on an
instrument (see ``recovery.py``) and continues: nothing is lost, nothing runs twice.

The heavy thinking (training, prediction, XRD fitting, recipe planning) runs in worker threads
so the event loop keeps instruments fed while the brain works.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, func, select

from ..config import CampaignConfig
from ..store import (
    Campaign,
    Candidate,
    Experiment,
    ExperimentState,
    Measurement,
    ModelVersion,
    PhaseAnalysisRow,
    Prediction,
    Recipe,
    Store,
    Target,
    TargetState,
    unpack_array,
    utcnow,
)
from . import control
from .brain import Brain, RecipeSpec
from .labtime import lab_days
from .recovery import reconcile
from .scheduler import INSTRUMENT_FAILURE, ExperimentRunner, Pool, StepPolicy
from .steps import STEP_ORDER

log = logging.getLogger(__name__)

RUNNABLE = {ExperimentState.QUEUED, ExperimentState.RUNNING, ExperimentState.UNKNOWN}
NOT_STARTED = {ExperimentState.PROPOSED, ExperimentState.APPROVED, ExperimentState.QUEUED}
OPEN_STATES = [s.value for s in (ExperimentState.PROPOSED, ExperimentState.APPROVED,
                                 ExperimentState.QUEUED, ExperimentState.RUNNING,
                                 ExperimentState.MEASURED, ExperimentState.ANALYSED,
                                 ExperimentState.UNKNOWN)]

STRATEGIES = ("full", "random_recipes", "no_active_learning", "random_targets")
# reason prefix of an experiment whose yield clears the threshold but whose lower bound does not
UNVERIFIED = "unverified"


@dataclass
class RunOptions:
    """Knobs of one run that are not part of the campaign file (benchmarks, tests, the CLI)."""

    strategy: str = "full"
    poll_s: float = 0.2
    max_wall_s: float | None = None
    requeue_instrument_failures: int = 1
    actor: str = "controller"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; one of {', '.join(STRATEGIES)}")


@dataclass
class RunSummary:
    campaign: str
    status: str
    stop_reason: str | None
    experiments: int
    targets_made: int
    targets_attempted: int
    model_versions: int
    lab_days: float
    wall_s: float
    counts: dict[str, int] = field(default_factory=dict)


def structure_hash(formula: str, structure: dict | None) -> str:
    text = json.dumps({"f": formula, "s": structure}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class CampaignRunner:
    """Runs (or resumes) one campaign against a transport of live drivers."""

    def __init__(
        self,
        cfg: CampaignConfig,
        store: Store,
        transport: Any,
        brain: Brain,
        *,
        options: RunOptions | None = None,
        on_update: Callable[[CampaignRunner], None] | None = None,
        config_yaml: str = "",
    ):
        self.cfg = cfg
        self.store = store
        self.transport = transport
        self.brain = brain
        self.options = options or RunOptions()
        self.on_update = on_update
        self.config_yaml = config_yaml
        self.campaign_id: int = 0
        self.pools: dict[str, Pool] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._model: Any = None
        self._model_version: int = 0
        self._train_task: asyncio.Task | None = None
        self._status = "running"
        self._errors: list[BaseException] = []
        self._pool_exhausted = False
        self._candidate_rows: list[Candidate] | None = None
        self.missing_drivers: list[str] = []

    # ================================================================== entry point
    async def run(self) -> RunSummary:
        started = time.monotonic()
        camp = self.store.ensure_campaign(self.cfg.campaign.name, seed=self.cfg.campaign.seed,
                                          config_yaml=self.config_yaml)
        self.campaign_id = camp.id
        if camp.status == "finished":
            return self.summary(time.monotonic() - started)
        if camp.status == "created":
            control.set_status(self.store, camp.name, "running", actor="controller",
                               reason=None)
        await self._setup_pools()
        with self.store.session() as s:
            self.store.log(s, "controller.started", campaign_id=self.campaign_id, actor="controller",
                           message=f"controller started (strategy {self.options.strategy})",
                           data={"capacities": {k: p.limit for k, p in self.pools.items()},
                                 "strategy": self.options.strategy,
                                 "drivers": sorted(d.identity for d in self.transport.drivers() if d.alive),
                                 "missing_drivers": self.missing_drivers})
        await reconcile(self.store, self.transport, self.campaign_id, missing_drivers=self.missing_drivers)
        await asyncio.to_thread(self._ensure_candidates)
        self.brain.pool_structures = {c.formula: c.structure for c in self._candidates() if c.structure}
        await self._ensure_model()
        runner = ExperimentRunner(
            self.store, self.transport, self.pools,
            StepPolicy(retries=self.cfg.lab.step_retries, speedup=self._speedup()),
            on_change=self._wake.set, before_send=self._hold_while_paused,
        )
        self._runner = runner
        try:
            await self._main_loop(started)
        finally:
            for task in self._tasks.values():
                task.cancel()
            if self._train_task is not None:
                self._train_task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._errors:
            raise self._errors[0]
        return self.summary(time.monotonic() - started)

    def _speedup(self) -> float:
        return self.cfg.lab.speedup if self.cfg.lab.kind == "simulated" else 1.0

    def _known_drivers(self) -> set[str]:
        """Every driver identity this campaign has worked with (started events + step rows)."""
        from ..store import Event, StepCommand

        with self.store.session() as s:
            names = {d for d in s.exec(select(StepCommand.driver).join(
                Experiment, Experiment.id == StepCommand.experiment_id).where(
                Experiment.campaign_id == self.campaign_id, StepCommand.driver.is_not(None))).all()}
            for ev in s.exec(select(Event).where(Event.campaign_id == self.campaign_id,
                                                 Event.kind == "controller.started")).all():
                names.update((ev.data or {}).get("drivers", []))
        return {n for n in names if n}

    async def _setup_pools(self) -> None:
        """Wait for every capability and for every driver the campaign used before.

        Why all previous drivers: a command SQL has in flight may sit in the ledger of one furnace;
        asking only the furnaces that reconnected first would call it unknown and send it to
        another furnace, which would fire it a second time.
        """
        await self.transport.wait_for(set(STEP_ORDER), timeout=60.0)
        expected = self._known_drivers()
        lab = self.cfg.lab
        deadline = time.monotonic() + max(15.0, 3 * lab.heartbeat_s * lab.lost_after_heartbeats + 5)
        while time.monotonic() < deadline:
            alive = {d.identity for d in self.transport.drivers() if d.alive}
            if expected <= alive:
                break
            await asyncio.sleep(0.05)
        alive = {d.identity for d in self.transport.drivers() if d.alive}
        self.missing_drivers = sorted(expected - alive)
        capacity = self._capacities()
        for step in STEP_ORDER:
            self.pools[step] = Pool(step, capacity.get(step, 1))

    def _capacities(self) -> dict[str, int]:
        capacity: dict[str, int] = {}
        for info in self.transport.drivers():
            if not getattr(info, "alive", True):
                continue
            for cap in info.capabilities:
                capacity[cap] = capacity.get(cap, 0) + int(info.capacity)
        return capacity

    async def _refresh_pools(self) -> None:
        capacity = self._capacities()
        for step, pool in self.pools.items():
            if capacity.get(step, 0) > 0 and capacity[step] != pool.limit:
                await pool.set_limit(capacity[step])

    async def _hold_while_paused(self, _step: Any) -> None:
        while self._status == "paused":
            await asyncio.sleep(self.options.poll_s)
            self._status = self._read_status()

    # ================================================================== main loop
    async def _main_loop(self, started: float) -> None:
        last_refresh = 0.0
        while True:
            self._status = self._read_status()
            if self.options.max_wall_s and time.monotonic() - started > self.options.max_wall_s:
                control.set_status(self.store, self.cfg.campaign.name, "stopping", actor="controller",
                                   reason=f"wall-clock limit {self.options.max_wall_s:.0f} s reached")
                self._status = "stopping"
            if self._status == "stopping":
                await self._drain_and_finish()
                return
            if time.monotonic() - last_refresh > 2.0:
                await self._refresh_pools()
                last_refresh = time.monotonic()
            if self._status != "paused":
                await self._decide()
                self._spawn()
            self._maybe_retrain()
            if self.on_update is not None:
                self.on_update(self)
            done, reason = self._finished()
            if done and not self._tasks and (self._train_task is None or self._train_task.done()):
                control.set_status(self.store, self.cfg.campaign.name, "finished", actor="controller",
                                   reason=reason)
                with self.store.session() as s:
                    self.store.log(s, "campaign.finished", campaign_id=self.campaign_id,
                                   actor="controller", message=reason)
                if self.on_update is not None:
                    self.on_update(self)
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.options.poll_s)
            except TimeoutError:
                pass

    def _read_status(self) -> str:
        with self.store.session() as s:
            return s.get(Campaign, self.campaign_id).status

    def _task_done(self, exp_id: int, task: asyncio.Task) -> None:
        self._tasks.pop(exp_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("experiment %s task failed: %r", exp_id, task.exception())
            self._errors.append(task.exception())
            control.set_status(self.store, self.cfg.campaign.name, "stopping", actor="controller",
                               reason=f"controller error on experiment {exp_id}: {task.exception()!r}")
        self._wake.set()

    def _spawn(self) -> None:
        """Start a task for every experiment that can move and has none."""
        with self.store.session() as s:
            rows = s.exec(
                select(Experiment.id, Experiment.state)
                .where(Experiment.campaign_id == self.campaign_id,
                       Experiment.state.in_([ExperimentState.APPROVED.value, ExperimentState.QUEUED.value,
                                             ExperimentState.RUNNING.value, ExperimentState.UNKNOWN.value,
                                             ExperimentState.MEASURED.value, ExperimentState.ANALYSED.value]))
                .order_by(Experiment.id)
            ).all()
        for exp_id, state in rows:
            if exp_id in self._tasks:
                continue
            if state == ExperimentState.APPROVED:
                self.store.transition(exp_id, ExperimentState.QUEUED, reason="waiting for instruments")
            task = asyncio.create_task(self._advance(exp_id), name=f"experiment-{exp_id}")
            self._tasks[exp_id] = task
            task.add_done_callback(lambda t, e=exp_id: self._task_done(e, t))

    async def _advance(self, exp_id: int) -> None:
        await self._runner.run(exp_id)
        with self.store.session() as s:
            state = s.get(Experiment, exp_id).state
        if state in (ExperimentState.MEASURED, ExperimentState.ANALYSED):
            await self._analyse(exp_id)

    # ================================================================== analysis & verdict
    async def _analyse(self, exp_id: int) -> None:
        with self.store.session() as s:
            exp = s.get(Experiment, exp_id)
            target = s.get(Target, exp.target_id)
            recipe = s.get(Recipe, exp.recipe_id)
            cand = s.get(Candidate, target.candidate_id) if target.candidate_id else None
            row = s.exec(select(PhaseAnalysisRow).where(PhaseAnalysisRow.experiment_id == exp_id)).first()
            meas = s.exec(select(Measurement).where(Measurement.experiment_id == exp_id)
                          .order_by(Measurement.id.desc())).first()
        if exp.state == ExperimentState.MEASURED:
            analysis = await asyncio.to_thread(
                self.brain.analyze,
                unpack_array(meas.two_theta), unpack_array(meas.intensities), meas.wavelength_angstrom,
                target.formula, cand.structure if cand else None,
                [p["formula"] for p in recipe.precursors or []],
            )
            with self.store.session() as s:
                row = PhaseAnalysisRow(
                    measurement_id=meas.id, experiment_id=exp_id, phases=analysis["phases"],
                    rwp=analysis.get("rwp"), target_yield=analysis["target_yield"],
                    method=analysis.get("method", "whole-pattern"),
                    method_version=str(analysis.get("method_version", "1")),
                    details=analysis.get("details"),
                )
                s.add(row)
                s.flush()
                self.store.transition(exp_id, ExperimentState.ANALYSED, session=s,
                                      reason=f"target yield {analysis['target_yield']:.2f}",
                                      target_yield=analysis["target_yield"],
                                      data={"phase_analysis_id": row.id})
                self._verdict(s, exp_id, analysis["target_yield"],
                              analysis.get("target_yield_lower", analysis["target_yield"]))
        elif exp.state == ExperimentState.ANALYSED:
            with self.store.session() as s:
                y = float(row.target_yield or 0.0)
                self._verdict(s, exp_id, y, _lower_bound(row))
        self._wake.set()

    def _verdict(self, s: Any, exp_id: int, target_yield: float, lower: float) -> None:
        """Succeeded only when the yield's lower bound clears the threshold (see brain.claimable_yield)."""
        threshold = self.cfg.recipes.yield_threshold
        exp = s.get(Experiment, exp_id)
        target = s.get(Target, exp.target_id)
        target.best_yield = max(target.best_yield or 0.0, target_yield)
        target.updated_at = utcnow()
        if lower >= threshold:
            self.store.transition(exp_id, ExperimentState.SUCCEEDED, session=s,
                                  reason=f"yield {target_yield:.2f} (lower bound {lower:.2f}) >= "
                                         f"threshold {threshold:.2f}")
            if target.state == TargetState.ACTIVE:
                self._target_state(s, target, TargetState.MADE,
                                   f"made by experiment {exp_id} (yield {target_yield:.2f})")
        elif target_yield >= threshold:
            self.store.transition(exp_id, ExperimentState.FAILED, session=s,
                                  reason=f"{UNVERIFIED}: yield {target_yield:.2f} but its lower bound "
                                         f"{lower:.2f} is below the threshold {threshold:.2f}")
        else:
            self.store.transition(exp_id, ExperimentState.FAILED, session=s,
                                  reason=f"yield {target_yield:.2f} below threshold {threshold:.2f}")
        s.add(target)

    def _target_state(self, s: Any, target: Target, state: TargetState, reason: str) -> None:
        previous = target.state
        target.state = state.value
        target.reason = reason
        target.updated_at = utcnow()
        s.add(target)
        self.store.log(s, "target.transition", campaign_id=self.campaign_id, entity="target",
                       entity_id=target.id, from_state=previous, to_state=state.value,
                       actor="controller", message=reason)

    # ================================================================== decisions
    def _experiments_used(self, s: Any) -> int:
        """Experiments that count against the budget: all but those withdrawn before starting."""
        return int(s.exec(select(func.count()).select_from(Experiment).where(
            Experiment.campaign_id == self.campaign_id,
            Experiment.state != ExperimentState.CANCELLED.value)).one())

    def _budget_left(self, s: Any) -> tuple[int, str | None]:
        budget = self.cfg.campaign.budget
        used = self._experiments_used(s)
        if used >= budget.max_experiments:
            return 0, f"budget reached: {used} experiments"
        if budget.max_lab_days is not None:
            days = lab_days(self.store, self.campaign_id, session=s)
            if days >= budget.max_lab_days:
                return 0, f"budget reached: {days:.1f} lab days"
        return budget.max_experiments - used, None

    async def _decide(self) -> None:
        """Give every active target its next experiment, retire finished targets, refill."""
        with self.store.session() as s:
            left, _ = self._budget_left(s)
            targets = s.exec(select(Target).where(Target.campaign_id == self.campaign_id,
                                                  Target.state == TargetState.ACTIVE.value)
                             .order_by(Target.id)).all()
        for target in targets:
            if left <= 0:
                break
            made = await self._next_for_target(target.id)
            left -= made
        await self._refill(left)

    async def _next_for_target(self, target_id: int) -> int:
        """Plan the target's next experiment (or retire it). Returns experiments created."""
        with self.store.session() as s:
            target = s.get(Target, target_id)
            exps = s.exec(select(Experiment).where(Experiment.target_id == target_id)
                          .order_by(Experiment.id)).all()
            if any(e.state in OPEN_STATES for e in exps):
                return 0
            recipes = s.exec(select(Recipe).where(Recipe.target_id == target_id)
                             .order_by(Recipe.id)).all()
        max_recipes = self.cfg.recipes.max_recipes_per_target
        if not recipes:
            specs = await asyncio.to_thread(self.brain.initial_recipes, target.formula,
                                            (target.predicted or {}).get("e_form"), self._history())
            with self.store.session() as s:
                target = s.get(Target, target_id)
                if isinstance(specs, str) or not specs:
                    self._target_state(s, target, TargetState.EXHAUSTED, specs if isinstance(specs, str)
                                       else "the planner found no recipe from the precursors on the shelf")
                    return 0
                for i, spec in enumerate(specs[:max_recipes], start=1):
                    s.add(self._recipe_row(target_id, spec, ordinal=i))
                self.store.log(s, "recipes.planned", campaign_id=self.campaign_id, entity="target",
                               entity_id=target_id, actor="controller",
                               message=f"{len(specs[:max_recipes])} initial recipe(s) for {target.formula}")
            return await self._next_for_target(target_id)

        repeat_ids = self._verification_repeats(exps)
        verdicts = [e for e in exps if e.state in (ExperimentState.SUCCEEDED, ExperimentState.FAILED)
                    and not (e.reason or "").startswith(INSTRUMENT_FAILURE) and e.id not in repeat_ids]
        last = exps[-1] if exps else None
        # 0. a yield above the threshold that the analysis cannot vouch for (its lower bound is
        # below): the same recipe on a new sample, which settles it without spending a recipe
        if last is not None and last.id in repeat_ids:
            return self._create_experiment(target_id, last.recipe_id, attempt=last.attempt + 1,
                                           why=f"repeat to verify experiment {last.id} ({last.reason})")
        # 1. an experiment the lab (not the chemistry) spoiled: same recipe again, once or twice
        if (last is not None and last.state == ExperimentState.FAILED
                and (last.reason or "").startswith(INSTRUMENT_FAILURE)
                and last.attempt <= self.options.requeue_instrument_failures):
            return self._create_experiment(target_id, last.recipe_id, attempt=last.attempt + 1,
                                           why=f"re-queued after an instrument failure: {last.reason}")
        if len(verdicts) >= max_recipes:
            with self.store.session() as s:
                self._target_state(s, s.get(Target, target_id), TargetState.EXHAUSTED,
                                   f"{len(verdicts)} recipes tried, none reached the yield threshold")
            return 0
        tried = {e.recipe_id for e in exps}
        # 2. a failed recipe is replaced by the active-learning planner (unless that is off)
        if (last is not None and last.state == ExperimentState.FAILED and last in verdicts
                and self.options.strategy != "no_active_learning"
                and not any(r.replaces_recipe_id == last.recipe_id for r in recipes)):
            failed = next(r for r in recipes if r.id == last.recipe_id)
            replacement = await asyncio.to_thread(
                self.brain.replace, self._spec_of(failed), self._observation(last.id), self._history())
            with self.store.session() as s:
                target = s.get(Target, target_id)
                if isinstance(replacement, str):
                    self._target_state(s, target, TargetState.EXHAUSTED, f"planner: {replacement}")
                    return 0
                same = next((r for r in recipes if r.id not in tried
                             and self._spec_of(r).key() == replacement.key()), None)
                if same is None:
                    row = self._recipe_row(target_id, replacement, ordinal=len(recipes) + 1,
                                           replaces=failed.id)
                    s.add(row)
                    s.flush()
                    recipe_id = row.id
                else:
                    recipe_id = same.id
            return self._create_experiment(target_id, recipe_id, attempt=1,
                                           why=f"replaces recipe {failed.id} (yield {last.target_yield or 0:.2f})")
        # 3. otherwise the next untried recipe in the planner's order
        # replacements first (newest first: the planner's latest word), then the initial order
        untried = sorted((r for r in recipes if r.id not in tried),
                         key=lambda r: (r.replaces_recipe_id is None, -r.id if r.replaces_recipe_id else r.ordinal))
        if not untried:
            with self.store.session() as s:
                self._target_state(s, s.get(Target, target_id), TargetState.EXHAUSTED,
                                   f"all {len(recipes)} planned recipes tried")
            return 0
        return self._create_experiment(target_id, untried[0].id, attempt=1, why="next planned recipe")

    def _verification_repeats(self, exps: list[Experiment]) -> set[int]:
        """Unverified experiments that earn a repeat (the first ``verify_repeats`` per recipe)."""
        allowed = self.cfg.analysis.verify_repeats
        seen: dict[int, int] = {}
        out: set[int] = set()
        for e in exps:
            if e.state == ExperimentState.FAILED and (e.reason or "").startswith(UNVERIFIED):
                n = seen.get(e.recipe_id, 0)
                if n < allowed:
                    out.add(e.id)
                seen[e.recipe_id] = n + 1
        return out

    def _create_experiment(self, target_id: int, recipe_id: int, *, attempt: int, why: str) -> int:
        """Write a proposed experiment (auto-approved unless approval mode is on)."""
        with self.store.session() as s:
            left, _ = self._budget_left(s)
            if left <= 0:
                return 0
            exp = Experiment(campaign_id=self.campaign_id, target_id=target_id, recipe_id=recipe_id,
                             sample_id=self._sample_id(s, target_id, recipe_id, attempt),
                             attempt=attempt)
            s.add(exp)
            s.flush()
            self.store.log(s, "experiment.proposed", campaign_id=self.campaign_id, entity="experiment",
                           entity_id=exp.id, to_state=ExperimentState.PROPOSED.value,
                           actor="controller", message=why,
                           data={"target_id": target_id, "recipe_id": recipe_id, "attempt": attempt})
            if not self.cfg.campaign.approval_mode:
                self.store.transition(exp.id, ExperimentState.APPROVED, session=s, actor="policy:auto",
                                      reason="approval mode off")
        self._wake.set()
        return 1

    def _sample_id(self, s: Session, target_id: int, recipe_id: int, attempt: int) -> str:
        """The crucible's label: campaign, target, recipe ordinal and attempt
        (``C1-LiMn2O4-R2-A1``), not a running count.

        Why: a label says on the crucible what is in it; and a simulated lab draws each
        sample's randomness (dosing error, amorphous share, XRD noise) from its id, so a count
        — which experiment was proposed first depends on which finished first — re-drew every
        later sample whenever two results arrived in another order. Keyed by what the
        experiment *is*, the same recipe attempt meets the same simulated chance in every run
        and under every strategy (common random numbers for comparing strategies). A label
        already taken (a hand-edited store) gets a ``-2``, ``-3`` suffix."""
        # both rows exist: the caller proposes an experiment of this target's recipe
        formula, ordinal = s.get(Target, target_id).formula, s.get(Recipe, recipe_id).ordinal
        base = f"C{self.campaign_id}-{formula}-R{ordinal}-A{attempt}"
        label, n = base, 1
        while s.exec(select(Experiment.id).where(Experiment.sample_id == label)).first() is not None:
            n += 1
            label = f"{base}-{n}"
        return label

    def _recipe_row(self, target_id: int, spec: RecipeSpec, *, ordinal: int,
                    replaces: int | None = None) -> Recipe:
        return Recipe(target_id=target_id, ordinal=ordinal, precursors=spec.precursors,
                      profile=spec.profile, atmosphere=spec.atmosphere, planner=spec.planner,
                      rationale=spec.rationale, driving_force_mev_per_atom=spec.driving_force_mev_per_atom,
                      predicted_yield=spec.predicted_yield, replaces_recipe_id=replaces,
                      details=spec.details)

    @staticmethod
    def _spec_of(row: Recipe) -> RecipeSpec:
        return RecipeSpec(target=row.details.get("target", "") if row.details else "",
                          precursors=list(row.precursors or []), profile=list(row.profile or []),
                          atmosphere=row.atmosphere, planner=row.planner, rationale=row.rationale,
                          driving_force_mev_per_atom=row.driving_force_mev_per_atom,
                          predicted_yield=row.predicted_yield, details=dict(row.details or {}))

    def _observation(self, exp_id: int) -> dict:
        with self.store.session() as s:
            exp = s.get(Experiment, exp_id)
            row = s.exec(select(PhaseAnalysisRow).where(PhaseAnalysisRow.experiment_id == exp_id)).first()
            recipe = s.get(Recipe, exp.recipe_id)
        phases = {p["formula"]: float(p["weight_fraction"]) for p in (row.phases if row else []) or []}
        y = float(exp.target_yield or 0.0)
        if (exp.reason or "").startswith(UNVERIFIED) and row is not None:
            y = _lower_bound(row)  # the planner replaces on what the analysis can vouch for
        return {"recipe": self._spec_of(recipe), "phases": phases, "target_yield": y}

    def _history(self) -> list[dict]:
        """Every analysed experiment of the campaign as an observation (the planner's memory)."""
        with self.store.session() as s:
            rows = s.exec(select(Experiment, PhaseAnalysisRow, Recipe)
                          .join(PhaseAnalysisRow, PhaseAnalysisRow.experiment_id == Experiment.id)
                          .join(Recipe, Recipe.id == Experiment.recipe_id)
                          .where(Experiment.campaign_id == self.campaign_id)
                          .order_by(Experiment.id)).all()
        return [{"recipe": self._spec_of(r),
                 "phases": {p["formula"]: float(p["weight_fraction"]) for p in (pa.phases or [])},
                 "target_yield": float(pa.target_yield or 0.0)} for _e, pa, r in rows]

    # ================================================================== targets
    def _desired_active(self) -> int:
        heat = self.pools["heat"].limit if self.pools else 1
        return max(self.cfg.acquisition.batch_size, heat + 1)

    async def _refill(self, left: int) -> None:
        """Choose new targets when fewer than the furnaces can keep busy are active."""
        if left <= 0 or self._model is None:
            return
        with self.store.session() as s:
            active = int(s.exec(select(func.count()).select_from(Target).where(
                Target.campaign_id == self.campaign_id, Target.state == TargetState.ACTIVE.value)).one())
            n_targets = int(s.exec(select(func.count()).select_from(Target).where(
                Target.campaign_id == self.campaign_id)).one())
            taken_rows = s.exec(select(Target.candidate_id, Target.state).where(
                Target.campaign_id == self.campaign_id)).all()
            taken = {cid for cid, _ in taken_rows}
            in_flight = {cid for cid, st in taken_rows if st == TargetState.ACTIVE.value}
        max_targets = self.cfg.campaign.budget.max_targets
        want = min(self._desired_active() - active, left)
        if max_targets is not None:
            want = min(want, max_targets - n_targets)
        if want <= 0:
            return
        cands = self._candidates()
        index_of = {c.id: i for i, c in enumerate(cands)}
        excluded = {index_of[c] for c in taken if c in index_of}  # never chosen twice
        pending = {index_of[c] for c in in_flight if c in index_of}  # being made: BoTorch X_pending
        if len(excluded) >= len(cands):
            return
        seed = int(self.cfg.campaign.seed) * 1000 + n_targets
        strategy = "random" if self.options.strategy == "random_targets" else None
        picks = await asyncio.to_thread(self.brain.select, self._model, cands, want, pending,
                                        excluded, seed, strategy)
        self._pool_exhausted = not picks and active == 0
        with self.store.session() as s:
            for pick in picks:
                cand = cands[pick.index]
                if cand.id in taken:
                    continue
                target = Target(campaign_id=self.campaign_id, candidate_id=cand.id, formula=cand.formula,
                                acquisition_value=float(pick.value), predicted=pick.predicted)
                s.add(target)
                s.flush()
                taken.add(cand.id)
                self.store.log(s, "target.created", campaign_id=self.campaign_id, entity="target",
                               entity_id=target.id, to_state=TargetState.ACTIVE.value,
                               actor="controller",
                               message=f"{cand.formula} chosen (acquisition {pick.value:.3g}, "
                                       f"model v{self._model_version})",
                               data={"candidate_id": cand.id, "predicted": pick.predicted})
        self._wake.set()

    # ================================================================== candidates & models
    def _candidates(self) -> list[Candidate]:
        """The pool in id order, read once: it is written once (``_ensure_candidates``) and never
        changes, and reading its structures' JSON on every refill cost seconds per campaign."""
        if self._candidate_rows is None:
            with self.store.session() as s:
                self._candidate_rows = list(s.exec(select(Candidate).where(
                    Candidate.campaign_id == self.campaign_id).order_by(Candidate.id)).all())
        return self._candidate_rows

    def _ensure_candidates(self) -> None:
        with self.store.session() as s:
            n = int(s.exec(select(func.count()).select_from(Candidate)
                           .where(Candidate.campaign_id == self.campaign_id)).one())
        if n:
            return
        t0 = time.monotonic()
        specs = self.brain.candidates()
        seconds = time.monotonic() - t0
        with self.store.session() as s:
            seen: set[str] = set()
            for spec in specs:
                h = structure_hash(spec.formula, spec.structure)
                if h in seen:
                    continue
                seen.add(h)
                s.add(Candidate(campaign_id=self.campaign_id, formula=spec.formula,
                                chemical_system=spec.chemical_system, structure=spec.structure,
                                structure_hash=h, source=spec.source, provenance=spec.provenance))
            self.store.log(s, "candidates.loaded", campaign_id=self.campaign_id, actor="controller",
                           message=f"{len(seen)} candidate(s) in the pool",
                           data={"seconds": round(seconds, 2),
                                 "sources": sorted({sp.source for sp in specs})})

    def _latest_version(self) -> ModelVersion | None:
        with self.store.session() as s:
            return s.exec(select(ModelVersion).where(ModelVersion.campaign_id == self.campaign_id,
                                                     ModelVersion.kind == "surrogate")
                          .order_by(ModelVersion.version.desc())).first()

    async def _ensure_model(self) -> None:
        latest = self._latest_version()
        if latest is not None and latest.checkpoint:
            self._model = await asyncio.to_thread(self.brain.load_model, latest.checkpoint)
            self._model_version = latest.version
            return
        await self._train()

    def _results(self) -> list[tuple[int, float]]:
        """(candidate id, best observed yield) per target with an XRD-verified result."""
        with self.store.session() as s:
            rows = s.exec(select(Target.candidate_id, func.max(Experiment.target_yield))
                          .join(Experiment, Experiment.target_id == Target.id)
                          .where(Target.campaign_id == self.campaign_id,
                                 Experiment.target_yield.is_not(None))
                          .group_by(Target.candidate_id)).all()
        return [(int(c), float(y)) for c, y in rows if c is not None]

    def _n_results(self) -> int:
        with self.store.session() as s:
            return int(s.exec(select(func.count()).select_from(Experiment).where(
                Experiment.campaign_id == self.campaign_id,
                Experiment.target_yield.is_not(None))).one())

    def _maybe_retrain(self) -> None:
        if self.options.strategy == "no_active_learning" or self._model is None:
            return
        if self._train_task is not None and not self._train_task.done():
            return
        latest = self._latest_version()
        since = self._n_results() - int((latest.metrics or {}).get("n_results", 0) if latest else 0)
        if since >= self.cfg.surrogate.retrain_every:
            self._train_task = asyncio.create_task(self._train(), name="retrain")
            self._train_task.add_done_callback(self._train_done)

    def _train_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._errors.append(task.exception())
            control.set_status(self.store, self.cfg.campaign.name, "stopping", actor="controller",
                               reason=f"model training failed: {task.exception()!r}")
        self._wake.set()

    async def _train(self) -> None:
        """Train a new model version on known phases + the campaign's XRD-verified yields."""
        cands = self._candidates()
        results = self._results()
        n_results = self._n_results()
        previous = self._model
        t0 = time.monotonic()
        trained = await asyncio.to_thread(self.brain.train, cands, results, previous,
                                          self.cfg.campaign.seed + self._model_version)
        trained.metrics["train_seconds"] = round(time.monotonic() - t0, 2)
        version = self._model_version + 1
        with self.store.session() as s:
            mv = ModelVersion(campaign_id=self.campaign_id, kind="surrogate", version=version,
                              n_train=trained.n_train,
                              metrics={**trained.metrics, "n_results": n_results},
                              checkpoint=trained.checkpoint)
            s.add(mv)
            s.flush()
            for i, cand in enumerate(cands):
                for objective, (mean, std) in trained.predictions.items():
                    s.add(Prediction(candidate_id=cand.id, model_version_id=mv.id, objective=objective,
                                     mean=float(mean[i]), std=None if std is None else float(std[i])))
            self.store.log(s, "model.trained", campaign_id=self.campaign_id, entity="modelversion",
                           entity_id=mv.id, actor="controller",
                           message=f"surrogate v{version} on {trained.n_train} examples "
                                   f"({len(results)} campaign results)", data=trained.metrics)
        self._model = trained.model
        self._model_version = version

    # ================================================================== stopping
    def _finished(self) -> tuple[bool, str]:
        with self.store.session() as s:
            open_exps = int(s.exec(select(func.count()).select_from(Experiment).where(
                Experiment.campaign_id == self.campaign_id, Experiment.state.in_(OPEN_STATES))).one())
            active = int(s.exec(select(func.count()).select_from(Target).where(
                Target.campaign_id == self.campaign_id, Target.state == TargetState.ACTIVE.value)).one())
            left, budget_reason = self._budget_left(s)
            n_targets = int(s.exec(select(func.count()).select_from(Target).where(
                Target.campaign_id == self.campaign_id)).one())
            n_cands = int(s.exec(select(func.count()).select_from(Candidate).where(
                Candidate.campaign_id == self.campaign_id)).one())
        if open_exps:
            return False, ""
        if budget_reason:
            return True, budget_reason
        max_targets = self.cfg.campaign.budget.max_targets
        if active == 0 and (n_targets >= n_cands or (max_targets is not None and n_targets >= max_targets)
                            or self._pool_exhausted):
            return True, f"all {n_targets} targets resolved"
        return False, ""

    async def _drain_and_finish(self) -> None:
        """User stop: withdraw unstarted experiments, let instruments finish, then close."""
        with self.store.session() as s:
            waiting = s.exec(select(Experiment).where(
                Experiment.campaign_id == self.campaign_id,
                Experiment.state.in_([st.value for st in (ExperimentState.PROPOSED,
                                                          ExperimentState.APPROVED)]))).all()
            for exp in waiting:
                self.store.transition(exp.id, ExperimentState.CANCELLED, session=s,
                                      reason="campaign stopped before it started")
        for exp_id, task in list(self._tasks.items()):
            with self.store.session() as s:
                state = s.get(Experiment, exp_id).state
            if state == ExperimentState.QUEUED and not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        with self.store.session() as s:
            for exp in s.exec(select(Experiment).where(
                    Experiment.campaign_id == self.campaign_id,
                    Experiment.state == ExperimentState.QUEUED.value)).all():
                self.store.transition(exp.id, ExperimentState.CANCELLED, session=s,
                                      reason="campaign stopped before it started")
            camp = s.get(Campaign, self.campaign_id)
            reason = camp.stop_reason or "stopped"
        control.set_status(self.store, self.cfg.campaign.name, "finished", actor="controller",
                           reason=reason)

    # ================================================================== reporting
    def summary(self, wall_s: float) -> RunSummary:
        with self.store.session() as s:
            camp = s.get(Campaign, self.campaign_id)
            made = int(s.exec(select(func.count()).select_from(Target).where(
                Target.campaign_id == self.campaign_id, Target.state == TargetState.MADE.value)).one())
            attempted = int(s.exec(select(func.count(func.distinct(Experiment.target_id))).where(
                Experiment.campaign_id == self.campaign_id,
                Experiment.state != ExperimentState.CANCELLED.value)).one())
            versions = int(s.exec(select(func.count()).select_from(ModelVersion).where(
                ModelVersion.campaign_id == self.campaign_id)).one())
            used = self._experiments_used(s)
            days = lab_days(self.store, self.campaign_id, session=s)
        return RunSummary(campaign=camp.name, status=camp.status, stop_reason=camp.stop_reason,
                          experiments=used, targets_made=made, targets_attempted=attempted,
                          model_versions=versions, lab_days=days, wall_s=wall_s,
                          counts=self.store.experiment_counts(self.campaign_id))


def _lower_bound(row: PhaseAnalysisRow) -> float:
    """The stored lower bound of an analysis' yield (older rows: the yield itself)."""
    y = float(row.target_yield or 0.0)
    return float((row.details or {}).get("target_yield_lower", y))
