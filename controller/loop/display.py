"""Live progress of a running campaign in the terminal (rich): a bar and a compact table.

Why from the store: what the screen shows is what is recorded, so a person watching sees the
same truth as ``synthloop status`` and the report, and a restarted controller shows the
campaign's whole history, not just this process's part.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlmodel import select

from ..store import VERDICT_STATES, Experiment, ExperimentState, Store, Target


class LiveView:
    """Redraws at most ``hz`` times a second from the store (call :meth:`update` freely)."""

    def __init__(self, store: Store, budget: int, *, hz: float = 4.0, rows: int = 12):
        self.store = store
        self.budget = budget
        self.rows = rows
        self.period = 1.0 / hz
        self._last = 0.0
        self._cid: int | None = None
        self.progress = Progress(TextColumn("[bold]experiments"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn())
        self.task = self.progress.add_task("exp", total=budget, info="")
        self.live = Live(self.progress, refresh_per_second=hz, transient=False)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.update(None, force=True)
        self.live.__exit__(*exc)

    def update(self, runner: Any, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.period:
            return
        self._last = now
        campaign_id = getattr(runner, "campaign_id", None) or self._cid
        if not campaign_id:
            return
        self._cid = campaign_id
        with self.store.session() as s:
            exps = s.exec(select(Experiment).where(Experiment.campaign_id == campaign_id)
                          .order_by(Experiment.id)).all()
            targets = s.exec(select(Target).where(Target.campaign_id == campaign_id)
                             .order_by(Target.id)).all()
        finished = sum(e.state in VERDICT_STATES for e in exps)
        made = sum(t.state == "made" for t in targets)
        running = sum(e.state in (ExperimentState.RUNNING, ExperimentState.QUEUED) for e in exps)
        self.progress.update(self.task, completed=finished,
                             info=f"{made} made / {len(targets)} targets · {running} on instruments")
        table = Table("target", "state", "recipes", "yields", box=None, padding=(0, 1))
        by_target: dict[int, list[Experiment]] = {}
        for e in exps:
            by_target.setdefault(e.target_id, []).append(e)
        shown = sorted(targets, key=lambda t: (t.state != "active", -t.id))[: self.rows]
        for t in shown:
            ys = [e.target_yield for e in by_target.get(t.id, []) if e.target_yield is not None]
            colour = {"made": "green", "exhausted": "red", "active": "yellow"}.get(t.state, "white")
            table.add_row(t.formula, f"[{colour}]{t.state}[/]", str(len(by_target.get(t.id, []))),
                          " ".join(f"{y:.2f}" for y in ys[-5:]) or "…")
        self.live.update(Group(self.progress, table))

