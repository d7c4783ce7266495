"""Crystal graphs, GNN ensembles, BoTorch acquisition over candidate pools, candidate generation.

The face of the package: other packages import only the names listed in ``__all__``.
"""

from .thermo import KnownPhase, KnownPhases, UnknownCompositionError, chemsys_of, known_phases

__all__ = [
    "KnownPhase",
    "KnownPhases",
    "UnknownCompositionError",
    "chemsys_of",
    "known_phases",
]
