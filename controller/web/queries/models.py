"""Model versions and one model's calibration: predicted vs observed and interval coverage per level,
from the metrics stored with the version (never the checkpoint blob).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import func
from sqlmodel import Session, select

from ...store import (
    Campaign,
    Experiment,
    ModelVersion,
    Prediction,
    Target,
    iso,
)
from .rows import NotFound, aware, finite

_MODEL_COLUMNS = (ModelVersion.id, ModelVersion.kind, ModelVersion.version, ModelVersion.n_train,
                  ModelVersion.metrics, ModelVersion.created_at)  # never the checkpoint blob


def _model_row(row: Any) -> dict[str, Any]:
    return {"id": row[0], "kind": row[1], "version": row[2], "n_train": row[3], "metrics": row[4] or {},
            "created_at": iso(row[5])}


def models(session: Session, campaign: Campaign | None) -> dict[str, Any]:
    if campaign is None:
        return {"models": []}
    rows = session.exec(select(*_MODEL_COLUMNS).where(ModelVersion.campaign_id == campaign.id)
                        .order_by(ModelVersion.kind, ModelVersion.version)).all()
    counts = dict(session.exec(
        select(Prediction.model_version_id, func.count())
        .where(Prediction.model_version_id.in_([r[0] for r in rows] or [-1]))
        .group_by(Prediction.model_version_id)).all())
    return {"models": [_model_row(r) | {"predictions": int(counts.get(r[0], 0))} for r in rows]}


# normal quantiles for central intervals 10 %, 20 %, ... 90 %, 95 % (no scipy import at page time)
_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
_Z = (0.12566, 0.25335, 0.38532, 0.52440, 0.67449, 0.84162, 1.03643, 1.28155, 1.64485, 1.95996)


def _pairs_from_metrics(metrics: dict[str, Any]) -> list[dict[str, float | None]]:
    """Parity points a trainer stored with its metrics: ``parity: {y_true, y_pred, y_std}`` or a list."""
    parity = metrics.get("parity")
    points: list[dict[str, float | None]] = []
    if isinstance(parity, dict):
        true = parity.get("y_true") or parity.get("true") or []
        pred = parity.get("y_pred") or parity.get("pred") or []
        std = parity.get("y_std") or parity.get("std") or [None] * len(pred)
        for t, p, s in zip(true, pred, std, strict=False):
            points.append({"observed": finite(t), "predicted": finite(p), "std": finite(s)})
    elif isinstance(parity, list):
        for item in parity:
            if isinstance(item, dict):
                points.append({"observed": finite(item.get("y_true", item.get("observed"))),
                               "predicted": finite(item.get("y_pred", item.get("predicted"))),
                               "std": finite(item.get("y_std", item.get("std")))})
    return [p for p in points if p["observed"] is not None and p["predicted"] is not None]


def model_quality(session: Session, campaign: Campaign | None, model_id: int, *, max_points: int = 2000) -> dict[str, Any]:
    """Parity (predicted vs observed) and calibration (nominal vs observed interval coverage) of one version.

    Observed values come from what the trainer stored in ``metrics["parity"]`` (held-out
    points); for yield models without it, the campaign's own measured yields are joined to the
    version's ``yield`` predictions through the target's candidate — the honest test of a
    yield model is the lab.
    """
    row = session.exec(select(*_MODEL_COLUMNS).where(ModelVersion.id == model_id)).first()
    if campaign is None or row is None or session.get(ModelVersion, model_id).campaign_id != campaign.id:
        raise NotFound(f"no model version with id {model_id} in this campaign")
    info = _model_row(row)
    points = _pairs_from_metrics(info["metrics"])
    source = "metrics.parity" if points else None
    if not points:
        observed = session.exec(
            select(Prediction.mean, Prediction.std, func.max(Experiment.target_yield), Target.formula,
                   func.min(Experiment.updated_at))
            .join(Target, Target.candidate_id == Prediction.candidate_id)
            .join(Experiment, Experiment.target_id == Target.id)
            .where(Prediction.model_version_id == model_id, Prediction.objective == "yield",
                   Target.campaign_id == campaign.id, Experiment.target_yield.is_not(None))
            .group_by(Prediction.id, Target.formula).limit(max_points)
        ).all()
        trained_at = session.get(ModelVersion, model_id).created_at
        # held out = the target's first yield was measured after this version was trained, so the
        # prediction could not have seen it; the rest is in-sample fit and is plotted hollow
        points = [{"observed": finite(y), "predicted": finite(m), "std": finite(s), "label": f,
                   "held_out": bool(first and trained_at and aware(first) > aware(trained_at))}
                  for m, s, y, f, first in observed if finite(y) is not None and finite(m) is not None]
        source = "measured yields" if points else None
    points = points[:max_points]
    calibration = []
    with_std = [p for p in points if p.get("std")]
    if with_std:
        z = np.array([abs(p["observed"] - p["predicted"]) / p["std"] for p in with_std])
        calibration = [{"nominal": lvl, "observed": float(np.mean(z <= q))} for lvl, q in zip(_LEVELS, _Z, strict=True)]
    obs = np.array([p["observed"] for p in points]) if points else np.zeros(0)
    pred = np.array([p["predicted"] for p in points]) if points else np.zeros(0)
    summary = {}
    if len(points):
        summary = {"n": len(points), "mae": float(np.mean(np.abs(obs - pred))),
                   "rmse": float(np.sqrt(np.mean((obs - pred) ** 2)))}
        held = np.array([bool(p.get("held_out")) for p in points])
        if source == "measured yields":
            summary["n_held_out"] = int(held.sum())
            if held.any():
                summary["mae_held_out"] = float(np.mean(np.abs(obs[held] - pred[held])))
        if len(points) > 2 and np.std(obs) > 0 and np.std(pred) > 0:
            summary["pearson_r"] = float(np.corrcoef(obs, pred)[0, 1])
    objectives = dict(session.exec(select(Prediction.objective, func.count())
                                   .where(Prediction.model_version_id == model_id)
                                   .group_by(Prediction.objective)).all())
    return info | {"parity": points, "parity_source": source, "calibration": calibration,
                   "summary": summary, "prediction_counts": {k: int(v) for k, v in objectives.items()}}
