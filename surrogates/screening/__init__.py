"""Screening at scale: a pool of 10^6 candidates through a staged funnel, in Ray tasks.

``pool`` reads the pool lazily in chunks, ``composition`` and ``funnel`` are the stages a worker
runs on a chunk, ``runner`` drives the workers (Ray actors) and writes one Parquet file per chunk
plus a manifest, ``results`` reads survivors back (a campaign's candidate source). Ray and
pyarrow are the optional ``scale`` extra; nothing here imports them until a screen runs.
"""

from __future__ import annotations

from .funnel import STAGES, FunnelSettings
from .pool import PoolError

__all__ = ["STAGES", "FunnelSettings", "PoolError", "ScreenError", "ScreenOptions", "format_screen_summary",
           "format_summary", "pretrain_model", "pretrain_screen_model", "ray_member_map", "read_done", "read_screen_candidates", "read_survivors",
           "run_screen"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: these load Ray/pyarrow only when used
    if name in ("run_screen", "ScreenOptions", "ScreenError", "format_summary", "read_done",
                "format_screen_summary"):
        from . import runner  # noqa: PLC0415

        return getattr(runner, name.replace("format_screen_summary", "format_summary"))
    if name == "read_survivors":
        from .results import read_survivors  # noqa: PLC0415

        return read_survivors
    if name == "ray_member_map":
        from .training import ray_member_map  # noqa: PLC0415

        return ray_member_map
    if name in ("pretrain_model", "pretrain_screen_model"):
        from .model import pretrain_model  # noqa: PLC0415

        return pretrain_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_screen_candidates(out, top=None):  # noqa: ANN001, ANN201 - the face's name for read_survivors
    """The best ``top`` survivors of a screen output folder as ``surrogates.Candidate``."""
    from .results import read_survivors  # noqa: PLC0415

    return read_survivors(out, top)
