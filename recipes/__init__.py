"""Precursor library, reaction thermodynamics, initial recipes and active-learning replacement.

The face of the package: other packages import only the names listed in ``__all__``.
"""

from .library import Precursor, PrecursorLibrary, on_shelf, read_stock_file, reduced_formula
from .literature import LiteratureModel, literature_model
from .pathways import PairReaction, PathwayKnowledge
from .planner import STRATEGIES, RecipePlanner
from .replay import CandidateSpace, Outcome, OutcomeTableError, parse_outcomes
from .thermo import Reaction, Thermo, gas_energy_ev
from .types import (
    Exhausted,
    HeatingSegment,
    MissingElementsError,
    Observation,
    PrecursorAmount,
    Recipe,
    RecipeError,
    TargetSpec,
    recipes_tried,
)
from .yield_model import YieldModel

__all__ = [
    "STRATEGIES",
    "CandidateSpace",
    "LiteratureModel",
    "Outcome",
    "OutcomeTableError",
    "literature_model",
    "parse_outcomes",
    "Exhausted",
    "HeatingSegment",
    "MissingElementsError",
    "Observation",
    "PairReaction",
    "PathwayKnowledge",
    "Precursor",
    "PrecursorAmount",
    "PrecursorLibrary",
    "Reaction",
    "Recipe",
    "RecipeError",
    "RecipePlanner",
    "TargetSpec",
    "Thermo",
    "YieldModel",
    "gas_energy_ev",
    "on_shelf",
    "read_stock_file",
    "reduced_formula",
    "recipes_tried",
]
