"""The campaign store: SQLModel tables, the experiment state machine, migrations."""

from .arrays import pack_array, unpack_array
from .models import (
    Campaign,
    Candidate,
    Event,
    Experiment,
    LabLease,
    Measurement,
    ModelVersion,
    PhaseAnalysisRow,
    Prediction,
    Recipe,
    StepCommand,
    Target,
    utcnow,
)
from .scratch import scratch_database
from .states import (
    IN_FLIGHT,
    NOT_STARTED,
    OPEN_STATES,
    RUNNABLE,
    STEP_TRANSITIONS,
    TERMINAL_STATES,
    TRANSITIONS,
    VERDICT_STATES,
    ExperimentState,
    FailureKind,
    IllegalTransition,
    StepState,
    TargetState,
    check_transition,
)
from .store import AppendOnlyViolation, Store, StoreError, StoreErrorKind, iso, resolve_url

__all__ = [
    "scratch_database",
    "IN_FLIGHT", "NOT_STARTED", "OPEN_STATES", "RUNNABLE", "STEP_TRANSITIONS", "TERMINAL_STATES",
    "TRANSITIONS", "VERDICT_STATES",
    "AppendOnlyViolation", "Campaign", "Candidate", "Event", "Experiment", "ExperimentState", "FailureKind",
    "IllegalTransition", "LabLease", "Measurement", "ModelVersion", "PhaseAnalysisRow", "Prediction", "Recipe",
    "StepCommand", "StepState", "Store", "StoreError", "StoreErrorKind", "Target", "TargetState", "check_transition",
    "iso", "pack_array", "resolve_url", "unpack_array", "utcnow",
]
