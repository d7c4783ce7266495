"""Where the CLI's messages go and how an error ends a command — one home for every group.

Why soft wrap: an error names a path or a formula a user copies into the next command; rich
would otherwise break it at the terminal width (``run[old]`` / ``.xrdml`` on two lines), and
the width a test or a pipe sees differs from a terminal's. Why escaped: rich markup would read
``[old]`` in a path as a style tag and drop it.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

err_console = Console(stderr=True, soft_wrap=True)


def fail(message: object, code: int = 2) -> None:
    """Print ``error: MESSAGE`` on stderr (whole, unstyled text) and end the command with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False)
    raise typer.Exit(code)


def check_out_file(out: Path, option: str = "--out") -> None:
    """Refuse an output file that cannot be written — a folder, or in a folder that does not exist —
    before the command's work starts (fits, world builds: minutes that were lost to a traceback
    at the write). The suffix a writer needs is each command's own check."""
    if out.is_dir():
        fail(f"{option} {out}: is a folder; give a file name")
    if not out.parent.is_dir():
        fail(f"{option} {out}: folder {out.parent} does not exist")
