"""The ``synthloop`` command line (Typer). Each command group lives in its own module."""

from .app import app, main

__all__ = ["app", "main"]
