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
        if not self.live.console.is_terminal:
            # rich leaves the last frame without a line end when output is a file or a pipe
            # (a CI log, `synthloop demo | tee`): the next line would continue the table's last row
            self.live.console.line()

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



def print_demo_outcome(console: Any, outcome: Any, directory: Any) -> None:
    """The demo's closing summary: per target the recipes in the order they ran (a replacement
    marked with the failed recipe it replaced), their yields, what was made, where the store and
    report are and what to try next. Why: it is the first thing a new user reads, so it must say
    what the loop did in words, not leave them to decode a progress bar.

    ``outcome`` is a :class:`controller.loop.demo.DemoOutcome` (the report's path is printed by
    the campaign's own closing line).
    """
    table = Table("target", "recipe (balanced reaction)", "peak °C", "yield", "", box=None,
                  padding=(0, 1), title="what the loop did, target by target", title_justify="left")
    for t in outcome.targets:
        colour = {"made": "green", "exhausted": "red"}.get(t.state, "yellow")
        first = True
        for r in t.recipes:
            how = ("[green]reached the target[/]" if r.succeeded
                   else "[yellow]not confirmed[/]" if r.unconfirmed else "[red]failed[/]")
            if r.replaces is not None:
                how += f" · replaced recipe {r.replaces}"
            ys = ", ".join(f"{y:.2f}" for y in r.yields) or "–"
            table.add_row(f"[{colour}]{t.formula}[/] ({t.state})" if first else "",
                          f"{r.ordinal}. {r.reaction}",
                          f"{r.peak_c:.0f}" if r.peak_c else "–", ys, how)
            first = False
        if first:
            table.add_row(f"[{colour}]{t.formula}[/] ({t.state})", "(no recipe run)", "", "", "")
    console.print(table)
    made = ", ".join(outcome.made) or "none"
    console.print(f"[bold]made {len(outcome.made)} of {len(outcome.targets)} targets[/] ({made}) in "
                  f"{outcome.experiments} experiments; {outcome.replaced} failed recipe(s) replaced by "
                  f"the planner, {outcome.replaced_succeeded} of the replacements reached the target.",
                  highlight=False)
    console.print("A target is [green]made[/] when the XRD analysis finds it at ≥ the yield threshold "
                  "with confidence ([yellow]not confirmed[/]: the fit could not tell it from a "
                  "look-alike, so the loop repeats or moves on instead of claiming it); after a "
                  "failure the planner proposes a new recipe from the phases the failed sample "
                  "contained (intermediates that ate the driving force).", highlight=False)
    console.print(f"store: {directory}/campaign.db   ·   `synthloop status {directory}`   ·   "
                  f"web app: `synthloop serve {directory}`", highlight=False)
    console.print(f"log: {directory}/logs/controller.log (what the loop did, event by event)",
                  highlight=False, soft_wrap=True)
    console.print("next: `synthloop init my-campaign` writes an editable campaign.yaml "
                  "(chemical space, budget, lab); `synthloop run my-campaign` runs it; "
                  "`synthloop sim-lab build-world --systems Li-Fe-P-O --out w.json.bz2` makes a "
                  "simulated lab for your own chemistry.", highlight=False)
