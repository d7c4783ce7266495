"""The store's record of a campaign's candidate pool and surrogate model versions.

Why apart from ``records.py``: the pool and the models change on their own clock (written
once; a version per retrain) and are read by acquisition and training, not by the decisions
about targets and experiments.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlmodel import func, select

import surrogates
from surrogates import chemical_system

from ..store import Candidate, Experiment, ModelVersion, Prediction, Store, Target


def structure_hash(formula: str, structure: dict | None) -> str:
    text = json.dumps({"f": formula, "s": structure}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class PoolRecords:
    """The candidate pool and model versions of one campaign in the store."""

    def __init__(self, store: Store, campaign_id: int):
        self.store = store
        self.campaign_id = campaign_id
        self._candidates: list[Candidate] | None = None

    # candidates and models ---------------------------------------------------
    def candidates(self) -> list[Candidate]:
        """The pool in id order, read once: it is written once and never changes, and reading
        its structures' JSON on every refill cost seconds per campaign."""
        if self._candidates is None:
            with self.store.session() as s:
                self._candidates = list(s.exec(select(Candidate).where(
                    Candidate.campaign_id == self.campaign_id).order_by(Candidate.id)).all())
        return self._candidates

    def has_candidates(self) -> bool:
        with self.store.session() as s:
            return s.exec(select(Candidate.id).where(
                Candidate.campaign_id == self.campaign_id)).first() is not None

    def add_candidates(self, specs: Sequence[surrogates.Candidate], seconds: float) -> int:
        """Store the pool once (duplicates of formula + structure dropped); the structures
        are serialised here, at the store's edge."""
        with self.store.session() as s:
            seen: set[str] = set()
            for spec in specs:
                structure = spec.structure.as_dict()
                h = structure_hash(spec.formula, structure)
                if h in seen:
                    continue
                seen.add(h)
                s.add(Candidate(campaign_id=self.campaign_id, formula=spec.formula,
                                chemical_system=chemical_system(spec.formula), structure=structure,
                                structure_hash=h, source=spec.source,
                                provenance=dict(spec.provenance)))
            self.store.log(s, "candidates.loaded", campaign_id=self.campaign_id, actor="controller",
                           message=f"{len(seen)} candidate(s) in the pool",
                           data={"seconds": round(seconds, 2),
                                 "sources": sorted({sp.source for sp in specs})})
        self._candidates = None
        return len(seen)

    def latest_model(self) -> ModelVersion | None:
        with self.store.session() as s:
            return s.exec(select(ModelVersion).where(ModelVersion.campaign_id == self.campaign_id,
                                                     ModelVersion.kind == "surrogate")
                          .order_by(ModelVersion.version.desc())).first()

    def results(self) -> list[tuple[int, float]]:
        """(candidate id, best observed yield) per target with an XRD-verified result."""
        with self.store.session() as s:
            rows = s.exec(select(Target.candidate_id, func.max(Experiment.target_yield))
                          .join(Experiment, Experiment.target_id == Target.id)
                          .where(Target.campaign_id == self.campaign_id,
                                 Experiment.target_yield.is_not(None))
                          .group_by(Target.candidate_id)).all()
        return [(int(c), float(y)) for c, y in rows if c is not None]

    def n_results(self) -> int:
        with self.store.session() as s:
            return int(s.exec(select(func.count()).select_from(Experiment).where(
                Experiment.campaign_id == self.campaign_id,
                Experiment.target_yield.is_not(None))).one())

    def save_model(self, *, version: int, trained: Any, n_results: int, n_campaign_results: int,
                   cands: Sequence[Candidate]) -> None:
        """A model version with its predictions for every candidate, in one transaction."""
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
                                   f"({n_campaign_results} campaign results)", data=trained.metrics)
