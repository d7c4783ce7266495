"""Crash drill: kill the controller with SIGKILL at random moments and prove nothing is lost.

Why this is product code and not only a test: a lab that runs unattended for weeks should be
able to rehearse its recovery on demand (``benchmarks/crash.py`` runs 100 kills; the test
suite runs 20). The instruments (a simulated lab with durable ledgers) run in this process's
children and outlive every controller; the controller is a separate ``synthloop run
--external-lab`` process that is killed and restarted. At the end we compare the store with
the instruments' execution ledger.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlmodel import func, select

from ..config import parse_config
from ..store import (
    TERMINAL_STATES,
    Event,
    Experiment,
    ModelVersion,
    StepCommand,
    StepState,
    Store,
)


@dataclass
class DrillReport:
    kills: int
    restarts: int
    finished: bool
    experiments: int
    open_experiments: int
    lost_experiments: int
    unknown_commands: int
    duplicate_executions: int
    executed_commands: int
    commands_not_in_store: int
    wall_s: float
    kill_offsets_s: list[float] = field(default_factory=list)
    stop_reason: str | None = None

    @property
    def ok(self) -> bool:
        return (self.finished and self.open_experiments == 0 and self.lost_experiments == 0
                and self.duplicate_executions == 0 and self.commands_not_in_store == 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drill_config(world: str, systems: list[str], *, seed: int, budget: int, port: int,
                 speedup: float) -> dict:
    return {
        "campaign": {"name": "crash-drill", "seed": seed, "budget": {"max_experiments": budget}},
        "chemical_space": {"systems": systems, "max_candidates": 300,
                           "candidate_sources": [{"kind": "prototypes"}]},
        "surrogate": {"ensemble_size": 2, "hidden": 16, "layers": 1, "epochs": 10, "retrain_every": 6},
        "acquisition": {"strategy": "qlogei", "batch_size": 3},
        "recipes": {"max_recipes_per_target": 3, "yield_threshold": 0.5},
        "lab": {"kind": "simulated", "world": world, "bind": f"tcp://127.0.0.1:{port}",
                "speedup": speedup, "heartbeat_s": 0.25, "lost_after_heartbeats": 6, "step_retries": 2},
        "store": {"url": "sqlite:///campaign.db"},
    }


def _controller_cmd(campaign_dir: Path) -> list[str]:
    return [sys.executable, "-c", "from controller.cli import main; main()", "run", str(campaign_dir),
            "--external-lab", "--no-live"]


def _started_count(store: Store) -> int:
    with store.session() as s:
        return int(s.exec(select(func.count()).select_from(Event)
                          .where(Event.kind == "controller.started")).one())


def _controller_child(campaign_dir: str, log_path: str) -> None:
    """Body of a forked controller process: run the campaign against the external lab."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from .runtime import run_campaign

    run_campaign(campaign_dir, external_lab=True, live=False)


class _Controller:
    """One controller process: forked from this (pre-imported) process, or a fresh exec."""

    def __init__(self, campaign_dir: Path, log_path: Path, *, fork: bool, env: dict[str, str]):
        self.fork = fork
        if fork:
            import multiprocessing

            self.proc = multiprocessing.get_context("fork").Process(
                target=_controller_child, args=(str(campaign_dir), str(log_path)), daemon=False)
            self.proc.start()
        else:
            self._out = open(log_path, "ab")  # noqa: SIM115 - closed in wait/kill
            self.proc = subprocess.Popen(_controller_cmd(campaign_dir), env=env, stdout=self._out,
                                         stderr=self._out)

    def poll(self) -> int | None:
        if self.fork:
            return None if self.proc.is_alive() else self.proc.exitcode
        return self.proc.poll()

    def kill(self) -> None:
        if self.fork:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.join(30)
        else:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self._out.close()

    def wait(self, timeout: float) -> int:
        if self.fork:
            self.proc.join(timeout)
            if self.proc.is_alive():
                self.kill()
                raise TimeoutError(f"controller did not finish within {timeout:.0f} s")
            return int(self.proc.exitcode)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._out.close()


def _has_model(store: Store) -> bool:
    """The first controller is let through its setup (pool + first model) before any kill."""
    with store.session() as s:
        return s.exec(select(ModelVersion.id)).first() is not None


def run_drill(workdir: Path, *, world: str = "demo", points: int = 20, seed: int = 0,
              budget: int = 16, speedup: float = 2e6, max_offset_s: float = 2.5,
              final_timeout_s: float = 240.0, fork: bool = True, log: Any = None) -> DrillReport:
    """Kill the controller ``points`` times at seeded random moments, then let it finish.

    ``fork=True`` forks each controller from this already-imported process (a real, separate
    process killed with SIGKILL, without paying ~5 s of imports per restart); ``fork=False``
    execs ``synthloop run --external-lab`` each time, exactly as an operator would.
    """
    from sim_lab import SimLab, load_world

    say = log or (lambda *_: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    w = load_world(world)
    port = free_port()
    data = drill_config(world, sorted(w.systems), seed=seed, budget=budget, port=port, speedup=speedup)
    parse_config(data, "crash drill config")
    cdir = workdir / "campaign"
    cdir.mkdir(exist_ok=True)
    (cdir / "campaign.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    if fork:  # import now, once, so every forked controller starts at once
        import torch  # noqa: F401

        from recipes import RecipePlanner  # noqa: F401
        from surrogates import train_ensemble  # noqa: F401

        from ..xrd import analyze  # noqa: F401
        from . import runtime  # noqa: F401
    rng = random.Random(seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    log_path = workdir / "controller.log"
    started = time.monotonic()
    kills, restarts, offsets, finished = 0, 0, [], False
    lab = SimLab(w, seed=seed, speedup=speedup, faults=None, workdir=workdir / "lab",
                 heartbeat_s=data["lab"]["heartbeat_s"], lost_after=data["lab"]["lost_after_heartbeats"])
    lab.start(f"tcp://127.0.0.1:{port}", processes=True)
    try:
        with Store.for_campaign_dir(cdir) as store:
            while kills < points:
                before = _started_count(store)
                ctl = _Controller(cdir, log_path, fork=fork, env=env)
                restarts += 1
                # wait until this controller has started its loop (or exited), then a random delay
                t0 = time.monotonic()
                while ctl.poll() is None and time.monotonic() - t0 < 180 and (
                        _started_count(store) == before or not _has_model(store)):
                    time.sleep(0.02)
                offset = rng.uniform(0.0, max_offset_s)
                deadline = time.monotonic() + offset
                while ctl.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                rc = ctl.poll()
                if rc is not None:
                    if rc == 0:
                        finished = True
                        say(f"controller finished on its own after {kills} kills")
                        break
                    raise RuntimeError(f"controller exited with {rc}; see {log_path}")
                ctl.kill()
                kills += 1
                offsets.append(round(offset, 3))
                say(f"kill {kills}/{points} at +{offset:.2f} s")
            if not finished:
                ctl = _Controller(cdir, log_path, fork=fork, env=env)
                restarts += 1
                rc = ctl.wait(final_timeout_s)
                if rc != 0:
                    raise RuntimeError(f"final controller run exited with {rc}; see {log_path}")
                finished = True
            report = _inspect(store, lab.truth())
    finally:
        lab.stop()
    return DrillReport(kills=kills, restarts=restarts, finished=finished, wall_s=time.monotonic() - started,
                       kill_offsets_s=offsets, **report)


def _inspect(store: Store, truth: Any) -> dict[str, Any]:
    """Compare the store with the instruments' ledger."""
    camp = store.get_campaign("crash-drill")
    with store.session() as s:
        exps = s.exec(select(Experiment).where(Experiment.campaign_id == camp.id)).all()
        proposed = s.exec(select(Event).where(Event.campaign_id == camp.id,
                                              Event.kind == "experiment.proposed")).all()
        steps = s.exec(select(StepCommand)).all()
    known_ids = {st.command_id for st in steps}
    ledger = truth.ledger()
    executed = [str(line.get("command_id")) for line in ledger if line.get("command_id")]
    samples_in_lab = {str(sid) for line in ledger for sid in (line.get("sample_ids") or
                                                              [line.get("sample_id")]) if sid}
    samples_in_store = {e.sample_id for e in exps}
    return {
        "experiments": len(exps),
        "open_experiments": sum(e.state not in TERMINAL_STATES for e in exps),
        # lost: an experiment the log says was proposed but whose row is gone, or a sample the
        # lab worked on that the store does not know
        "lost_experiments": (len({ev.entity_id for ev in proposed} - {e.id for e in exps})
                             + len(samples_in_lab - samples_in_store)),
        "unknown_commands": sum(st.state == StepState.UNKNOWN for st in steps),
        "duplicate_executions": int(truth.duplicate_executions()),
        "executed_commands": len(executed),
        "commands_not_in_store": len(set(executed) - known_ids),
        "stop_reason": camp.stop_reason,
    }
