"""Root of the ``synthloop`` command: campaign commands plus the groups other modules add.

Why groups in separate modules: each package's commands (drivers, simulated lab, XRD,
recipes, benchmarks) evolve with that package; this file only wires them together.
"""

from __future__ import annotations

import typer

from . import (
    bench_cmds,
    campaign_cmds,
    driver_cmds,
    recipes_cmds,
    screen_cmds,
    simlab_cmds,
    web_cmds,
    xrd_cmds,
)

app = typer.Typer(
    name="synthloop",
    help="Closed-loop autonomous solid-state synthesis: propose, plan, make, measure, learn.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (campaign_cmds, simlab_cmds, bench_cmds, xrd_cmds, recipes_cmds, driver_cmds, web_cmds,
               screen_cmds):
    module.register(app)


def main() -> None:
    app()
