"""Several simulated labs on one PostgreSQL campaign: run them, optionally SIGKILL one controller,
and check the store against every lab's execution ledger.

Why product code (like ``drill.py``): a group that runs two labs on one campaign should be able
to rehearse it — that each experiment ran on exactly one lab, that a controller killed while it
held claims lost nothing, and how much lab time the second lab saves. ``benchmarks/multilab.py``
prints the figures; ``tests/test_multilab.py`` runs a small case on the test server.

Each lab is a ``SimLab`` (its own instruments, sample store and ledgers, its own ZeroMQ
endpoint) started here and outliving its controller, and a controller process per lab
(``synthloop run DIR --external-lab --lab-id X``) with its
own campaign directory: the same campaign name, seed and PostgreSQL URL, its own ``lab.bind``.
Controllers are exec'd (``synthloop run``), not forked from here: a forked child inherits this
process's state (imported torch, open sockets), which an operator's controller never has.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlmodel import func, select

from ..config import parse_config
from ..store import TERMINAL_STATES, Event, Experiment, ModelVersion, StepCommand, Store
from .drill import free_port
from .labtime import lab_days

CAMPAIGN = "multilab"


@dataclass
class MultiLabReport:
    labs: int
    finished: bool
    stop_reason: str | None
    experiments: int
    experiments_per_lab: dict[str, int]
    lab_days: float
    model_versions: int
    open_experiments: int
    lost_experiments: int
    duplicate_executions: int  # a command executed twice within one lab (its ledger)
    cross_lab_duplicates: int  # a sample worked on by two labs (an experiment run twice)
    experiments_on_two_labs: int  # an experiment whose step rows name two labs
    executed_commands: int
    commands_not_in_store: int
    takeovers: int  # claims taken from a lab whose lease had expired
    kills: int
    restarts: int
    wall_s: float
    cpu_s: float  # the controllers' and simulated stations' CPU (children of this process)
    fingerprint: str
    kill_offsets_s: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.finished and self.open_experiments == 0 and self.lost_experiments == 0
                and self.duplicate_executions == 0 and self.cross_lab_duplicates == 0
                and self.experiments_on_two_labs == 0 and self.commands_not_in_store == 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def multilab_config(world: str, systems: list[str], *, seed: int, budget: int, port: int,
                    speedup: float, store_url: str, lab_id: str | None, lease_s: float,
                    batch_size: int = 3) -> dict:
    """One lab's campaign file: the shared campaign (name, seed, budget, store) + its own lab."""
    lab: dict[str, Any] = {"kind": "simulated", "world": world, "bind": f"tcp://127.0.0.1:{port}",
                           "speedup": speedup, "heartbeat_s": 0.25, "lost_after_heartbeats": 6,
                           "step_retries": 2, "lease_s": lease_s}
    if lab_id is not None:
        lab["id"] = lab_id
    return {
        "campaign": {"name": CAMPAIGN, "seed": seed, "budget": {"max_experiments": budget}},
        "chemical_space": {"systems": systems, "max_candidates": 300,
                           "candidate_sources": [{"kind": "prototypes"}]},
        "surrogate": {"ensemble_size": 2, "hidden": 16, "layers": 1, "epochs": 10, "retrain_every": 6},
        "acquisition": {"strategy": "qlogei", "batch_size": batch_size},
        "recipes": {"max_recipes_per_target": 3, "yield_threshold": 0.5},
        "lab": lab,
        "store": {"url": store_url},
    }


def _start(campaign_dir: Path, log_path: Path, lab_id: str | None, *,
           free_running: bool = False) -> subprocess.Popen:
    """``synthloop run DIR --external-lab [--lab-id X] [--free-running]``, exactly as an operator
    starts a lab's controller (its own process, its output appended to ``log_path``)."""
    cmd = [sys.executable, "-c", "from controller.cli import main; main()", "run", str(campaign_dir),
           "--external-lab", "--no-live"] + (["--lab-id", lab_id] if lab_id else []) \
        + (["--free-running"] if free_running else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, env=env)


def _lab_steps(store: Store, lab_id: str) -> int:
    with store.session() as s:
        return int(s.exec(select(func.count()).select_from(StepCommand)
                          .where(StepCommand.lab_id == lab_id)).one())


def run_multilab(workdir: Path, store_url: str, *, world: str = "demo", labs: int = 2, seed: int = 0,
                 budget: int = 12, furnaces: int = 1, speedup: float = 2e6, lease_s: float = 3.0,
                 kill_lab: int | None = None, kill_after_steps: int = 4, max_offset_s: float = 1.0,
                 restart_after_s: float | None = None, timeout_s: float = 600.0,
                 batch_size: int = 3, free_running: bool = False, shared: bool = False,
                 sim_processes: bool = True, log: Any = None) -> MultiLabReport:
    """Run one campaign on ``labs`` simulated labs sharing ``store_url`` (an empty PostgreSQL
    database; ``labs=1`` without a lab id = the single-controller baseline, any store;
    ``labs=1, shared=True``: one lab with a lab id, i.e. the several-labs rules with one lab —
    the control that tells what the second lab adds from what those rules add).

    ``kill_lab``: SIGKILL that lab's controller once its instruments have got
    ``kill_after_steps`` steps (plus a seeded offset up to ``max_offset_s``), and restart it
    ``restart_after_s`` later (default: one lease, so the other labs take back its unstarted
    claims meanwhile). Every lab runs ``furnaces`` furnaces of the world's capacity.
    ``free_running``: the controllers decide as results arrive (real instruments' default)
    instead of in lockstep rounds. ``sim_processes=False``: the simulated stations run as threads of
    this process (a test: the same instruments and ledgers without three interpreter start-ups
    per lab; the controllers stay processes of their own, which is what a SIGKILL is about).
    """
    from sim_lab import SimLab, load_world

    say = log or (lambda *_: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    w = load_world(world)
    ids = [None] if labs == 1 and not shared else [chr(ord("A") + i) for i in range(labs)]
    names = [i or "solo" for i in ids]
    ports = {n: free_port() for n in names}
    dirs: dict[str, Path] = {}
    for lab_id, name in zip(ids, names, strict=True):
        data = multilab_config(world, sorted(w.systems), seed=seed, budget=budget, port=ports[name],
                               speedup=speedup, store_url=store_url, lab_id=lab_id, lease_s=lease_s,
                               batch_size=batch_size)
        parse_config(data, f"multilab config ({name})")
        d = workdir / f"lab-{name}"
        d.mkdir(exist_ok=True)
        (d / "campaign.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        dirs[name] = d
    rng = random.Random(seed)
    cpu0 = _children_cpu()
    started = time.monotonic()
    sims: dict[str, Any] = {}
    procs: dict[str, Any] = {}
    kills, restarts, offsets = 0, 0, []
    try:
        for name in names:
            sims[name] = SimLab(w, seed=seed, speedup=speedup, workdir=workdir / f"sim-{name}",
                                heartbeat_s=0.25, lost_after=6, furnaces=furnaces)
            sims[name].start(f"tcp://127.0.0.1:{ports[name]}", processes=sim_processes)
        for lab_id, name in zip(ids, names, strict=True):
            procs[name] = _start(dirs[name], workdir / f"controller-{name}.log", lab_id,
                                 free_running=free_running)
            restarts += 1
        if kill_lab is not None:
            victim_id, victim = ids[kill_lab], names[kill_lab]
            with Store(store_url, migrate=False) as store:
                while procs[victim].poll() is None and time.monotonic() - started < timeout_s:
                    try:
                        if _lab_steps(store, victim_id) >= kill_after_steps:
                            break
                    except Exception:  # noqa: BLE001 - tables not created yet by the first controller
                        pass
                    time.sleep(0.05)
            offset = rng.uniform(0.0, max_offset_s)
            time.sleep(offset)
            if procs[victim].poll() is None:
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait(30)
                kills += 1
                offsets.append(round(offset, 3))
                say(f"SIGKILLed the controller of lab {victim} at +{time.monotonic() - started:.1f} s")
                time.sleep(lease_s + 0.5 if restart_after_s is None else restart_after_s)
                procs[victim] = _start(dirs[victim], workdir / f"controller-{victim}.log", victim_id,
                                       free_running=free_running)
                restarts += 1
                say(f"restarted the controller of lab {victim}")
        deadline = started + timeout_s
        for name, proc in procs.items():
            try:
                rc = proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"controller of lab {name} did not finish within {timeout_s:.0f} s; "
                                   f"see {workdir}/controller-{name}.log") from None
            if rc != 0:
                raise RuntimeError(f"controller of lab {name} exited with {rc}; "
                                   f"see {workdir}/controller-{name}.log")
        with Store(store_url, migrate=False) as store:
            report = _inspect(store, {n: sims[n].truth() for n in names})
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
        for sim in sims.values():
            sim.stop()
    return MultiLabReport(labs=labs, kills=kills, restarts=restarts, kill_offsets_s=offsets,
                          wall_s=round(time.monotonic() - started, 2),
                          cpu_s=round(_children_cpu() - cpu0, 1), **report)


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (controllers, stations)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _inspect(store: Store, truths: dict[str, Any]) -> dict[str, Any]:
    """The store against every lab's ledger (the truth is read here, never by a controller)."""
    from .records import CampaignRecords

    camp = store.get_campaign(CAMPAIGN)
    with store.session() as s:
        exps = s.exec(select(Experiment).where(Experiment.campaign_id == camp.id)).all()
        proposed = s.exec(select(Event.entity_id).where(Event.campaign_id == camp.id,
                                                        Event.kind == "experiment.proposed")).all()
        steps = s.exec(select(StepCommand)).all()
        takeovers = [ev for ev in s.exec(select(Event).where(Event.campaign_id == camp.id,
                                                             Event.kind == "experiment.claimed")).all()
                     if (ev.data or {}).get("from")]
        versions = int(s.exec(select(func.count()).select_from(ModelVersion)
                              .where(ModelVersion.campaign_id == camp.id)).one())
        days = lab_days(store, camp.id, session=s)
    known = {st.command_id for st in steps}
    labs_of_exp: dict[int, set[str | None]] = defaultdict(set)
    for st in steps:
        labs_of_exp[st.experiment_id].add(st.lab_id)
    samples_by_lab: dict[str, set[str]] = {}
    executed: set[str] = set()
    per_lab: dict[str, int] = {}
    for name, truth in truths.items():
        ledger = truth.ledger()
        executed |= {str(line["command_id"]) for line in ledger if line.get("command_id")}
        samples_by_lab[name] = {str(line["sample_id"]) for line in ledger if line.get("sample_id")}
        per_lab[name] = len(samples_by_lab[name])
    seen: dict[str, int] = defaultdict(int)
    for samples in samples_by_lab.values():
        for sid in samples:
            seen[sid] += 1
    in_store = {e.sample_id for e in exps}
    in_labs = set(seen)
    return {
        "finished": camp.status == "finished",
        "stop_reason": camp.stop_reason,
        "experiments": sum(e.state != "cancelled" for e in exps),
        "experiments_per_lab": per_lab,
        "lab_days": round(days, 3),
        "model_versions": versions,
        "open_experiments": sum(e.state not in TERMINAL_STATES for e in exps),
        "lost_experiments": len(set(proposed) - {e.id for e in exps}) + len(in_labs - in_store),
        "duplicate_executions": sum(int(t.duplicate_executions()) for t in truths.values()),
        "cross_lab_duplicates": sum(n - 1 for n in seen.values() if n > 1),
        "experiments_on_two_labs": sum(1 for labs in labs_of_exp.values() if len(labs) > 1),
        "executed_commands": len(executed),
        "commands_not_in_store": len(executed - known),
        "takeovers": len(takeovers),
        "fingerprint": CampaignRecords(store, camp.id).fingerprint(),
    }
