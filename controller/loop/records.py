"""Every read and write the closed loop makes to the store, as typed records.

Why one module: the loop's decisions (``policy.py``) see only typed records, and the
orchestrator (``campaign.py``) only schedules; the SQL between them lives here, so a row's
meaning (which experiments count against the budget, what a sample is labelled, how a recipe
row maps to a ``recipes.Recipe``) is defined once. Every write that is a decision commits
before anything acts on it, so a controller killed at any instant re-derives the same next
steps from the store alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlmodel import Session, func, select

import recipes

from ..store import (
    IN_FLIGHT,
    OPEN_STATES,
    Campaign,
    Candidate,
    Event,
    Experiment,
    ExperimentState,
    FailureKind,
    Measurement,
    ModelVersion,
    PhaseAnalysisRow,
    Recipe,
    StepCommand,
    Store,
    Target,
    TargetState,
    pack_array,
    unpack_array,
    utcnow,
)
from ..xrd import XrdPattern
from .history import PlannedRecipe, TargetHistory, Trial, observation
from .labtime import lab_days
from .policy import Snapshot, Verdict

if TYPE_CHECKING:  # the assessor loads the XRD worker pool; records only read its result
    from .assess import Assessed


def recipe_row(target_id: int, recipe: recipes.Recipe, *, ordinal: int,
               replaces: int | None = None) -> Recipe:
    """The store row of a planned ``recipes.Recipe`` (the value is kept whole in ``details``)."""
    d = recipe.to_dict()
    return Recipe(target_id=target_id, ordinal=ordinal, precursors=d["precursors"],
                  profile=d["profile"], atmosphere=recipe.atmosphere, planner=recipe.planner,
                  rationale=recipe.rationale,
                  driving_force_mev_per_atom=recipe.driving_force_mev_per_atom,
                  predicted_yield=recipe.predicted_yield, replaces_recipe_id=replaces,
                  details={**d["details"], "recipe": d})


def recipe_of(row: Recipe, target: str) -> recipes.Recipe:
    """The ``recipes.Recipe`` a row holds. The row's columns win over the stored value: a
    person may have edited the precursors' conditions before the experiment ran."""
    stored = dict((row.details or {}).get("recipe") or {})
    stored.update(target=stored.get("target") or target,
                  precursors=list(row.precursors or []), profile=list(row.profile or []),
                  atmosphere=row.atmosphere, planner=row.planner, rationale=row.rationale,
                  driving_force_mev_per_atom=row.driving_force_mev_per_atom or 0.0,
                  predicted_yield=row.predicted_yield)
    stored.setdefault("details", {k: v for k, v in (row.details or {}).items() if k != "recipe"})
    return recipes.Recipe.from_dict(stored)


def _latest_measurement(s: Session, exp_id: int) -> Measurement | None:
    """The pattern an experiment is judged on: its newest measurement."""
    return s.exec(select(Measurement).where(Measurement.experiment_id == exp_id)
                  .order_by(Measurement.id.desc())).first()


def _trial(exp: Experiment, row: PhaseAnalysisRow | None) -> Trial:
    phases = {p["formula"]: float(p["weight_fraction"]) for p in (row.phases or [])} if row else {}
    lower = (row.details or {}).get("target_yield_lower") if row is not None else None
    return Trial(id=exp.id, recipe_id=exp.recipe_id, attempt=exp.attempt,
                 state=ExperimentState(exp.state),
                 failure_kind=FailureKind(exp.failure_kind) if exp.failure_kind else None,
                 target_yield=exp.target_yield if exp.target_yield is not None
                 else (row.target_yield if row is not None else None),
                 yield_lower=None if lower is None else float(lower), phases=phases)


@dataclass(frozen=True)
class AnalysisInput:
    """What analysing one measured experiment needs (read in one transaction)."""

    experiment_id: int
    state: ExperimentState
    target: str
    target_structure: dict | None
    precursors: tuple[str, ...]
    pattern: XrdPattern | None  # only when the analysis is still to be done
    stored_yield: float | None  # an analysis already stored (resuming after a crash)
    stored_lower: float | None
    stored_ambiguous: bool = False


class CampaignRecords:
    """The store as the loop of one campaign reads and writes it."""

    def __init__(self, store: Store, campaign_id: int, *, approval_mode: bool = False):
        self.store = store
        self.campaign_id = campaign_id
        self.approval_mode = approval_mode

    # the campaign ------------------------------------------------------------
    def status(self) -> str:
        with self.store.session() as s:
            return s.get(Campaign, self.campaign_id).status

    def log(self, kind: str, message: str, **kw: Any) -> None:
        with self.store.session() as s:
            self.store.log(s, kind, campaign_id=self.campaign_id, actor="controller",
                           message=message, **kw)

    def known_drivers(self, lab_id: str | None = None) -> set[str]:
        """Every driver identity this campaign has worked with (started events + step rows);
        with ``lab_id`` (several labs on the campaign), only that lab's."""
        with self.store.session() as s:
            query = select(StepCommand.driver).join(
                Experiment, Experiment.id == StepCommand.experiment_id).where(
                Experiment.campaign_id == self.campaign_id, StepCommand.driver.is_not(None))
            if lab_id is not None:
                query = query.where(StepCommand.lab_id == lab_id)
            names = set(s.exec(query).all())
            for ev in s.exec(select(Event).where(Event.campaign_id == self.campaign_id,
                                                 Event.kind == "controller.started")).all():
                if lab_id is None or (ev.data or {}).get("lab_id") == lab_id:
                    names.update((ev.data or {}).get("drivers", []))
        return {n for n in names if n}

    def snapshot(self, *, with_lab_days: bool = False) -> Snapshot:
        """The counts stopping, refilling and the budget depend on, read in one transaction.
        Lab days are a replay of every step, so only computed when the budget has a day limit."""
        cid = self.campaign_id
        with self.store.session() as s:
            def count(model: Any, *where: Any) -> int:
                return int(s.exec(select(func.count()).select_from(model).where(*where)).one())

            return Snapshot(
                used=count(Experiment, Experiment.campaign_id == cid,
                           Experiment.state != ExperimentState.CANCELLED.value),
                open_experiments=count(Experiment, Experiment.campaign_id == cid,
                                       Experiment.state.in_([st.value for st in OPEN_STATES])),
                active_targets=count(Target, Target.campaign_id == cid,
                                     Target.state == TargetState.ACTIVE.value),
                n_targets=count(Target, Target.campaign_id == cid),
                n_candidates=count(Candidate, Candidate.campaign_id == cid),
                lab_days=lab_days(self.store, cid, session=s) if with_lab_days else None,
                made_targets=count(Target, Target.campaign_id == cid,
                                   Target.state == TargetState.MADE.value))

    # targets and their histories ---------------------------------------------
    def active_target_ids(self) -> list[int]:
        with self.store.session() as s:
            return list(s.exec(select(Target.id).where(
                Target.campaign_id == self.campaign_id, Target.state == TargetState.ACTIVE.value)
                .order_by(Target.id)).all())

    def target(self, target_id: int) -> TargetHistory:
        """One target with its recipes and experiments (the policy's input)."""
        with self.store.session() as s:
            t = s.get(Target, target_id)
            rows = s.exec(select(Recipe).where(Recipe.target_id == target_id).order_by(Recipe.id)).all()
            exps = s.exec(select(Experiment, PhaseAnalysisRow)
                          .join(PhaseAnalysisRow, PhaseAnalysisRow.experiment_id == Experiment.id,
                                isouter=True)
                          .where(Experiment.target_id == target_id).order_by(Experiment.id)).all()
            return TargetHistory(
                id=t.id, formula=t.formula, state=TargetState(t.state),
                predicted_e_form=(t.predicted or {}).get("e_form"),
                recipes=tuple(PlannedRecipe(r.id, r.ordinal, recipe_of(r, t.formula),
                                            r.replaces_recipe_id) for r in rows),
                trials=tuple(_trial(e, pa) for e, pa in exps))

    def observations(self) -> list[recipes.Observation]:
        """Every judged experiment of the campaign as the planner's memory, in id order."""
        with self.store.session() as s:
            rows = s.exec(select(Experiment, PhaseAnalysisRow, Recipe, Target)
                          .join(PhaseAnalysisRow, PhaseAnalysisRow.experiment_id == Experiment.id)
                          .join(Recipe, Recipe.id == Experiment.recipe_id)
                          .join(Target, Target.id == Experiment.target_id)
                          .where(Experiment.campaign_id == self.campaign_id)
                          .order_by(Experiment.id)).all()
            out = []
            for exp, pa, r, t in rows:
                trial = _trial(exp, pa)
                if trial.observed:
                    out.append(observation(recipe_of(r, t.formula), trial))
            return out

    def add_recipes(self, target_id: int, planned: Sequence[recipes.Recipe], *,
                    replaces: int | None = None) -> list[int]:
        with self.store.session() as s:
            n = int(s.exec(select(func.count()).select_from(Recipe)
                           .where(Recipe.target_id == target_id)).one())
            rows = [recipe_row(target_id, r, ordinal=n + i, replaces=replaces)
                    for i, r in enumerate(planned, start=1)]
            s.add_all(rows)
            s.flush()
            if replaces is None:
                self.store.log(s, "recipes.planned", campaign_id=self.campaign_id, entity="target",
                               entity_id=target_id, actor="controller",
                               message=f"{len(rows)} recipe(s) for {planned[0].target}")
            return [r.id for r in rows]

    def propose(self, target_id: int, recipe_id: int, *, attempt: int, why: str,
                budget_left: int | None = None) -> int:
        """Write a proposed experiment (auto-approved unless approval mode is on); 0 when the
        budget has run out since the caller looked."""
        with self.store.session() as s:
            if budget_left is not None and budget_left <= 0:
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
            if not self.approval_mode:
                self.store.transition(exp.id, ExperimentState.APPROVED, session=s, actor="policy:auto",
                                      reason="approval mode off")
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
        formula, ordinal = s.get(Target, target_id).formula, s.get(Recipe, recipe_id).ordinal
        base = f"C{self.campaign_id}-{formula}-R{ordinal}-A{attempt}"
        label, n = base, 1
        while s.exec(select(Experiment.id).where(Experiment.sample_id == label)).first() is not None:
            n += 1
            label = f"{base}-{n}"
        return label

    def retire(self, target_id: int, reason: str, state: TargetState = TargetState.EXHAUSTED) -> None:
        with self.store.session() as s:
            self._target_state(s, s.get(Target, target_id), state, reason)

    def _target_state(self, s: Session, target: Target, state: TargetState, reason: str) -> None:
        previous = target.state
        target.state, target.reason, target.updated_at = state.value, reason, utcnow()
        s.add(target)
        self.store.log(s, "target.transition", campaign_id=self.campaign_id, entity="target",
                       entity_id=target.id, from_state=previous, to_state=state.value,
                       actor="controller", message=reason)

    def targets_taken(self) -> tuple[set[int], set[int]]:
        """(candidate ids ever chosen, candidate ids of active targets)."""
        with self.store.session() as s:
            rows = s.exec(select(Target.candidate_id, Target.state).where(
                Target.campaign_id == self.campaign_id)).all()
        return ({c for c, _ in rows if c is not None},
                {c for c, st in rows if c is not None and st == TargetState.ACTIVE.value})

    def add_target(self, cand: Candidate, *, value: float, predicted: dict, model_version: int) -> None:
        with self.store.session() as s:
            target = Target(campaign_id=self.campaign_id, candidate_id=cand.id, formula=cand.formula,
                            acquisition_value=float(value), predicted=predicted)
            s.add(target)
            s.flush()
            self.store.log(s, "target.created", campaign_id=self.campaign_id, entity="target",
                           entity_id=target.id, to_state=TargetState.ACTIVE.value, actor="controller",
                           message=f"{cand.formula} chosen (acquisition {value:.3g}, "
                                   f"model v{model_version})",
                           data={"candidate_id": cand.id, "predicted": predicted})

    # experiments -------------------------------------------------------------
    def experiments_to_advance(self) -> list[tuple[int, ExperimentState]]:
        with self.store.session() as s:
            rows = s.exec(select(Experiment.id, Experiment.state).where(
                Experiment.campaign_id == self.campaign_id,
                Experiment.state.in_([st.value for st in IN_FLIGHT]))
                .order_by(Experiment.id)).all()
        return [(i, ExperimentState(st)) for i, st in rows]

    def experiment_state(self, exp_id: int) -> ExperimentState:
        with self.store.session() as s:
            return ExperimentState(s.get(Experiment, exp_id).state)

    def queue(self, exp_id: int) -> None:
        self.store.transition(exp_id, ExperimentState.QUEUED, reason="waiting for instruments")

    def cancel(self, states: Iterable[ExperimentState], reason: str) -> None:
        with self.store.session() as s:
            for exp in s.exec(select(Experiment).where(
                    Experiment.campaign_id == self.campaign_id,
                    Experiment.state.in_([st.value for st in states]))).all():
                self.store.transition(exp.id, ExperimentState.CANCELLED, session=s, reason=reason)

    def analysis_input(self, exp_id: int) -> AnalysisInput:
        with self.store.session() as s:
            exp = s.get(Experiment, exp_id)
            target = s.get(Target, exp.target_id)
            recipe = s.get(Recipe, exp.recipe_id)
            cand = s.get(Candidate, target.candidate_id) if target.candidate_id else None
            row = s.exec(select(PhaseAnalysisRow).where(PhaseAnalysisRow.experiment_id == exp_id)).first()
            meas = _latest_measurement(s, exp_id)
            measured = exp.state == ExperimentState.MEASURED and meas is not None
            pattern = None if not measured else XrdPattern(
                two_theta=unpack_array(meas.two_theta), intensities=unpack_array(meas.intensities),
                wavelength_angstrom=meas.wavelength_angstrom, source=f"measurement {meas.id}")
            return AnalysisInput(
                experiment_id=exp_id, state=ExperimentState(exp.state), target=target.formula,
                target_structure=cand.structure if cand else None,
                precursors=tuple(p["formula"] for p in recipe.precursors or []), pattern=pattern,
                stored_yield=None if row is None else float(row.target_yield or 0.0),
                stored_lower=None if row is None else float(
                    (row.details or {}).get("target_yield_lower", row.target_yield or 0.0)),
                stored_ambiguous=bool(row is not None and (row.details or {}).get("target_ambiguous")))

    def record_analysis(self, exp_id: int, assessed: Assessed, verdict: Verdict, *,
                        guard: Callable[[Session, int], None] | None = None) -> None:
        """The analysis row (the ``PhaseAnalysis`` serialised here, at the store's edge),
        ``analysed``, and the verdict, in one transaction. ``guard(session, exp_id)``: several
        labs — checked first in that transaction (the experiment still this lab's)."""
        a = assessed.analysis
        d = a.to_dict()
        details = {"unexplained_peaks": list(d.get("unexplained_peaks") or [])[:50],
                   "candidate_phases": list(assessed.candidate_phases),
                   "target_yield_crystalline": float(a.target_yield or 0.0),
                   **{k: v for k, v in d.items() if k != "phases" and _jsonable(v)},
                   "target_yield_lower": assessed.yield_lower,
                   "target_ambiguous": assessed.target_ambiguous}
        if a.curves:  # the fit, for the web app's plot
            details["curves"] = {k: _packed_curve(k, v) for k, v in a.curves.items()}
        with self.store.session() as s:
            if guard is not None:
                guard(s, exp_id)
            meas = _latest_measurement(s, exp_id)
            row = PhaseAnalysisRow(
                measurement_id=meas.id, experiment_id=exp_id,
                phases=[{"name": p.name, "formula": p.formula,
                         "weight_fraction": float(p.weight_fraction),
                         "std": float(p.weight_fraction_std or 0.0),
                         "peaks": [round(float(x), 3) for x in p.peaks]}
                        for p in a.phases],
                rwp=None if a.rwp is None else float(a.rwp), target_yield=assessed.target_yield,
                method="whole-pattern", method_version=str(d.get("analysis_version", 1)),
                details=details)
            s.add(row)
            s.flush()
            self.store.transition(exp_id, ExperimentState.ANALYSED, session=s,
                                  reason=f"target yield {assessed.target_yield:.2f}",
                                  target_yield=assessed.target_yield,
                                  data={"phase_analysis_id": row.id})
            self._apply_verdict(s, exp_id, assessed.target_yield, verdict)

    def apply_verdict(self, exp_id: int, target_yield: float, verdict: Verdict, *,
                      guard: Callable[[Session, int], None] | None = None) -> None:
        with self.store.session() as s:
            if guard is not None:
                guard(s, exp_id)
            self._apply_verdict(s, exp_id, target_yield, verdict)

    def _apply_verdict(self, s: Session, exp_id: int, target_yield: float, verdict: Verdict) -> None:
        exp = s.get(Experiment, exp_id)
        target = s.get(Target, exp.target_id)
        target.best_yield = max(target.best_yield or 0.0, target_yield)
        target.updated_at = utcnow()
        self.store.transition(exp_id, verdict.state, session=s, reason=verdict.reason,
                              failure_kind=verdict.failure_kind)
        if verdict.made and target.state == TargetState.ACTIVE:
            self._target_state(s, target, TargetState.MADE,
                               f"made by experiment {exp_id} (yield {target_yield:.2f})")
        s.add(target)

    def summary_counts(self) -> tuple[Campaign, int, int, int]:
        """(campaign row, targets made, targets attempted, model versions)."""
        cid = self.campaign_id
        with self.store.session() as s:
            camp = s.get(Campaign, cid)
            made = int(s.exec(select(func.count()).select_from(Target).where(
                Target.campaign_id == cid, Target.state == TargetState.MADE.value)).one())
            attempted = int(s.exec(select(func.count(func.distinct(Experiment.target_id))).where(
                Experiment.campaign_id == cid,
                Experiment.state != ExperimentState.CANCELLED.value)).one())
            versions = int(s.exec(select(func.count()).select_from(ModelVersion).where(
                ModelVersion.campaign_id == cid)).one())
        return camp, made, attempted, versions

    def fingerprint(self) -> str:
        """A hash of the campaign as run: every experiment in id order with its target,
        precursors, heating profile and outcome (state, failure kind, yield to 1e-4). Two runs
        with the same code, seed and world print the same fingerprint when the campaign is
        reproducible (the lockstep mode of a simulated lab)."""
        with self.store.session() as s:
            rows = s.exec(select(Experiment, Target.formula, Recipe)
                          .join(Target, Target.id == Experiment.target_id)
                          .join(Recipe, Recipe.id == Experiment.recipe_id)
                          .where(Experiment.campaign_id == self.campaign_id)
                          .order_by(Experiment.id)).all()
            items = [[formula, sorted(p["formula"] for p in r.precursors or []),
                      [[round(float(seg["setpoint_c"]), 1), round(float(seg["dwell_min"]), 1)]
                       for seg in r.profile or []],
                      e.state, e.failure_kind,
                      None if e.target_yield is None else round(float(e.target_yield), 4)]
                     for e, formula, r in rows]
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def _packed_curve(name: str, values: Any) -> str:
    """One fitted curve as base64 text of zlib float32 (``store.pack_array``). The measured axes
    stay exact; model curves keep 11 mantissa bits (5e-4 relative), which compresses them 2x
    and is far below the counting noise."""
    arr = np.asarray(values, dtype=np.float32)
    if name not in ("two_theta", "observed"):
        arr = (arr.view(np.uint32) & np.uint32(0xFFFFF000)).view(np.float32)
    return base64.b64encode(pack_array(arr)).decode("ascii")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
