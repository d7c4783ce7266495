"""Ensemble members as Ray tasks: a ``member_map`` for :func:`surrogates.train_ensemble`.

Why a map function and not a second training path: the member training function
(``ensemble._train_member``) stays the one that runs; only *where* it runs changes. The spawn
pool stays the default; a campaign switches to Ray by configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .runner import require_scale_extra


def ray_member_map(address: str | None = None, num_cpus: int | None = None,
                   object_store_mb: int = 400) -> Callable[[Callable, list], list]:
    """A map that runs each payload as a Ray task of one CPU (joins ``address`` or starts a local
    instance on first use and keeps it for later trainings)."""

    def run(fn: Callable[[dict[str, Any]], dict[str, Any]], payloads: list) -> list:
        ray = require_scale_extra()
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         object_store_memory=object_store_mb * 1024 * 1024)
        task = ray.remote(num_cpus=1)(_member_task)
        # every member trains on the same graphs: put them in the object store once
        shared = ray.put(payloads[0]["graphs"]) if payloads else None
        refs = [task.remote(fn, {k: v for k, v in p.items() if k != "graphs"}, shared) for p in payloads]
        return ray.get(refs)

    return run


def _member_task(fn: Callable[[dict[str, Any]], dict[str, Any]], payload: dict[str, Any],
                 graphs: list) -> dict[str, Any]:
    """One member in a Ray worker (the graphs arrive as a top-level argument, so Ray resolves
    them from the object store)."""
    return fn({**payload, "graphs": graphs})
