"""Helpers for the web tests and benchmark: campaign directories, stores filled through the
Store API, a real uvicorn server in a subprocess, and a tiny HTTP client.

Why a real server: the acceptance asks for API tests against a running server, and only a
separate process catches what an in-process client hides (startup from the CLI, the
threadpool and SQLite connections of a live server, streaming responses, clean shutdown).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token-for-tests"


def test_support_module_imports() -> None:
    """Keeps pytest from reporting this helper module as empty; the helpers are tested by use."""
    assert callable(fill_small_campaign)


# --------------------------------------------------------------------------- campaign dirs


def write_campaign_dir(directory: Path, *, name: str = "web-test", approval_mode: bool = True,
                       token: str | None = TOKEN, read_only: bool = False) -> Path:
    """A campaign directory whose campaign.yaml is the shipped example with a few keys changed."""
    from controller.config import example_config_text

    data = yaml.safe_load(example_config_text())
    data["campaign"]["name"] = name
    data["campaign"]["approval_mode"] = approval_mode
    data["campaign"]["budget"]["max_experiments"] = 40
    data["web"] = {"token": token, "read_only": read_only}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "campaign.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return directory


def open_store(directory: Path):
    from controller.config import load_config
    from controller.store import Store

    cfg = load_config(directory / "campaign.yaml")
    return Store.for_campaign_dir(directory, cfg.store.url)


# --------------------------------------------------------------------------- filling a store


def synthetic_pattern(peaks: dict[str, list[tuple[float, float]]], fractions: dict[str, float], *,
                      seed: int, n: int = 3501) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Two-theta grid, noisy observed counts, the noiseless fit and each phase's contribution."""
    rng = np.random.default_rng(seed)
    x = np.linspace(10.0, 80.0, n)
    contributions = {}
    for name, plist in peaks.items():
        y = np.zeros_like(x)
        for pos, height in plist:
            y += height * np.exp(-0.5 * ((x - pos) / 0.08) ** 2)
        contributions[name] = fractions[name] * 1000.0 * y
    fit = 50.0 + sum(contributions.values())
    observed = rng.poisson(fit).astype(float)
    return x, observed, fit, contributions


def _model_and_candidates(s: Any, store: Any, campaign_id: int, formulas: list[str], rng: np.random.Generator):
    from controller.store import Candidate, ModelVersion, Prediction

    mv = ModelVersion(campaign_id=campaign_id, kind="surrogate", version=1, n_train=120,
                      metrics={"n_known": 120, "n_yield": 3, "yield_mae_previous_model": 0.21})
    s.add(mv)
    s.flush()
    cands = []
    for f in formulas:
        c = Candidate(campaign_id=campaign_id, formula=f, chemical_system="-".join(sorted({"Li", "Mn", "O"})),
                      structure=None, structure_hash=uuid.uuid4().hex, source="substitution",
                      provenance={"seed_structure": "mp-test"})
        s.add(c)
        s.flush()
        cands.append(c)
        for objective, mean, std in (("e_decomp", rng.uniform(-0.05, 0.1), 0.03),
                                     ("yield", rng.uniform(0.2, 0.9), 0.15)):
            s.add(Prediction(candidate_id=c.id, model_version_id=mv.id, objective=objective,
                             mean=float(mean), std=std))
    return mv, cands


def fill_small_campaign(store: Any, name: str = "web-test", seed: int = 7) -> dict[str, Any]:
    """A small but complete campaign, every row written and every state reached through the Store API.

    - target A (LiMn2O4): recipe 1 failed at 22 % (with XRD, fit and phases), recipe 2 replaced it
      and succeeded at 71 % → target made;
    - target B (BaTiO3): one experiment running, its heat step in furnace-1's hands;
    - target C (CaTiO3): two proposed experiments (approve / reject / edit in tests);
    - target D (Li2MnO3): one proposed experiment.
    """
    from sqlmodel import func, select

    from controller.store import (
        Event,
        Measurement,
        PhaseAnalysisRow,
        Recipe,
        StepCommand,
        Target,
        pack_array,
    )
    from controller.store import Experiment as Exp

    rng = np.random.default_rng(seed)
    campaign = store.ensure_campaign(name, seed=seed)
    cid = campaign.id
    ids: dict[str, Any] = {"campaign_id": cid}
    formulas = ["LiMn2O4", "BaTiO3", "CaTiO3", "Li2MnO3"]
    with store.session() as s:
        mv, cands = _model_and_candidates(s, store, cid, formulas, rng)
        ids["model_version_id"] = mv.id
        targets = []
        for k, (f, cand) in enumerate(zip(formulas, cands, strict=True)):
            t = Target(campaign_id=cid, candidate_id=cand.id, formula=f, acquisition_value=0.9 - 0.2 * k,
                       predicted={"e_decomp": 0.01 * k, "e_decomp_std": 0.02, "p_stable": 0.8 - 0.1 * k})
            s.add(t)
            s.flush()
            store.log(s, "target.created", campaign_id=cid, entity="target", entity_id=t.id, actor="controller",
                      message=f"target {f}")
            targets.append(t)
        ids["targets"] = [t.id for t in targets]

        def recipe(t: Target, ordinal: int, precursors: list[tuple[str, float]], temp: float, *,
                   replaces: int | None = None, rationale: str = "", df: float = 80.0) -> Recipe:
            r = Recipe(target_id=t.id, ordinal=ordinal,
                       precursors=[{"formula": p, "moles": m, "mass_g": round(0.5 * m, 4)} for p, m in precursors],
                       profile=[{"ramp_c_per_min": 5, "setpoint_c": temp, "dwell_min": 600}],
                       planner="arrows" if replaces else "initial", rationale=rationale,
                       driving_force_mev_per_atom=df, predicted_yield=0.6, replaces_recipe_id=replaces,
                       details={"reaction": " + ".join(f"{m:g} {p}" for p, m in precursors) + f" -> {t.formula}"})
            s.add(r)
            s.flush()
            return r

        ra1 = recipe(targets[0], 1, [("Li2CO3", 0.5), ("MnO2", 2)], 700,
                     rationale="largest driving force among carbonate/oxide sets")
        ra2 = recipe(targets[0], 2, [("LiOH", 1), ("Mn2O3", 1)], 800, replaces=ra1.id, df=120.0,
                     rationale="recipe 1 formed Li2MnO3 first, leaving 12 meV/atom for the target step; "
                           "LiOH + Mn2O3 avoids that intermediate")
        rb = recipe(targets[1], 1, [("BaCO3", 1), ("TiO2", 1)], 1100)
        rc1 = recipe(targets[2], 1, [("CaCO3", 1), ("TiO2", 1)], 1000, rationale="carbonate route")
        rc2 = recipe(targets[2], 2, [("CaO", 1), ("TiO2", 1)], 950, rationale="oxide route")
        # the recipe planner's own record format: Reaction.to_dict() and its pathway prediction
        rc2.details = {"reaction": {"equation": "CaO + TiO2 -> CaTiO3", "energy_mev_per_atom": -95.0},
                       "remaining_driving_force_mev_per_atom": 45.0, "predicted_intermediates": ["CaTi2O5"]}
        s.add(rc2)
        rd = recipe(targets[3], 1, [("Li2CO3", 1), ("MnO2", 1)], 850)
        ids["recipes"] = {"A1": ra1.id, "A2": ra2.id, "B": rb.id, "C1": rc1.id, "C2": rc2.id, "D": rd.id}
        exps = {}
        for key, t, r in (("A1", targets[0], ra1), ("A2", targets[0], ra2), ("B", targets[1], rb),
                          ("C1", targets[2], rc1), ("C2", targets[2], rc2), ("D", targets[3], rd)):
            e = Exp(campaign_id=cid, target_id=t.id, recipe_id=r.id, sample_id=f"S-{key}-{uuid.uuid4().hex[:6]}")
            s.add(e)
            s.flush()
            store.log(s, "experiment.proposed", campaign_id=cid, entity="experiment", entity_id=e.id,
                      actor="controller", to_state="proposed")
            exps[key] = e.id
        ids["experiments"] = exps

    def step(exp_id: int, name_: str, seq: int, *, end: str, driver: str, sim_min: float) -> None:
        cmd = str(uuid.uuid4())
        with store.session() as s:
            s.add(StepCommand(command_id=cmd, experiment_id=exp_id, step=name_, sequence=seq,
                              payload={"params": {}}))
            s.flush()
            store.step_transition(s, cmd, "sent", driver=driver)
            store.step_transition(s, cmd, "acked")
            if end != "acked":
                store.step_transition(s, cmd, end, result={"sim_time_min": sim_min})

    def run_through(exp_id: int, final: str, yield_: float, peaks_seed: int, *, xrd_curves: bool = False) -> None:
        for st in ("approved", "queued", "running"):
            store.transition(exp_id, st, actor="web:setup" if st == "approved" else "controller")
        for seq, (nm, drv, mins) in enumerate((("dose_mix", "doser-1", 20), ("heat", "furnace-1", 700),
                                               ("recover", "doser-1", 10), ("xrd", "xrd-1", 8))):
            step(exp_id, nm, seq, end="succeeded", driver=drv, sim_min=mins)
        x, obs, fit, parts = synthetic_pattern(
            {"LiMn2O4": [(18.6, 1.0), (36.1, 0.5), (43.9, 0.6), (63.8, 0.4)],
             "Li2MnO3": [(18.8, 0.6), (44.6, 0.9), (65.5, 0.3)]},
            {"LiMn2O4": yield_, "Li2MnO3": 1 - yield_}, seed=peaks_seed)
        with store.session() as s:
            m = Measurement(experiment_id=exp_id, n_points=len(x), two_theta=pack_array(x),
                            intensities=pack_array(obs), source="xrd-1")
            s.add(m)
            s.flush()
            store.transition(exp_id, "measured", session=s)
            s.add(PhaseAnalysisRow(
                measurement_id=m.id, experiment_id=exp_id, rwp=0.083, target_yield=yield_,
                phases=[{"name": "LiMn2O4 (target)", "formula": "LiMn2O4", "weight_fraction": yield_, "std": 0.03,
                         "peaks": [18.6, 36.1, 43.9, 63.8]},
                        {"name": "Li2MnO3", "formula": "Li2MnO3", "weight_fraction": 1 - yield_, "std": 0.03,
                         "peaks": [18.8, 44.6, 65.5]}],
                # two stored forms: controller.xrd's to_dict(include_curves=True) on a trimmed grid, or
                # a "fitted" curve on the measured grid
                details={"curves": {"two_theta": x[100:-100].tolist(), "observed": obs[100:-100].tolist(),
                                    "calculated": fit[100:-100].tolist(),
                                    **{f"phase:{k}": v[100:-100].tolist() for k, v in parts.items()}},
                         "unexplained_peaks": [27.3]} if xrd_curves else
                        {"fitted": fit.tolist(), "phase_patterns": {k: v.tolist() for k, v in parts.items()},
                         "unexplained_peaks": [27.3]}))
            store.transition(exp_id, "analysed", session=s, target_yield=yield_)
            store.transition(exp_id, final, session=s, reason=f"target yield {yield_:.0%}",
                             failure_kind="chemistry" if final == "failed" else None)

    run_through(exps["A1"], "failed", 0.22, 1, xrd_curves=True)
    run_through(exps["A2"], "succeeded", 0.71, 2)
    with store.session() as s:
        t = s.get(Target, targets[0].id)
        t.state, t.best_yield = "made", 0.71
        s.add(t)
        store.log(s, "target.transition", campaign_id=cid, entity="target", entity_id=t.id,
                  from_state="active", to_state="made", actor="controller")
    for st in ("approved", "queued", "running"):
        store.transition(exps["B"], st, actor="controller")
    step(exps["B"], "dose_mix", 0, end="succeeded", driver="doser-1", sim_min=20)
    step(exps["B"], "heat", 1, end="acked", driver="furnace-1", sim_min=0)
    with store.session() as s:
        ids["last_event_id"] = s.exec(select(func.max(Event.id))).one()
    return ids


def fill_bulk(store: Any, name: str, n_experiments: int, *, seed: int = 0, xrd_every: int = 50) -> dict[str, Any]:
    """A large campaign for the benchmark: ``n_experiments`` in a realistic state mix, 4 per target.

    Rows are written in large transactions through ``Store.session`` (a per-row transition
    would take minutes); the state mix is what a long campaign accumulates: mostly finished,
    some in flight, a queue of proposals.
    """
    from controller.store import (
        Experiment,
        Measurement,
        PhaseAnalysisRow,
        Recipe,
        StepCommand,
        Target,
        pack_array,
    )

    rng = np.random.default_rng(seed)
    campaign = store.ensure_campaign(name, seed=seed)
    cid = campaign.id
    n_targets = max(1, n_experiments // 4)
    states = rng.choice(["succeeded", "failed", "cancelled", "proposed", "running", "queued"],
                        size=n_experiments, p=[0.35, 0.45, 0.04, 0.08, 0.05, 0.03])
    x, obs, fit, parts = synthetic_pattern({"A": [(20.0, 1.0), (33.0, 0.4)], "B": [(25.0, 0.7)]},
                                           {"A": 0.6, "B": 0.4}, seed=seed)
    with store.session() as s:
        mv, cands = _model_and_candidates(s, store, cid, [f"Li{k}Mn{k + 1}O{k + 3}" for k in range(n_targets)], rng)
        targets = []
        for k, c in enumerate(cands):
            t = Target(campaign_id=cid, candidate_id=c.id, formula=c.formula, acquisition_value=float(rng.random()),
                       predicted={"e_decomp": float(rng.normal(0.02, 0.03)), "e_decomp_std": 0.03},
                       state="made" if k % 3 == 0 else "active")
            targets.append(t)
        s.add_all(targets)
        s.flush()
        recipes = []
        for t in targets:
            for o in range(4):
                recipes.append(Recipe(target_id=t.id, ordinal=o + 1, precursors=[{"formula": "Li2CO3", "moles": 1}],
                                      profile=[{"ramp_c_per_min": 5, "setpoint_c": 700 + 50 * o, "dwell_min": 600}],
                                      planner="initial", rationale="bulk", driving_force_mev_per_atom=60.0))
        s.add_all(recipes)
        s.flush()
        for k in range(1, len(recipes)):
            if recipes[k].ordinal > 1:
                recipes[k].replaces_recipe_id = recipes[k - 1].id
        exps = []
        for i in range(n_experiments):
            r = recipes[i % len(recipes)]
            y = float(rng.uniform(0.5, 0.95)) if states[i] == "succeeded" else float(rng.uniform(0, 0.45))
            exps.append(Experiment(campaign_id=cid, target_id=r.target_id, recipe_id=r.id, sample_id=f"B{i:06d}",
                                   state=str(states[i]),
                                   target_yield=y if states[i] in ("succeeded", "failed") else None,
                                   failure_kind={"failed": "chemistry", "cancelled": "cancelled"}.get(str(states[i]))))
        s.add_all(exps)
        s.flush()
        for e in exps:
            store.log(s, "experiment.transition", campaign_id=cid, entity="experiment", entity_id=e.id,
                      to_state=e.state, actor="bench")
        steps = []
        for e in exps:
            if e.state in ("proposed", "queued"):
                continue
            for seq, (nm, drv, mins) in enumerate((("dose_mix", "doser-1", 20), ("heat", f"furnace-{e.id % 4}", 700),
                                                   ("recover", "doser-1", 10), ("xrd", "xrd-1", 8))):
                running_here = e.state == "running" and seq == 1
                if e.state == "running" and seq > 1:
                    break
                steps.append(StepCommand(command_id=str(uuid.uuid4()), experiment_id=e.id, step=nm, sequence=seq,
                                         state="acked" if running_here else "succeeded", driver=drv,
                                         result=None if running_here else {"sim_time_min": mins}))
        s.add_all(steps)
        s.flush()
        finished = [e for e in exps if e.state in ("succeeded", "failed")]
        for e in finished[::xrd_every]:
            m = Measurement(experiment_id=e.id, n_points=len(x), two_theta=pack_array(x), intensities=pack_array(obs))
            s.add(m)
            s.flush()
            s.add(PhaseAnalysisRow(measurement_id=m.id, experiment_id=e.id, target_yield=e.target_yield, rwp=0.1,
                                   phases=[{"name": "A", "formula": "A", "weight_fraction": 0.6, "std": 0.02}],
                                   details={"fitted": fit.tolist()}))
    return {"campaign_id": cid, "model_version_id": mv.id, "target_id": targets[0].id,
            "experiment_id": finished[0].id if finished else exps[0].id}


# --------------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(campaign_dir: Path, *extra: str, timeout: float = 30.0) -> Iterator[str]:
    """``synthloop serve CAMPAIGN_DIR --port P`` in a subprocess; yields its base URL; always stopped."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log_path = campaign_dir / f"server-{port}.log"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from controller.cli import main; main()", "serve", str(campaign_dir),
             "--port", str(port), "--log-level", "warning", *extra],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(base + "/api/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer within {timeout} s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def http(method: str, url: str, body: Any = None, *, token: str | None = None,
         timeout: float = 10.0) -> tuple[int, Any, dict[str, str]]:
    """(status, parsed JSON or text, headers) — never raises for an HTTP error status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw, headers = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        status, raw, headers = exc.code, exc.read(), dict(exc.headers)
    text = raw.decode("utf-8", errors="replace")
    if "json" in headers.get("content-type", ""):
        return status, json.loads(text), headers
    return status, text, headers
