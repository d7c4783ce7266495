"""Crystal graphs, GNN ensembles, BoTorch acquisition over candidate pools, candidate generation
and structure prediction, formula normalisation.

The face of the package: other packages import only the names listed in ``__all__``.
Names are imported lazily (PEP 562) so that ``from surrogates import known_phases`` or a
spawned training worker does not pay for importing BoTorch and the candidate generator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # acquisition over members × candidates tables (BoTorch)
    "OBJECTIVE_KINDS": "acquisition", "STRATEGIES": "acquisition", "BestYield": "acquisition",
    "ColumnObjective": "acquisition", "MemberSampler": "acquisition", "Selection": "acquisition",
    "StableAndMakeable": "acquisition", "TableEnsembleModel": "acquisition",
    "botorch_acquisition": "acquisition", "objective_for": "acquisition",
    "objective_table": "acquisition", "select_batch": "acquisition",
    # candidates and predicted structures
    "Candidate": "candidates", "SubstitutionTable": "candidates",
    "generate_candidates": "candidates", "read_candidate_cifs": "candidates",
    "seed_structures": "candidates",
    "StructurePredictor": "prototypes", "predict_structure": "prototypes",
    "template_library": "prototypes",
    # formula normalisation (one spelling of a compound for every package of the brain)
    "UnknownCompositionError": "formulas", "chemical_system": "formulas",
    "reduced_formula": "formulas",
    # data, models, ensembles
    "DatasetError": "datasets", "read_structure_csv": "datasets",
    "Ensemble": "ensemble", "EnsembleConfig": "ensemble", "PredictionTable": "ensemble",
    "coverage": "ensemble", "train_ensemble": "ensemble",
    "evaluate_regression": "evaluation",
    "CrystalGraph": "graphs", "GraphCache": "graphs", "GraphError": "graphs",
    "build_graph": "graphs", "neighbor_list": "graphs",
    "add_hull_energy": "stability",
    # known phases (Materials Project table)
    "KnownPhase": "thermo", "KnownPhases": "thermo", "known_phases": "thermo",
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
        OBJECTIVE_KINDS,
        STRATEGIES,
        BestYield,
        ColumnObjective,
        MemberSampler,
        Selection,
        StableAndMakeable,
        TableEnsembleModel,
        botorch_acquisition,
        objective_for,
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
    from .formulas import UnknownCompositionError, chemical_system, reduced_formula  # noqa: F401
    from .graphs import CrystalGraph, GraphCache, GraphError, build_graph, neighbor_list  # noqa: F401
    from .prototypes import StructurePredictor, predict_structure, template_library  # noqa: F401
    from .stability import add_hull_energy  # noqa: F401
    from .thermo import KnownPhase, KnownPhases, known_phases  # noqa: F401
