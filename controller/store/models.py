"""SQLModel tables of a campaign.

One database per campaign directory (SQLite) or one per URL (PostgreSQL). Rows hold plain
values and JSON; the brain's rich objects (pymatgen structures, recipes) are stored in their
JSON form so that the record outlives any change of our Python classes.

Schema changes go through Alembic (``controller/store/migrations``); a test compares these
models with the migrated schema, so a new column without a migration fails the suite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from .states import ExperimentState, StepState, TargetState


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(default: Any = None, nullable: bool = True) -> Any:
    return Field(default=default, sa_column=Column(JSON, nullable=nullable))


class Campaign(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    seed: int = 0
    config_yaml: str = ""
    status: str = Field(default="created")  # created | running | paused | stopping | finished
    stop_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Candidate(SQLModel, table=True):
    """A proposed compound: composition, predicted structure and where it came from."""

    __table_args__ = (UniqueConstraint("campaign_id", "structure_hash", name="uq_candidate_structure"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    formula: str = Field(index=True)  # reduced formula, e.g. "LiMn2O4"
    chemical_system: str = Field(index=True)  # sorted elements, e.g. "Li-Mn-O"
    structure: dict | None = _json()  # pymatgen Structure.as_dict()
    structure_hash: str
    source: str = "unknown"  # substitution | prototypes | cif_dir | known
    provenance: dict | None = _json()
    created_at: datetime = Field(default_factory=utcnow)


class ModelVersion(SQLModel, table=True):
    """One trained model (surrogate ensemble or yield model), its metrics and checkpoint."""

    __table_args__ = (UniqueConstraint("campaign_id", "kind", "version", name="uq_model_version"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    kind: str  # surrogate | yield
    version: int
    n_train: int = 0
    metrics: dict | None = _json()
    checkpoint: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


class Prediction(SQLModel, table=True):
    """What one model version said about one candidate (kept per version, for parity plots)."""

    __table_args__ = (
        UniqueConstraint("candidate_id", "model_version_id", "objective", name="uq_prediction"),
    )

    id: int | None = Field(default=None, primary_key=True)
    candidate_id: int = Field(foreign_key="candidate.id", index=True)
    model_version_id: int = Field(foreign_key="modelversion.id", index=True)
    objective: str  # e_form | e_decomp | yield | acquisition
    mean: float
    std: float | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Target(SQLModel, table=True):
    """A candidate chosen for synthesis."""

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    candidate_id: int | None = Field(default=None, foreign_key="candidate.id", index=True)
    formula: str = Field(index=True)
    state: str = Field(default=TargetState.ACTIVE.value, index=True)
    reason: str | None = None
    acquisition_value: float | None = None
    predicted: dict | None = _json()  # e.g. {"e_decomp": .., "e_decomp_std": .., "p_stable": ..}
    best_yield: float | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Recipe(SQLModel, table=True):
    """One synthesis recipe for a target: precursors, heating profile, rationale."""

    id: int | None = Field(default=None, primary_key=True)
    target_id: int = Field(foreign_key="target.id", index=True)
    ordinal: int = 0  # 1..n in the order the planner proposed them
    precursors: list | None = _json()  # [{"formula": "Li2CO3", "moles": 0.5, "mass_g": ..}, ...]
    profile: list | None = _json()  # [{"ramp_c_per_min": 5, "setpoint_c": 900, "dwell_min": 600}]
    atmosphere: str = "air"
    planner: str = "unknown"  # initial | arrows | random | manual
    rationale: str = ""
    driving_force_mev_per_atom: float | None = None
    predicted_yield: float | None = None
    replaces_recipe_id: int | None = Field(default=None, foreign_key="recipe.id")
    details: dict | None = _json()  # the planner's full record (reaction, pairwise steps, ...)
    created_at: datetime = Field(default_factory=utcnow)


class Experiment(SQLModel, table=True):
    """One run of one recipe on one sample, from proposal to verdict."""

    __table_args__ = (Index("ix_experiment_campaign_state", "campaign_id", "state"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    target_id: int = Field(foreign_key="target.id", index=True)
    recipe_id: int = Field(foreign_key="recipe.id", index=True)
    sample_id: str = Field(index=True, unique=True)
    state: str = Field(default=ExperimentState.PROPOSED.value)
    target_yield: float | None = None
    reason: str | None = None  # free text for people; code reads failure_kind, never this
    failure_kind: str | None = None  # a states.FailureKind value when failed or cancelled, else None
    attempt: int = 1
    # several labs on one campaign (PostgreSQL): the lab whose controller holds the experiment,
    # and until when (database clock); None for a single-controller campaign
    claimed_by: str | None = None
    lease_until: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class StepCommand(SQLModel, table=True):
    """One instrument command, written before it is sent (the idempotency key is its UUID)."""

    id: int | None = Field(default=None, primary_key=True)
    command_id: str = Field(unique=True, index=True)  # UUID sent on the wire; drivers dedupe on it
    experiment_id: int = Field(foreign_key="experiment.id", index=True)
    step: str  # dose_mix | heat | recover | xrd
    sequence: int = 0  # order within the experiment
    attempt: int = 1
    state: str = Field(default=StepState.PENDING.value, index=True)
    driver: str | None = None  # identity of the driver it went to
    lab_id: str | None = None  # the lab whose instruments got it (None: a single-lab campaign)
    payload: dict | None = _json()
    result: dict | None = _json()
    error: str | None = None
    deadline_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Measurement(SQLModel, table=True):
    """An XRD pattern as measured, arrays packed compactly (see ``arrays.py``)."""

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", index=True)
    step_command_id: int | None = Field(default=None, foreign_key="stepcommand.id")
    kind: str = "xrd"
    n_points: int
    two_theta: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    intensities: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    wavelength_angstrom: float = 1.5406
    source: str | None = None  # instrument or file it came from
    meta: dict | None = _json()
    created_at: datetime = Field(default_factory=utcnow)


class PhaseAnalysisRow(SQLModel, table=True):
    """The phases found in one measurement with weight fractions, and the target's yield."""

    __tablename__ = "phaseanalysis"

    id: int | None = Field(default=None, primary_key=True)
    measurement_id: int = Field(foreign_key="measurement.id", index=True)
    experiment_id: int = Field(foreign_key="experiment.id", index=True)
    phases: list | None = _json()  # [{"name": .., "formula": .., "weight_fraction": .., "std": ..}]
    rwp: float | None = None
    target_yield: float | None = None
    method: str = "whole-pattern"
    method_version: str = "1"
    details: dict | None = _json()
    created_at: datetime = Field(default_factory=utcnow)


class LabLease(SQLModel, table=True):
    """One lab's controller working on a campaign: who, its stations, and its heartbeat.

    Why a row: the other controllers of a campaign read from it which labs are alive (a lease in
    the future, on the database's clock) and how many furnace slots the campaign has in all.
    """

    __table_args__ = (UniqueConstraint("campaign_id", "lab_id", name="uq_lablease_lab"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    lab_id: str
    host: str = ""
    pid: int = 0
    capacities: dict | None = _json()  # step -> slots of this lab's stations
    started_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)
    lease_until: datetime = Field(default_factory=utcnow)


class Event(SQLModel, table=True):
    """Append-only log of everything that happened; never updated, never deleted."""

    __table_args__ = (Index("ix_event_campaign_id_id", "campaign_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id")
    ts: datetime = Field(default_factory=utcnow)
    kind: str  # e.g. experiment.transition, target.created, model.trained
    entity: str | None = None
    entity_id: int | None = None
    from_state: str | None = None
    to_state: str | None = None
    actor: str | None = None  # controller | policy:auto | user:NAME | web
    message: str | None = None
    data: dict | None = _json()
