"""The end of a campaign: a Markdown report with plots, and every experiment as CSV and JSON.

Why from the store only: the report must be reproducible from the campaign database alone,
by anyone, after the fact (``synthloop report DIR`` regenerates it) — it reads SQL rows, not
the controller's memory.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import select

from ..store import (
    Campaign,
    Experiment,
    ModelVersion,
    PhaseAnalysisRow,
    Recipe,
    Store,
    Target,
    TargetState,
    iso,
)
from .labtime import lab_days


@dataclass
class ReportFiles:
    report: Path
    csv: Path
    json: Path
    plots: list[Path]


def experiment_records(store: Store, campaign_id: int) -> list[dict[str, Any]]:
    """One flat record per experiment: target, recipe, state, yield, phases, reason and failure kind, times."""
    with store.session() as s:
        rows = s.exec(select(Experiment, Target, Recipe)
                      .join(Target, Target.id == Experiment.target_id)
                      .join(Recipe, Recipe.id == Experiment.recipe_id)
                      .where(Experiment.campaign_id == campaign_id).order_by(Experiment.id)).all()
        analyses = {pa.experiment_id: pa for pa in s.exec(
            select(PhaseAnalysisRow).join(Experiment, Experiment.id == PhaseAnalysisRow.experiment_id)
            .where(Experiment.campaign_id == campaign_id)).all()}
    out = []
    for exp, target, recipe in rows:
        pa = analyses.get(exp.id)
        out.append({
            "experiment_id": exp.id,
            "sample_id": exp.sample_id,
            "target": target.formula,
            "target_id": target.id,
            "recipe_id": recipe.id,
            "recipe_ordinal": recipe.ordinal,
            "planner": recipe.planner,
            "precursors": " + ".join(p["formula"] for p in recipe.precursors or []),
            "max_temperature_c": max((float(s["setpoint_c"]) for s in recipe.profile or []), default=None),
            "dwell_min": sum(float(s["dwell_min"]) for s in recipe.profile or []),
            "atmosphere": recipe.atmosphere,
            "attempt": exp.attempt,
            "state": exp.state,
            "target_yield": exp.target_yield,
            "rwp": pa.rwp if pa else None,
            "phases": {p["formula"]: round(float(p["weight_fraction"]), 4) for p in (pa.phases or [])} if pa else {},
            "reason": exp.reason,
            "failure_kind": exp.failure_kind,
            "created_at": iso(exp.created_at),
            "updated_at": iso(exp.updated_at),
        })
    return out


def export_experiments(store: Store, campaign_id: int, out_dir: Path) -> tuple[Path, Path]:
    records = experiment_records(store, campaign_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "experiments.json", out_dir / "experiments.csv"
    json_path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    fields = list(records[0]) if records else ["experiment_id"]
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for rec in records:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in rec.items()})
    return csv_path, json_path


def _plots(records: list[dict], versions: list[ModelVersion], threshold: float, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    done = [r for r in records if r["target_yield"] is not None]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.scatter([r["experiment_id"] for r in done], [r["target_yield"] for r in done],
               c=["tab:green" if r["target_yield"] >= threshold else "tab:red" for r in done], s=14)
    ax.axhline(threshold, color="grey", ls="--", lw=1)
    ax.set_xlabel("experiment")
    ax.set_ylabel("target yield (XRD weight fraction)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Yield per experiment")
    fig.tight_layout()
    paths.append(out_dir / "yield_per_experiment.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    made, seen, xs, ys = 0, set(), [], []
    for i, r in enumerate(records, start=1):
        if r["state"] == "succeeded" and r["target"] not in seen:
            seen.add(r["target"])
            made += 1
        xs.append(i)
        ys.append(made)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.step(xs, ys, where="post")
    ax.set_xlabel("experiments")
    ax.set_ylabel("targets made")
    ax.set_title("Targets made")
    fig.tight_layout()
    paths.append(out_dir / "targets_made.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    rounds = [(v.version, (v.metrics or {}).get("yield_mae_previous_model")) for v in versions]
    rounds = [(v, e) for v, e in rounds if e is not None]
    if rounds:
        ax.plot([v for v, _ in rounds], [e for _, e in rounds], marker="o")
        # axes a reader can judge: error from 0 (a yield MAE lives in [0, 1]), whole rounds;
        # with one round matplotlib would centre a lone dot on an axis from 1.9 to 2.1
        ax.set_ylim(0.0, max(0.5, 1.15 * max(e for _, e in rounds)))
        ax.set_xlim(min(v for v, _ in rounds) - 0.5, max(v for v, _ in rounds) + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(rounds) == 1:
            ax.annotate(f"{rounds[0][1]:.3f}", rounds[0], textcoords="offset points", xytext=(6, 6))
    else:
        ax.text(0.5, 0.5, "no retraining round yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("model version (round)")
    ax.set_ylabel("yield MAE of the previous model")
    ax.set_title("Model error per round (on results it had not seen)")
    fig.tight_layout()
    paths.append(out_dir / "model_error.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write_report(store: Store, campaign_name: str, out_dir: Path, *, threshold: float = 0.5,
                 extra: dict[str, Any] | None = None) -> ReportFiles:
    """Write report.md, three PNG plots and the experiment export into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    camp = store.get_campaign(campaign_name)
    records = experiment_records(store, camp.id)
    with store.session() as s:
        targets = s.exec(select(Target).where(Target.campaign_id == camp.id).order_by(Target.id)).all()
        versions = s.exec(select(ModelVersion).where(ModelVersion.campaign_id == camp.id)
                          .order_by(ModelVersion.version)).all()
        camp = s.get(Campaign, camp.id)
    csv_path, json_path = export_experiments(store, camp.id, out_dir)
    plots = _plots(records, versions, threshold, out_dir)
    counts = store.experiment_counts(camp.id)
    made = [t for t in targets if t.state == TargetState.MADE]
    per_target: dict[int, list[dict]] = {}
    for r in records:
        per_target.setdefault(r["target_id"], []).append(r)
    lines = [
        f"# Campaign report: {camp.name}",
        "",
        f"- status: **{camp.status}** ({camp.stop_reason or 'running'})",
        f"- experiments: {len(records)} ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))})",
        f"- targets: {len(targets)} chosen, **{len(made)} made**, "
        f"{sum(t.state == TargetState.EXHAUSTED for t in targets)} exhausted",
        f"- lab time: {lab_days(store, camp.id):.2f} days (instrument makespan)",
        f"- model versions: {len(versions)}",
    ]
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {v}")
    lines += ["", "## Targets", "", "| target | state | experiments | best yield | reason |",
              "|---|---|---|---|---|"]
    for t in targets:
        n = len(per_target.get(t.id, []))
        best = f"{t.best_yield:.2f}" if t.best_yield is not None else "–"
        lines.append(f"| {t.formula} | {t.state} | {n} | {best} | {t.reason or ''} |")
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    lines += ["", "## Model versions", "", "| version | trained on | yield MAE of previous model |",
              "|---|---|---|"]
    for v in versions:
        mae = (v.metrics or {}).get("yield_mae_previous_model")
        lines.append(f"| {v.version} | {v.n_train} | {'–' if mae is None else f'{mae:.3f}'} |")
    lines += ["", "## Experiments", "",
              f"All experiments: [{csv_path.name}]({csv_path.name}), [{json_path.name}]({json_path.name}).",
              "", "| # | sample | target | precursors | T max (°C) | state | yield |", "|---|---|---|---|---|---|---|"]
    for r in records:
        y = "–" if r["target_yield"] is None else f"{r['target_yield']:.2f}"
        state = r["state"] + (f" ({r['failure_kind']})" if r["state"] == "failed" else "")
        lines.append(f"| {r['experiment_id']} | {r['sample_id']} | {r['target']} | {r['precursors']} | "
                     f"{r['max_temperature_c'] or '–'} | {state} | {y} |")
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ReportFiles(report=report, csv=csv_path, json=json_path, plots=plots)
