"""Experiments in flight and finished: results, one experiment's detail, its XRD data and fitted
curves, and the warnings a poor fit earns (Rwp, unexplained intensity).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

import numpy as np
from sqlalchemy import and_, func
from sqlmodel import Session, select

from ...store import (
    IN_FLIGHT,
    VERDICT_STATES,
    Campaign,
    Experiment,
    Measurement,
    PhaseAnalysisRow,
    Recipe,
    StepCommand,
    Target,
    iso,
    unpack_array,
)
from .proposals import target_dict
from .rows import (
    MAX_LIST,
    NotFound,
    campaign_experiment,
    experiment_dict,
    finite,
    peak_temperature,
    recipe_dict,
    state_values,
    step_dict,
)


def in_flight(session: Session, campaign: Campaign | None, *, limit: int = 200) -> dict[str, Any]:
    """Approved-but-unfinished experiments with the step each one is at."""
    if campaign is None:
        return {"total": 0, "experiments": []}
    where = and_(Experiment.campaign_id == campaign.id, Experiment.state.in_(state_values(IN_FLIGHT)))
    total = session.exec(select(func.count()).select_from(Experiment).where(where)).one()
    rows = session.exec(
        select(Experiment, Target.formula, Recipe.profile)
        .join(Target, Target.id == Experiment.target_id)
        .join(Recipe, Recipe.id == Experiment.recipe_id)
        .where(where).order_by(Experiment.updated_at.desc(), Experiment.id.desc())
        .limit(min(limit, MAX_LIST))
    ).all()
    ids = [exp.id for exp, _, _ in rows]
    current: dict[int, StepCommand] = {}
    if ids:
        for step in session.exec(
            select(StepCommand).where(StepCommand.experiment_id.in_(ids))
            .order_by(StepCommand.sequence, StepCommand.attempt, StepCommand.id)
        ).all():
            current[step.experiment_id] = step  # the last one in order is where it is now
    out = []
    for exp, formula, profile in rows:
        step = current.get(exp.id)
        out.append(experiment_dict(exp, formula) | {
            "current_step": step_dict(step) if step else None,
            "max_temperature_c": peak_temperature(profile),
        })
    return {"total": int(total), "experiments": out}


def results(session: Session, campaign: Campaign | None, *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """Finished experiments, newest first, with yield and reason (paged)."""
    if campaign is None:
        return {"total": 0, "limit": limit, "offset": offset, "experiments": []}
    where = and_(Experiment.campaign_id == campaign.id,
                 Experiment.state.in_(state_values(VERDICT_STATES)))
    total = session.exec(select(func.count()).select_from(Experiment).where(where)).one()
    rows = session.exec(
        select(Experiment, Target.formula).join(Target, Target.id == Experiment.target_id)
        .where(where).order_by(Experiment.updated_at.desc(), Experiment.id.desc())
        .limit(min(limit, MAX_LIST)).offset(offset)
    ).all()
    rwp: dict[int, float | None] = {}
    ids = [exp.id for exp, _ in rows]
    if ids:  # the newest analysis' Rwp per experiment (a column: no JSON details loaded)
        for eid, value in session.exec(select(PhaseAnalysisRow.experiment_id, PhaseAnalysisRow.rwp)
                                       .where(PhaseAnalysisRow.experiment_id.in_(ids))
                                       .order_by(PhaseAnalysisRow.id)).all():
            rwp[eid] = finite(value)
    return {"total": int(total), "limit": limit, "offset": offset,
            "experiments": [experiment_dict(exp, formula) | {"rwp": rwp.get(exp.id),
                                                             "fit_warning": fit_warning(rwp.get(exp.id), None)}
                            for exp, formula in rows]}


def _array_field(obj: Any) -> list[float] | None:
    """Fitted curves may be stored as a list of numbers or as a packed array (hex/bytes)."""
    if isinstance(obj, list) and obj and all(isinstance(v, int | float) for v in obj[:5]):
        return [float(v) for v in obj]
    if isinstance(obj, str):  # packed: hex ("534c4131..." = b"SLA1") or base64 (records.py writes base64)
        try:
            raw = bytes.fromhex(obj) if obj.startswith("534c41") else base64.b64decode(obj, validate=True)
            return unpack_array(raw).tolist()
        except (ValueError, binascii.Error, zlib.error):
            return None
    return None


# a fit this poor (or this much intensity no phase explains) makes its weight fractions unreliable
POOR_RWP = 0.25
POOR_UNEXPLAINED = 0.10


def fit_warning(rwp: float | None, unexplained_fraction: float | None) -> str | None:
    """Why a yield should not be trusted at face value, or None for an acceptable fit."""
    problems = []
    if rwp is not None and rwp > POOR_RWP:
        problems.append(f"poor fit: Rwp {rwp:.2f} > {POOR_RWP:.2f}")
    if unexplained_fraction is not None and unexplained_fraction > POOR_UNEXPLAINED:
        problems.append(f"{100 * unexplained_fraction:.0f} % of the intensity unexplained by any phase")
    return "; ".join(problems) or None


def fitted_curves(analysis: PhaseAnalysisRow | None, n_points: int) -> dict[str, Any]:
    """Pull the fitted pattern (and per-phase contributions) out of an analysis' details, if stored.

    Recognised: ``details["curves"]`` as written by ``controller.xrd`` ``PhaseAnalysis.to_dict(
    include_curves=True)`` (``two_theta``, ``observed``, ``calculated``, ``phase:NAME``);
    ``details["fitted"|"calculated"|"fit"]`` as a number list the length of the observed
    pattern (or ``{"intensities": [...]}``) with ``details["phase_patterns"]`` as ``{name: [...]}``.
    Anything else is ignored: the plot then shows the observed pattern only.
    """
    if analysis is None or not isinstance(analysis.details, dict):
        return {}
    details = analysis.details
    curves = details.get("curves")
    if isinstance(curves, dict):  # controller.xrd PhaseAnalysis.to_dict(include_curves=True)
        x, obs, calc = (_array_field(curves.get(k)) for k in ("two_theta", "observed", "calculated"))
        if x and obs and calc and len(x) == len(obs) == len(calc):
            phases = {k.removeprefix("phase:"): arr for k, v in curves.items()
                      if k.startswith("phase:") and (arr := _array_field(v)) is not None and len(arr) == len(x)}
            out = {"two_theta": x, "observed": obs, "fitted": calc, "phases": phases}
            background = _array_field(curves.get("background"))
            if background is not None and len(background) == len(x):
                out["background"] = background
            return out
    out: dict[str, Any] = {}
    for key in ("fitted", "calculated", "fit", "y_calc"):
        value = details.get(key)
        if isinstance(value, dict):
            value = value.get("intensities") or value.get("y")
        arr = _array_field(value)
        if arr is not None and len(arr) == n_points:
            out["fitted"] = arr
            break
    phase_patterns = details.get("phase_patterns")
    if isinstance(phase_patterns, dict):
        out["phases"] = {name: arr for name, v in phase_patterns.items()
                         if (arr := _array_field(v)) is not None and len(arr) == n_points}
    return out


def phase_ticks(analysis: PhaseAnalysisRow | None) -> dict[str, list[float]]:
    """Reflection positions per phase (``phases[i]["peaks"]`` or ``details["peaks"][name]``)."""
    if analysis is None:
        return {}
    ticks: dict[str, list[float]] = {}
    for phase in analysis.phases or []:
        if isinstance(phase, dict) and isinstance(phase.get("peaks"), list):
            ticks[str(phase.get("name") or phase.get("formula"))] = [
                float(p) for p in phase["peaks"] if isinstance(p, int | float)]
    details = analysis.details if isinstance(analysis.details, dict) else {}
    peaks = details.get("peaks")
    if isinstance(peaks, dict):
        for name, values in peaks.items():
            if isinstance(values, list):
                ticks.setdefault(str(name), [float(p) for p in values if isinstance(p, int | float)])
    unexplained = details.get("unexplained_peaks")
    if isinstance(unexplained, list) and unexplained:  # peaks no candidate phase accounts for
        ticks["unexplained"] = [float(p) for p in unexplained if isinstance(p, int | float)]
    return ticks


def experiment_detail(session: Session, campaign: Campaign | None, experiment_id: int) -> dict[str, Any]:
    """One experiment: recipe, steps, measurements and phase analyses (the XRD arrays separately)."""
    if campaign is None:
        raise NotFound(f"no experiment with id {experiment_id}: the campaign has not started")
    exp = campaign_experiment(session, campaign.id, experiment_id)
    target = session.get(Target, exp.target_id)
    recipe = session.get(Recipe, exp.recipe_id)
    formula = target.formula if target else None
    steps = session.exec(select(StepCommand).where(StepCommand.experiment_id == exp.id)
                         .order_by(StepCommand.sequence, StepCommand.attempt, StepCommand.id)).all()
    measurements = session.exec(
        select(Measurement.id, Measurement.kind, Measurement.n_points, Measurement.wavelength_angstrom,
               Measurement.source, Measurement.created_at)
        .where(Measurement.experiment_id == exp.id).order_by(Measurement.id)
    ).all()
    analyses = session.exec(select(PhaseAnalysisRow).where(PhaseAnalysisRow.experiment_id == exp.id)
                            .order_by(PhaseAnalysisRow.id)).all()
    return {
        "experiment": experiment_dict(exp, formula),
        "target": target_dict(target) if target else None,
        "recipe": recipe_dict(recipe, formula or "?") if recipe else None,
        "steps": [step_dict(s) for s in steps],
        "measurements": [{"id": m[0], "kind": m[1], "n_points": m[2], "wavelength_angstrom": m[3],
                          "source": m[4], "created_at": iso(m[5])} for m in measurements],
        "analyses": [{"id": a.id, "measurement_id": a.measurement_id, "phases": a.phases or [],
                      "rwp": finite(a.rwp), "target_yield": finite(a.target_yield), "method": a.method,
                      "method_version": a.method_version, "created_at": iso(a.created_at),
                      "fit_warning": _analysis_warning(a),
                      "target_yield_std": finite((a.details or {}).get("target_yield_std"))
                      if isinstance(a.details, dict) else None,
                      "target_yield_lower": finite((a.details or {}).get("target_yield_lower"))
                      if isinstance(a.details, dict) else None,
                      "unexplained_peaks": [round(float(p), 2) for p in (a.details or {}).get("unexplained_peaks", [])
                                            if isinstance(p, int | float)][:20]
                      if isinstance(a.details, dict) else []}
                     for a in analyses],
    }


def xrd_data(session: Session, campaign: Campaign | None, experiment_id: int) -> dict[str, Any]:
    """The newest XRD pattern of an experiment with its fit (if stored), difference and phase ticks."""
    if campaign is None:
        raise NotFound(f"no experiment with id {experiment_id}: the campaign has not started")
    exp = campaign_experiment(session, campaign.id, experiment_id)
    m = session.exec(select(Measurement).where(Measurement.experiment_id == exp.id, Measurement.kind == "xrd")
                     .order_by(Measurement.id.desc()).limit(1)).first()
    if m is None:
        raise NotFound(f"experiment {experiment_id} has no XRD measurement yet (state {exp.state!r})")
    analysis = session.exec(select(PhaseAnalysisRow).where(PhaseAnalysisRow.measurement_id == m.id)
                            .order_by(PhaseAnalysisRow.id.desc()).limit(1)).first()
    two_theta, observed = unpack_array(m.two_theta), unpack_array(m.intensities)
    curves = fitted_curves(analysis, len(observed))
    fitted = curves.get("fitted")
    if "two_theta" in curves:  # the analysis fitted its own (e.g. trimmed) grid: plot that grid
        two_theta, observed = np.asarray(curves["two_theta"]), np.asarray(curves["observed"])
    return {
        "experiment_id": exp.id,
        "measurement_id": m.id,
        "wavelength_angstrom": m.wavelength_angstrom,
        "two_theta": two_theta.tolist(),
        "observed": observed.tolist(),
        "fitted": fitted,
        "difference": (observed - np.asarray(fitted)).tolist() if fitted is not None else None,
        "phase_patterns": curves.get("phases", {}),
        "phase_ticks": phase_ticks(analysis),
        "phases": (analysis.phases or []) if analysis else [],
        "background": curves.get("background"),
        "rwp": finite(analysis.rwp) if analysis else None,
        "target_yield": finite(analysis.target_yield) if analysis else None,
        "fit_warning": _analysis_warning(analysis),
    }


def _analysis_warning(analysis: PhaseAnalysisRow | None) -> str | None:
    if analysis is None:
        return None
    details = analysis.details if isinstance(analysis.details, dict) else {}
    return fit_warning(finite(analysis.rwp), finite(details.get("unexplained_intensity_fraction")))
