"""The closed loop's orchestration: tasks, waking, pausing, draining.

Why only orchestration: what to do next is decided by ``policy.py`` (pure) and
``asktell.advance_target`` (the same step a script drives without a lab); every read and write
is ``records.py``. This module decides *when*: it keeps one task per experiment on the
instruments, runs the brain's slow work (training, prediction, XRD fitting, recipe planning)
in worker threads so the instruments stay fed, and wakes up on every change. Every decision is
a row committed before anything acts on it, so a controller killed at any instant and started
again re-derives the same next steps, re-attaches to whatever was on an instrument (see
``recovery.py``) and continues: nothing is lost, nothing runs twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import CampaignConfig
from ..store import ExperimentState, IllegalTransition, Store
from . import control
from .asktell import advance_target
from .brain import Brain
from .claims import ClaimLost, SharedClaims, SoloClaims, open_claims
from .policy import (
    Budget,
    Rules,
    budget_left,
    should_retrain,
    stop_reason,
    targets_wanted,
    verdict,
)
from .pool_records import PoolRecords
from .records import CampaignRecords
from .recovery import reconcile
from .scheduler import ExperimentRunner, Pool, StepPolicy
from .steps import STEP_ORDER
from .strategy import STRATEGIES, strategy

log = logging.getLogger(__name__)

__all__ = ["STRATEGIES", "CampaignRunner", "RunOptions", "RunSummary"]


@dataclass
class RunOptions:
    """Knobs of one run that are not part of the campaign file (benchmarks, tests, the CLI)."""

    strategy: str = "full"
    poll_s: float = 0.2
    max_wall_s: float | None = None
    requeue_instrument_failures: int = 1
    actor: str = "controller"
    # decide only between rounds: every open experiment finished, retrain due done first.
    # None = on for a simulated lab (a campaign is then a function of its seed), off for real
    # instruments (a furnace should not wait for another experiment's analysis)
    lockstep: bool | None = None

    def __post_init__(self) -> None:
        strategy(self.strategy)  # a ValueError naming the strategies that exist


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


class CampaignRunner:
    """Runs (or resumes) one campaign against a transport of live drivers."""

    wait_log_every_s = 10.0  # a line while waiting for the instruments, so a run is never silent

    def __init__(self, cfg: CampaignConfig, store: Store, transport: Any, brain: Brain, *,
                 options: RunOptions | None = None,
                 on_update: Callable[[CampaignRunner], None] | None = None,
                 config_yaml: str = ""):
        self.cfg = cfg
        self.store = store
        self.transport = transport
        self.brain = brain
        self.options = options or RunOptions()
        self.strategy = strategy(self.options.strategy)
        self.rules = Rules.from_config(cfg, active_learning=self.strategy.learns,
                                       requeue_instrument_failures=self.options.requeue_instrument_failures)
        b = cfg.campaign.budget
        self.budget = Budget(b.max_experiments, b.max_lab_days, b.max_targets)
        self.on_update = on_update
        self.config_yaml = config_yaml
        self.campaign_id = 0
        self.records: CampaignRecords | None = None
        self.pool_records: PoolRecords | None = None
        self.pools: dict[str, Pool] = {}
        self.missing_drivers: list[str] = []
        self._tasks: dict[int, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._model: Any = None
        self._model_version = 0
        self._train_task: asyncio.Task | None = None
        self._status = "running"
        self._errors: list[BaseException] = []
        self._pool_exhausted = False
        self.claims: SoloClaims | SharedClaims | None = None
        self._heartbeat_task: asyncio.Task | None = None
        self._guard: Callable[[Any, int], None] | None = None
        self.lockstep = (self.options.lockstep if self.options.lockstep is not None
                         else cfg.lab.kind == "simulated")

    async def run(self) -> RunSummary:
        started = time.monotonic()
        camp = self.store.ensure_campaign(self.cfg.campaign.name, seed=self.cfg.campaign.seed,
                                          config_yaml=self.config_yaml)
        self.campaign_id = camp.id
        self.records = CampaignRecords(self.store, camp.id,
                                       approval_mode=self.cfg.campaign.approval_mode)
        self.pool_records = PoolRecords(self.store, camp.id)
        if camp.status == "finished":
            return self.summary(time.monotonic() - started)
        # one controller, or one per lab (lab.id) on a PostgreSQL campaign: refused here, before
        # anything is sent, when another controller holds what this one would need
        self.claims = open_claims(self.store, camp.id, camp.name, self.cfg.lab, lockstep=self.lockstep)
        self.claims.acquire()
        try:
            await self._run_claimed(camp, started)
        finally:
            if self._heartbeat_task is not None:
                self._heartbeat_task.cancel()
            self.claims.close()
        if self._errors:
            raise self._errors[0]
        return self.summary(time.monotonic() - started)

    async def _run_claimed(self, camp: Any, started: float) -> None:
        rec = self.records
        # the instruments first: a run that gives up waiting for them leaves a new campaign
        # "created" (it never ran), not "running" with nothing running
        await self._setup_pools()
        if camp.status == "created":
            control.set_status(self.store, camp.name, "running", actor="controller", reason=None)
        capacities = {k: p.limit for k, p in self.pools.items()}
        self.claims.register(capacities)
        data = {"capacities": capacities, "strategy": self.strategy.name,
                "drivers": sorted(d.identity for d in self.transport.drivers() if d.alive),
                "missing_drivers": self.missing_drivers}
        lab = self.claims.lab_id
        if lab is not None:
            data["lab_id"] = lab
            self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="lab-heartbeat")
        rec.log("controller.started", f"controller started (strategy {self.strategy.name})"
                + (f" for lab {lab}" if lab else ""), data=data)
        await reconcile(self.store, self.transport, self.campaign_id, missing_drivers=self.missing_drivers,
                        lab_id=lab)
        # the pool and the first model are the campaign's, made once: by the first lab to get here.
        # Once both exist a joining lab only reads them: it does not queue for the lock, which a
        # free-running lab takes on every turn (seen: a lab starved of it for 88 s at start-up
        # while the other lab ran 16 experiments)
        while not self._pool_and_model_exist() and not self.claims.try_lock("decide"):
            await asyncio.sleep(self.options.poll_s)
        try:
            await asyncio.to_thread(self._ensure_candidates)
            self.brain.pool_structures = {c.formula: c.structure for c in self.pool_records.candidates()
                                          if c.structure}
            await self._ensure_model()
        finally:
            self.claims.unlock("decide")
        self._guard = self.claims.guard if self.claims.shared else None
        self._runner = ExperimentRunner(
            self.store, self.transport, self.pools,
            StepPolicy(retries=self.cfg.lab.step_retries, speedup=self._speedup()),
            on_change=self._wake.set, before_send=self._hold_while_paused,
            lab_id=lab, guard=self._guard)
        try:
            await self._main_loop(started)
        finally:
            for task in self._tasks.values():
                task.cancel()
            if self._train_task is not None:
                self._train_task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _pool_and_model_exist(self) -> bool:
        latest = self.pool_records.latest_model()
        return latest is not None and bool(latest.checkpoint) and self.pool_records.has_candidates()

    async def _heartbeat(self) -> None:
        """Several labs: renew this lab's lease and claims while the controller lives.

        Why a thread of its own: the loop's default executor runs the brain's slow work
        (fits, training, planning); a beat queued behind them arrived after the lease ran out
        (seen under load 15: another lab took this lab's measured experiments)."""
        from concurrent.futures import ThreadPoolExecutor

        period = max(0.2, self.cfg.lab.lease_s / 3.0)
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lab-heartbeat") as beat:
            while True:
                await asyncio.sleep(period)
                try:
                    await loop.run_in_executor(beat, self.claims.heartbeat)
                except Exception as exc:  # noqa: BLE001 - a missed beat is retried; the lease has slack
                    log.warning("lab heartbeat failed: %s", exc)

    def _speedup(self) -> float:
        return self.cfg.lab.speedup if self.cfg.lab.kind == "simulated" else 1.0

    async def _setup_pools(self) -> None:
        """Wait for every capability and for every driver the campaign used before.

        Why all previous drivers: a command SQL has in flight may sit in the ledger of one furnace;
        asking only the furnaces that reconnected first would call it unknown and send it to
        another furnace, which would fire it a second time.
        """
        await self._wait_for_instruments()
        expected = self.records.known_drivers()
        lab = self.cfg.lab
        deadline = time.monotonic() + max(15.0, 3 * lab.heartbeat_s * lab.lost_after_heartbeats + 5)
        while time.monotonic() < deadline:
            if expected <= {d.identity for d in self.transport.drivers() if d.alive}:
                break
            await asyncio.sleep(0.05)
        alive = {d.identity for d in self.transport.drivers() if d.alive}
        self.missing_drivers = sorted(expected - alive)
        capacity = self._capacities()
        for step in STEP_ORDER:
            self.pools[step] = Pool(step, capacity.get(step, 1))

    async def _wait_for_instruments(self) -> None:
        """Wait up to ``lab.driver_wait_s`` for live drivers covering every step, saying so.

        Why a log line every ~10 s: the run used to sit silent for a fixed minute and then give
        up. On timeout nothing has been sent or claimed, so the campaign is as it was (a new one
        stays "created"; an event records the give-up) and a later ``run`` waits again; the TimeoutError says so, and keeps
        the dispatcher's "no live driver" wording the CLI's hint keys on.
        """
        wait = float(self.cfg.lab.driver_wait_s)
        end = time.monotonic() + wait
        want = set(STEP_ORDER)
        while True:
            left = end - time.monotonic()
            try:
                await self.transport.wait_for(want, timeout=max(0.0, min(self.wait_log_every_s, left)))
                return
            except TimeoutError:
                pass
            alive = [d for d in self.transport.drivers() if getattr(d, "alive", True)]
            missing = sorted(want - {c for d in alive for c in d.capabilities})
            connected = sorted(d.identity for d in alive)
            left = end - time.monotonic()
            if left <= 0:
                if self.records is not None:
                    self.records.log("controller.no_instruments",
                                     f"gave up after {wait:g} s waiting for drivers for {missing}",
                                     data={"missing": missing, "connected": connected})
                raise TimeoutError(
                    f"no live driver for capabilities {missing} after {wait:g} s "
                    f"(lab.driver_wait_s; connected: {connected}); nothing was sent and the "
                    "campaign is resumable: run it again once the drivers are up")
            log.info("waiting for instrument drivers on %s: none yet for %s (connected: %s); "
                     "%.1f s left of lab.driver_wait_s", self.cfg.lab.bind, missing, connected, left)

    def _capacities(self) -> dict[str, int]:
        capacity: dict[str, int] = {}
        for info in self.transport.drivers():
            if getattr(info, "alive", True):
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
            self._status = self.records.status()

    def _stop(self, reason: str) -> None:
        control.set_status(self.store, self.cfg.campaign.name, "stopping", actor="controller",
                           reason=reason)

    async def _main_loop(self, started: float) -> None:
        last_refresh = 0.0
        while True:
            self._status = self.records.status()
            if self._status == "finished":  # another lab's controller finished the campaign
                return
            if self.options.max_wall_s and time.monotonic() - started > self.options.max_wall_s:
                self._stop(f"wall-clock limit {self.options.max_wall_s:.0f} s reached")
                self._status = "stopping"
            if self._status == "stopping":
                await self._drain_and_finish()
                return
            if time.monotonic() - last_refresh > 2.0:
                await self._refresh_pools()
                last_refresh = time.monotonic()
            if self._status != "paused":
                if not self.lockstep:
                    await self._decide_turn(barrier=False)
                elif not self._tasks and self._snapshot().open_experiments == 0:
                    await self._decide_turn(barrier=True)
                self._spawn()
            if not self.lockstep:
                self._maybe_retrain()
            if self.on_update is not None:
                self.on_update(self)
            reason = stop_reason(self._snapshot(), self.budget, pool_exhausted=self._pool_exhausted)
            if reason and not self._tasks and (self._train_task is None or self._train_task.done()) \
                    and self._finish(reason):
                if self.on_update is not None:
                    self.on_update(self)
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.options.poll_s)
            except TimeoutError:
                pass

    def _finish(self, reason: str) -> bool:
        """Mark the campaign finished. Several labs: only between decisions (under the decide
        lock), with the stop reason read again there, and once."""
        if not self.claims.try_lock("decide"):
            return False  # another lab is deciding: what it proposes may keep the campaign going
        try:
            if self.claims.shared:
                reason = stop_reason(self._snapshot(), self.budget, pool_exhausted=self._pool_exhausted)
                if not reason:
                    return False
                if self.records.status() == "finished":
                    return True
            control.set_status(self.store, self.cfg.campaign.name, "finished", actor="controller",
                               reason=reason)
            self.records.log("campaign.finished", reason)
            return True
        finally:
            self.claims.unlock("decide")

    async def _decide_turn(self, *, barrier: bool) -> None:
        """Decide (after the round's barrier in lockstep) when it is this controller's turn.

        Several labs: one controller decides at a time (an advisory lock); the first to reach a
        round's barrier retrains, if due, and decides; the others find the round decided and the
        model version recorded, and load that version before they next decide."""
        if not self.claims.try_lock("decide"):
            return
        try:
            if self.claims.shared:
                if barrier and self._snapshot().open_experiments:
                    return  # another lab decided this round while we waited
                if barrier:
                    self.claims.start_round()  # each lab takes its share of what follows
                await self._sync_model()
            if barrier:
                await self._round_barrier()
            await self._decide()
        finally:
            self.claims.unlock("decide")

    async def _sync_model(self) -> None:
        """Several labs: adopt a newer model version another lab's controller trained."""
        latest = self.pool_records.latest_model()
        if latest is not None and latest.version > self._model_version and latest.checkpoint:
            self._model = await asyncio.to_thread(self.brain.load_model, latest.checkpoint)
            self._model_version = latest.version

    def _snapshot(self) -> Any:
        return self.records.snapshot(with_lab_days=self.budget.max_lab_days is not None)

    def _budget_left(self) -> int:
        return budget_left(self._snapshot(), self.budget)[0]

    async def _decide(self) -> None:
        """Give every active target its next experiment (policy + planner), then refill.

        Several labs: the targets just chosen get their first experiment now, not a round later
        (one controller alone keeps the old order, so its campaigns keep their fingerprint)."""
        left = await self._advance_targets(self._budget_left())
        await self._refill(left)
        if self.claims.shared:
            await self._advance_targets(self._budget_left())

    async def _advance_targets(self, left: int) -> int:
        for target_id in self.records.active_target_ids():
            if left <= 0:
                break
            left -= await asyncio.to_thread(
                advance_target, self.records, target_id, self.brain.planner, self.rules,
                budget_left=self._budget_left())
            self._wake.set()
        return left

    def _spawn(self) -> None:
        """Start a task for every experiment that can move and has none (several labs: every
        experiment this lab holds, claiming new ones up to its furnace slots + 1)."""
        busy = (self.pools["heat"].limit + 1) if self.pools else 1
        for exp_id, state in self.claims.claim(self.records, limit_new=busy):
            if exp_id in self._tasks:
                continue
            if state == ExperimentState.APPROVED:
                self.records.queue(exp_id)
            task = asyncio.create_task(self._advance(exp_id), name=f"experiment-{exp_id}")
            self._tasks[exp_id] = task
            task.add_done_callback(lambda t, e=exp_id: self._task_done(e, t))

    def _task_done(self, exp_id: int, task: asyncio.Task) -> None:
        self._tasks.pop(exp_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("experiment %s task failed: %r", exp_id, task.exception())
            self._errors.append(task.exception())
            self._stop(f"controller error on experiment {exp_id}: {task.exception()!r}")
        self._wake.set()

    async def _advance(self, exp_id: int) -> None:
        try:
            await self._runner.run(exp_id)
            if self.records.experiment_state(exp_id) in (ExperimentState.MEASURED, ExperimentState.ANALYSED):
                await self.analyse(exp_id)
        except (ClaimLost, IllegalTransition) as exc:
            if not self.claims.shared:
                raise
            # another lab holds it now (our lease ran out, or it gave up on a silent lab): its turn
            log.warning("experiment %s left to the lab that holds it: %s", exp_id, exc)

    async def analyse(self, exp_id: int) -> None:
        """Analyse a measured experiment and judge it (from the stored analysis when resuming)."""
        got = self.records.analysis_input(exp_id)
        threshold = self.rules.yield_threshold
        if got.state == ExperimentState.MEASURED:
            assessed = await asyncio.to_thread(self.brain.analyze, got.pattern, got.target,
                                               got.target_structure, list(got.precursors))
            self.records.record_analysis(exp_id, assessed, verdict(
                assessed.target_yield, assessed.yield_lower, threshold,
                ambiguous=assessed.target_ambiguous), guard=self._guard)
        elif got.state == ExperimentState.ANALYSED:
            y = got.stored_yield or 0.0
            self.records.apply_verdict(exp_id, y, verdict(y, got.stored_lower or 0.0, threshold,
                                                          ambiguous=got.stored_ambiguous),
                                       guard=self._guard)
        self._wake.set()

    async def _refill(self, left: int) -> None:
        """Choose new targets when fewer than the furnaces can keep busy are active."""
        if left <= 0 or self._model is None:
            return
        snap = self._snapshot()
        slots = self.pools["heat"].limit if self.pools else 1
        batch = self.cfg.acquisition.batch_size
        # several labs: every sharing lab's furnaces, each with its own spare (one lab: its own)
        want = targets_wanted(snap, self.budget, left=left,
                              keep_active=self.claims.targets_in_work(batch, slots))
        if want <= 0:
            return
        cands = self.pool_records.candidates()
        taken, in_flight = self.records.targets_taken()
        index_of = {c.id: i for i, c in enumerate(cands)}
        excluded = {index_of[c] for c in taken if c in index_of}  # never chosen twice
        pending = {index_of[c] for c in in_flight if c in index_of}  # being made: X_pending
        if len(excluded) >= len(cands):
            return
        seed = int(self.cfg.campaign.seed) * 1000 + snap.n_targets
        picks = await asyncio.to_thread(self.brain.select, self._model, cands, want, pending,
                                        excluded, seed, self.strategy.acquisition)
        self._pool_exhausted = not picks and snap.active_targets == 0
        for pick in picks:
            cand = cands[pick.index]
            if cand.id not in taken:
                self.records.add_target(cand, value=pick.value, predicted=pick.predicted,
                                        model_version=self._model_version)
                taken.add(cand.id)
        self._wake.set()

    def _ensure_candidates(self) -> None:
        if self.pool_records.has_candidates():
            return
        t0 = time.monotonic()
        specs = self.brain.candidates()
        self.pool_records.add_candidates(specs, time.monotonic() - t0)

    async def _ensure_model(self) -> None:
        latest = self.pool_records.latest_model()
        if latest is not None and latest.checkpoint:
            self._model = await asyncio.to_thread(self.brain.load_model, latest.checkpoint)
            self._model_version = latest.version
            return
        await self._train()

    def _retrain_due(self) -> bool:
        latest = self.pool_records.latest_model()
        at_last = int((latest.metrics or {}).get("n_results", 0)) if latest else 0
        return should_retrain(self.pool_records.n_results(), at_last,
                              every=self.cfg.surrogate.retrain_every, learns=self.strategy.learns)

    def _maybe_retrain(self) -> None:
        """Free-running mode: retrain in the background while the instruments work."""
        if self._model is None or (self._train_task is not None and not self._train_task.done()):
            return
        if self._retrain_due():
            if not self.claims.try_lock("train"):
                return  # another lab's controller is training this version
            self._train_task = asyncio.create_task(self._train_once(), name="retrain")
            self._train_task.add_done_callback(self._train_done)

    async def _train_once(self) -> None:
        """Free-running retrain under the ``train`` lock (several labs: once per due version)."""
        try:
            if self.claims.shared:
                await self._sync_model()
                if not self._retrain_due():
                    return
            await self._train()
        finally:
            self.claims.unlock("train")

    async def _round_barrier(self) -> None:
        """Lockstep mode, between rounds: every result of the round is in, so a retrain that is
        due happens now, before the next decisions — which results a model has seen and when
        the planner sees them no longer depend on instrument or worker timing."""
        if self._model is not None and self._retrain_due():
            await self._train()

    def _train_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._errors.append(task.exception())
            self._stop(f"model training failed: {task.exception()!r}")
        self._wake.set()

    async def _train(self) -> None:
        """Train a new model version on known phases + the campaign's XRD-verified yields."""
        cands = self.pool_records.candidates()
        results = self.pool_records.results()
        n_results = self.pool_records.n_results()
        t0 = time.monotonic()
        trained = await asyncio.to_thread(self.brain.train, cands, results, self._model,
                                          self.cfg.campaign.seed + self._model_version)
        trained.metrics["train_seconds"] = round(time.monotonic() - t0, 2)
        version = self._model_version + 1
        self.pool_records.save_model(version=version, trained=trained, n_results=n_results,
                                n_campaign_results=len(results), cands=cands)
        self._model, self._model_version = trained.model, version

    async def _drain_and_finish(self) -> None:
        """User stop: withdraw unstarted experiments, let instruments finish, then close."""
        why = "campaign stopped before it started"
        if self.claims.shared:  # only what no other live lab holds
            self.claims.cancel_unstarted(why)
        else:
            self.records.cancel((ExperimentState.PROPOSED, ExperimentState.APPROVED), why)
        for exp_id, task in list(self._tasks.items()):
            if self.records.experiment_state(exp_id) == ExperimentState.QUEUED and not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self.claims.shared:
            self.claims.cancel_unstarted(why)
            while self.claims.other_labs_open():  # the other labs drain theirs
                await asyncio.sleep(self.options.poll_s)
        else:
            self.records.cancel((ExperimentState.QUEUED,), why)
        control.set_status(self.store, self.cfg.campaign.name, "finished", actor="controller",
                           reason=self.store.get_campaign(self.cfg.campaign.name).stop_reason or "stopped")

    def summary(self, wall_s: float) -> RunSummary:
        rec = self.records or CampaignRecords(self.store, self.campaign_id)
        camp, made, attempted, versions = rec.summary_counts()
        snap = rec.snapshot(with_lab_days=True)
        return RunSummary(campaign=camp.name, status=camp.status, stop_reason=camp.stop_reason,
                          experiments=snap.used, targets_made=made, targets_attempted=attempted,
                          model_versions=versions, lab_days=snap.lab_days or 0.0, wall_s=wall_s,
                          counts=self.store.experiment_counts(self.campaign_id))
