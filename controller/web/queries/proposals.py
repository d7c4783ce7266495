"""Proposals awaiting a researcher: each candidate with its newest predictions and a plain-words
judgement of the acquisition value, so approving is a decision on numbers the page explains.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from sqlalchemy import and_, func
from sqlmodel import Session, select

from ...config import CampaignConfig
from ...store import (
    Campaign,
    Experiment,
    ExperimentState,
    ModelVersion,
    Prediction,
    Recipe,
    Target,
    iso,
)
from .rows import MAX_LIST, experiment_dict, finite, recipe_dict


def latest_predictions(session: Session, candidate_ids: list[int]) -> dict[int, dict[str, dict]]:
    """Per candidate, the newest model version's prediction for each objective."""
    if not candidate_ids:
        return {}
    rows = session.exec(
        select(Prediction.candidate_id, Prediction.objective, Prediction.mean, Prediction.std,
               ModelVersion.version, ModelVersion.kind)
        .join(ModelVersion, ModelVersion.id == Prediction.model_version_id)
        .where(Prediction.candidate_id.in_(candidate_ids))
        .order_by(ModelVersion.version)
    ).all()
    out: dict[int, dict[str, dict]] = defaultdict(dict)
    for cand, objective, mean, std, version, kind in rows:  # ascending: newest version wins
        out[cand][objective] = {"mean": finite(mean), "std": finite(std), "model_version": version, "model_kind": kind}
    return out


def target_dict(target: Target, predictions: dict[str, dict] | None = None) -> dict[str, Any]:
    predicted = target.predicted or {}
    return {
        "id": target.id,
        "formula": target.formula,
        "candidate_id": target.candidate_id,
        "state": target.state,
        "reason": target.reason,
        "acquisition_value": finite(target.acquisition_value),
        "predicted": predicted,
        "predictions": predictions or {},
        "best_yield": finite(target.best_yield),
        "created_at": iso(target.created_at),
    }


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


ACQUISITION_MEANING = {
    "qlogei": "log of the expected improvement (qLogEI) of the objective over the best result so far: "
              "higher is better, each unit is a factor e; very negative = little expected gain",
    "qucb": "upper confidence bound (qUCB) of the objective: mean + √β·σ; higher is better",
    "thompson": "a posterior sample of the objective (Thompson sampling): higher is better",
    "greedy": "the objective's predicted mean: higher is better",
    "random": "no value: chosen at random",
}

OBJECTIVE_MEANING = {
    "stable_and_makeable": "P(stable) × P(yield ≥ threshold)",
    "stability": "minus the decomposition energy above the known hull",
    "expected_yield": "the predicted yield",
}


def judge(predicted: dict[str, Any], cfg: CampaignConfig | None) -> dict[str, Any]:
    """A target's prediction in units a researcher can judge: energies in meV/atom with σ, the
    yield in % with σ kept on the 0-100 % scale, probabilities apart from the yield, and which
    factor of the objective decides the ranking."""
    acq = cfg.acquisition if cfg is not None else None
    threshold_ev = acq.stability_threshold_ev if acq is not None else 0.05
    yield_thr = cfg.recipes.yield_threshold if cfg is not None else 0.5
    out: dict[str, Any] = {"rows": [], "p_stable": None, "p_yield": None, "deciding": None,
                           "acquisition_meaning": ACQUISITION_MEANING.get(acq.strategy if acq else "", ""),
                           "objective": OBJECTIVE_MEANING.get(acq.objective if acq else "", ""),
                           "strategy": acq.strategy if acq else None, "yield_threshold": yield_thr}
    e, e_std = finite(predicted.get("e_decomp")), finite(predicted.get("e_decomp_std"))
    if e is not None:
        p_st = _phi((threshold_ev - e) / e_std) if e_std else float(e <= threshold_ev)
        out["p_stable"] = p_st
        out["rows"].append({"key": "e_decomp", "label": "energy above the known hull",
                            "value": f"{1000 * e:+.0f} meV/atom" + (f" ± {1000 * e_std:.0f}" if e_std else ""),
                            "note": f"P(stable) {100 * p_st:.0f} % (stable = below {1000 * threshold_ev:.0f} meV/atom)"})
    ef, ef_std = finite(predicted.get("e_form")), finite(predicted.get("e_form_std"))
    if ef is not None:
        out["rows"].append({"key": "e_form", "label": "formation energy",
                            "value": f"{ef:.3f} eV/atom" + (f" ± {ef_std:.3f}" if ef_std else ""), "note": ""})
    y, y_std = finite(predicted.get("yield")), finite(predicted.get("yield_std"))
    if y is not None:
        y = min(max(y, 0.0), 1.0)
        if y_std is not None and y_std >= 0.5:
            spread, note_extra = "σ > 50 % (the yield model has not learnt this yet)", True
        else:
            spread, note_extra = (f"± {100 * y_std:.0f} %" if y_std else ""), False
        p_y = _phi((y - yield_thr) / y_std) if y_std else float(y >= yield_thr)
        out["p_yield"] = None if note_extra else p_y
        out["rows"].append({"key": "yield", "label": "target yield (model)",
                            "value": f"{100 * y:.0f} % {spread}".strip(),
                            "note": (f"P(yield ≥ {100 * yield_thr:.0f} %) {100 * p_y:.0f} %" if not note_extra
                                     else "uninformative: the ranking rests on stability")})
    p_st, p_y = out["p_stable"], out["p_yield"]
    if acq is not None and acq.objective == "stable_and_makeable" and p_st is not None:
        if p_y is None:
            out["deciding"] = f"P(stable) {100 * p_st:.0f} % (the yield does not count yet)"
        else:
            lower = "P(stable)" if p_st <= p_y else f"P(yield ≥ {100 * yield_thr:.0f} %)"
            out["deciding"] = (f"P(stable) {100 * p_st:.0f} % × P(yield ≥ {100 * yield_thr:.0f} %) "
                               f"{100 * p_y:.0f} % = {100 * p_st * p_y:.0f} %; the smaller factor, {lower}, decides")
    elif acq is not None and acq.objective == "stability" and e is not None:
        out["deciding"] = f"decomposition energy {1000 * e:+.0f} meV/atom"
    elif acq is not None and acq.objective == "expected_yield" and y is not None:
        out["deciding"] = f"predicted yield {100 * y:.0f} %"
    return out


def proposals(session: Session, campaign: Campaign | None, *, limit: int = 200, offset: int = 0,
              cfg: CampaignConfig | None = None) -> dict[str, Any]:
    """Proposed experiments grouped by target (highest acquisition value first) with their recipes."""
    if campaign is None:
        return {"total": 0, "targets": [], "limit": limit, "offset": offset}
    cid = campaign.id
    where = and_(Experiment.campaign_id == cid, Experiment.state == ExperimentState.PROPOSED.value)
    total = session.exec(select(func.count()).select_from(Experiment).where(where)).one()
    rows = session.exec(
        select(Experiment, Recipe, Target)
        .join(Recipe, Recipe.id == Experiment.recipe_id)
        .join(Target, Target.id == Experiment.target_id)
        .where(where)
        .order_by(Target.acquisition_value.desc().nulls_last(), Target.id, Recipe.ordinal, Experiment.id)
        .limit(min(limit, MAX_LIST)).offset(offset)
    ).all()
    preds = latest_predictions(session, sorted({t.candidate_id for _, _, t in rows if t.candidate_id}))
    groups: dict[int, dict[str, Any]] = {}
    for exp, recipe, target in rows:
        group = groups.get(target.id)
        if group is None:
            group = groups[target.id] = target_dict(target, preds.get(target.candidate_id or -1)) | {"proposals": []}
            group["judged"] = judge(target.predicted or {}, cfg)
            group["why"] = group["judged"]["deciding"] or ""
        group["proposals"].append({"experiment": experiment_dict(exp, target.formula),
                                   "recipe": recipe_dict(recipe, target.formula)})
    return {"total": int(total), "limit": limit, "offset": offset, "targets": list(groups.values())}
