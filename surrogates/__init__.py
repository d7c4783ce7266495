"""Crystal graphs, GNN ensembles, BoTorch acquisition over candidate pools, candidate generation.

The face of the package: other packages import only the names listed in ``__all__``.
Names are imported lazily (PEP 562) so that ``from surrogates import known_phases`` or a
spawned training worker does not pay for importing BoTorch and the candidate generator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # acquisition over members × candidates tables (BoTorch)
    "STRATEGIES": "acquisition", "BestYield": "acquisition", "ColumnObjective": "acquisition",
    "MemberSampler": "acquisition", "Selection": "acquisition", "StableAndMakeable": "acquisition",
    "TableEnsembleModel": "acquisition", "botorch_acquisition": "acquisition",
    "objective_table": "acquisition", "select_batch": "acquisition",
    # candidates
    "Candidate": "candidates", "SubstitutionTable": "candidates",
    "generate_candidates": "candidates", "read_candidate_cifs": "candidates",
    "seed_structures": "candidates",
    # data, models, ensembles
    "DatasetError": "datasets", "read_structure_csv": "datasets",
    "Ensemble": "ensemble", "EnsembleConfig": "ensemble", "PredictionTable": "ensemble",
    "coverage": "ensemble", "train_ensemble": "ensemble",
    "evaluate_regression": "evaluation",
    "CrystalGraph": "graphs", "GraphCache": "graphs", "GraphError": "graphs",
    "build_graph": "graphs", "neighbor_list": "graphs",
    "add_hull_energy": "stability",
    # known phases (Materials Project table)
    "KnownPhase": "thermo", "KnownPhases": "thermo", "UnknownCompositionError": "thermo",
    "chemsys_of": "thermo", "known_phases": "thermo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'surrogates' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers see the real names
    from .acquisition import (  # noqa: F401
        STRATEGIES,
        BestYield,
        ColumnObjective,
        MemberSampler,
        Selection,
        StableAndMakeable,
        TableEnsembleModel,
        botorch_acquisition,
        objective_table,
        select_batch,
    )
    from .candidates import (  # noqa: F401
        Candidate,
        SubstitutionTable,
        generate_candidates,
        read_candidate_cifs,
        seed_structures,
    )
    from .datasets import DatasetError, read_structure_csv  # noqa: F401
    from .ensemble import (  # noqa: F401
        Ensemble,
        EnsembleConfig,
        PredictionTable,
        coverage,
        train_ensemble,
    )
    from .evaluation import evaluate_regression  # noqa: F401
    from .graphs import CrystalGraph, GraphCache, GraphError, build_graph, neighbor_list  # noqa: F401
    from .stability import add_hull_energy  # noqa: F401
    from .thermo import (  # noqa: F401
        KnownPhase,
        KnownPhases,
        UnknownCompositionError,
        chemsys_of,
        known_phases,
    )
