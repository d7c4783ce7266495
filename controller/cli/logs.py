"""Where a running controller's log goes: a rotating file in the campaign directory.

Why a file and not only the terminal: a campaign runs for days behind a live progress view that
redraws the terminal, and the questions a lab engineer asks afterwards ("why did the driver
reconnect at 03:12?", "when did the model retrain?") need the INFO records kept beside the
campaign's store. Warnings and errors are also printed to stderr, so a problem is never silent.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

LOG_DIR = "logs"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_MAX_BYTES = 20 * 1024 * 1024
_BACKUPS = 5


class LogLevelError(ValueError):
    """A log level that is not one of Python's level names."""


def parse_level(name: str) -> int:
    """The numeric level of DEBUG / INFO / WARNING / ERROR / CRITICAL (any case)."""
    level = logging.getLevelName(name.strip().upper())
    if not isinstance(level, int):
        raise LogLevelError(f"--log-level {name!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def campaign_logging(campaign_dir: Path, level: str | int = "INFO", *, name: str = "controller") -> Path:
    """Send log records at LEVEL and above to CAMPAIGN_DIR/logs/NAME.log; WARNING+ to stderr too.

    Idempotent: a second call (tests run several campaigns in one process) replaces the handlers
    it installed before instead of stacking them. Returns the log file's path.
    """
    numeric = level if isinstance(level, int) else parse_level(level)
    log_dir = Path(campaign_dir) / LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{name}.log"
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_synthloop_campaign", False)]:
        root.removeHandler(handler)
        handler.close()
    file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=_MAX_BYTES, backupCount=_BACKUPS,
                                                        encoding="utf-8")
    file_handler.setLevel(numeric)
    stderr_handler = logging.StreamHandler()
    stderr_handler.setLevel(max(numeric, logging.WARNING))
    for handler in (file_handler, stderr_handler):
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._synthloop_campaign = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(min(root.level, numeric))  # NOTSET (0) already lets every record through
    return path
