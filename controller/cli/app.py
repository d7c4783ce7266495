"""Root of the ``synthloop`` command: campaign commands plus the groups other modules add.

Why groups in separate modules: each package's commands (drivers, simulated lab, XRD,
recipes, benchmarks) evolve with that package; this file only wires them together.
"""

from __future__ import annotations

import typer

from . import campaign_cmds

app = typer.Typer(
    name="synthloop",
    help="Closed-loop autonomous solid-state synthesis: propose, plan, make, measure, learn.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

campaign_cmds.register(app)

# Command groups contributed by other parts of the system are added below, one line each.
# (keep this marker line: each group inserts its registration right after it)
__import__(f"{__package__}.simlab_cmds", fromlist=["register"]).register(app)  # sim-lab
__import__(f"{__package__}.bench_campaign_cmds", fromlist=["register"]).register(__import__(f"{__package__}.bench_cmds", fromlist=["bench_app"]).bench_app)  # bench campaign
__import__(f"{__package__}.bench_cmds", fromlist=["register"]).register(app)  # bench surrogate, campaign
__import__(f"{__package__}.xrd_cmds", fromlist=["register"]).register(app)  # xrd analyze, plot
__import__(f"{__package__}.recipes_cmds", fromlist=["register"]).register(app)  # recipes
__import__(f"{__package__}.driver_cmds", fromlist=["register"]).register(app)  # driver, keys
__import__(f"{__package__}.web_cmds", fromlist=["register"]).register(app)  # synthloop serve
__import__(f"{__package__}.screen_cmds", fromlist=["register"]).register(app)  # synthloop screen


def main() -> None:
    app()
