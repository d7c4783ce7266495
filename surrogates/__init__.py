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
    # multi-objective, cost-aware acquisition (qNEHVI over members × candidates × 2 objectives)
    "ParetoSelection": "multiobjective", "botorch_qlognehvi": "multiobjective",
    "select_pareto_batch": "multiobjective",
    # candidates and predicted structures
    "Candidate": "candidates", "SubstitutionTable": "candidates",
    "generate_candidates": "candidates", "read_candidate_cifs": "candidates",
    "seed_structures": "candidates", "partial_substitutions": "partial",
    "aliovalent_substitutions": "partial", "enumerate_prototypes": "enumeration",
    "build_candidate_pool": "candidate_pool", "PoolSettings": "candidate_pool",
    "PoolReport": "candidate_pool",
    "StructurePredictor": "prototypes", "predict_structure": "prototypes",
    "template_library": "prototypes", "TEMPLATE_KINDS": "prototypes",
    # relaxation of predicted structures (offline SevenNet-0, optional `sevenn`)
    "RELAXERS": "relax", "Relaxation": "relax", "Relaxer": "relax",
    "RelaxerUnavailable": "relax", "make_relaxer": "relax", "sevenn_available": "relax",
    # formula normalisation (one spelling of a compound for every package of the brain)
    "UnknownCompositionError": "formulas", "chemical_system": "formulas",
    "reduced_formula": "formulas",
    # data, models, ensembles
    "DatasetError": "datasets", "read_structure_csv": "datasets",
    "Ensemble": "ensemble", "EnsembleConfig": "ensemble", "PredictionTable": "ensemble",
    "coverage": "ensemble", "train_ensemble": "ensemble",
    # pretrained prior (SevenNet-0 energy + residual ensemble; optional `sevenn`)
    "DeltaEnsemble": "pretrained", "LinearPrior": "pretrained", "PretrainedEnergy": "pretrained",
    "PretrainedUnavailable": "pretrained", "train_delta_ensemble": "pretrained",
    "KernelPrior": "kernel_prior", "PotentialFeatures": "prior_features",
    "PotentialFeaturesUnavailable": "prior_features",
    "evaluate_regression": "evaluation",
    "CrystalGraph": "graphs", "GraphCache": "graphs", "GraphError": "graphs",
    "build_graph": "graphs", "neighbor_list": "graphs",
    "add_hull_energy": "stability",
    # screening at scale (the optional scale extra: Ray, pyarrow)
    "FunnelSettings": "screening", "PoolError": "screening", "ScreenError": "screening",
    "ScreenOptions": "screening", "format_screen_summary": "screening",
    "pretrain_screen_model": "screening", "ray_member_map": "screening",
    "read_screen_candidates": "screening", "run_screen": "screening",
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
    from .candidate_pool import PoolReport, PoolSettings, build_candidate_pool  # noqa: F401
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
    from .enumeration import enumerate_prototypes  # noqa: F401
    from .evaluation import evaluate_regression  # noqa: F401
    from .formulas import UnknownCompositionError, chemical_system, reduced_formula  # noqa: F401
    from .graphs import CrystalGraph, GraphCache, GraphError, build_graph, neighbor_list  # noqa: F401
    from .kernel_prior import KernelPrior  # noqa: F401
    from .multiobjective import ParetoSelection, botorch_qlognehvi, select_pareto_batch  # noqa: F401
    from .partial import aliovalent_substitutions, partial_substitutions  # noqa: F401
    from .pretrained import (  # noqa: F401
        DeltaEnsemble,
        LinearPrior,
        PretrainedEnergy,
        PretrainedUnavailable,
        train_delta_ensemble,
    )
    from .prior_features import PotentialFeatures, PotentialFeaturesUnavailable  # noqa: F401
    from .prototypes import (  # noqa: F401
        TEMPLATE_KINDS,
        StructurePredictor,
        predict_structure,
        template_library,
    )
    from .relax import (  # noqa: F401
        RELAXERS,
        Relaxation,
        Relaxer,
        RelaxerUnavailable,
        make_relaxer,
        sevenn_available,
    )
    from .stability import add_hull_energy  # noqa: F401
    from .thermo import KnownPhase, KnownPhases, known_phases  # noqa: F401
