"""Crystal graphs, GNN ensembles, BoTorch acquisition over candidate pools, candidate generation.

The face of the package: other packages import only the names listed in ``__all__``.
"""

from .acquisition import (
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
from .candidates import (
    Candidate,
    SubstitutionTable,
    generate_candidates,
    read_candidate_cifs,
    seed_structures,
)
from .datasets import DatasetError, read_structure_csv
from .ensemble import Ensemble, EnsembleConfig, PredictionTable, coverage, train_ensemble
from .evaluation import evaluate_regression
from .graphs import CrystalGraph, GraphCache, GraphError, build_graph, neighbor_list
from .thermo import KnownPhase, KnownPhases, UnknownCompositionError, chemsys_of, known_phases

__all__ = [
    "STRATEGIES",
    "BestYield",
    "Candidate",
    "ColumnObjective",
    "CrystalGraph",
    "DatasetError",
    "Ensemble",
    "EnsembleConfig",
    "GraphCache",
    "GraphError",
    "KnownPhase",
    "KnownPhases",
    "MemberSampler",
    "PredictionTable",
    "Selection",
    "StableAndMakeable",
    "SubstitutionTable",
    "TableEnsembleModel",
    "UnknownCompositionError",
    "botorch_acquisition",
    "build_graph",
    "chemsys_of",
    "coverage",
    "evaluate_regression",
    "generate_candidates",
    "known_phases",
    "neighbor_list",
    "objective_table",
    "read_candidate_cifs",
    "read_structure_csv",
    "seed_structures",
    "select_batch",
    "train_ensemble",
]
