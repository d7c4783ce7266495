"""A screening model when none is given: the ensemble pretrained on public formation energies.

Why: ``synthloop screen`` without ``--model`` should still score with a graph network trained on
something real. As the campaign's surrogate pretrains (``controller/loop/discovery.py``), it learns
Materials Project formation energies, here of the shipped templates whose composition the table
knows (reference CIFs, textbook prototypes, Alexandria structures that coincide with MP phases).
A campaign's own trained ensemble (``--model CAMPAIGN_DIR``) is the better choice when there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def pretraining_set(limit: int | None = None, seed: int = 0) -> tuple[list[Any], np.ndarray]:
    """(structures, MP formation energies eV/atom) of the templates the table knows."""
    from pymatgen.core import Structure  # noqa: PLC0415

    from ..prototypes import template_library  # noqa: PLC0415
    from ..thermo import known_phases  # noqa: PLC0415

    kp = known_phases()
    rows = []
    for t in template_library():
        try:
            e = kp.formation_energy(t["formula"])
        except Exception:  # noqa: BLE001 - a template of an element unknown to the table
            e = None
        if e is not None:
            rows.append((t, float(e)))
    if limit is not None and len(rows) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), size=limit, replace=False))
        rows = [rows[i] for i in pick]
    structures = []
    for t, _ in rows:
        s = Structure.from_dict(t["structure"])
        s.remove_oxidation_states()
        structures.append(s)
    return structures, np.array([e for _, e in rows])


def pretrain_model(*, members: int = 3, epochs: int = 40, hidden: int = 64, limit: int | None = None,
                   seed: int = 0, member_map: Callable | None = None) -> Any:
    """Train an ensemble on :func:`pretraining_set` (``member_map``: run members e.g. as Ray tasks)."""
    from ..ensemble import EnsembleConfig, train_ensemble  # noqa: PLC0415

    structures, energies = pretraining_set(limit, seed)
    cfg = EnsembleConfig(members=members, epochs=epochs, hidden=hidden, seed=seed, workers=1,
                         batch_size=32, patience=max(10, epochs // 3))
    kwargs = {"member_map": member_map} if member_map is not None else {}
    return train_ensemble(structures, {"e_form": energies}, cfg, **kwargs)
