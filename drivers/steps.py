"""Parameters and results of the four solid-state synthesis steps, as pydantic models.

Why here and not in each instrument: the controller builds these dicts and the drivers (real or
simulated) consume them; one schema on the wire keeps both honest. The SDK validates the params
of a standard capability before ``execute`` runs (a bad command fails without touching the
instrument) and validates the returned result before it is stored and sent.

Params forbid unknown keys (a typo such as ``setpiont_c`` is an error); results allow extra
keys so an instrument can report more than the minimum (every result may carry
``sim_time_min``, the simulated duration, so the controller can report lab days).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

STANDARD_CAPABILITIES = ("dose_mix", "heat", "recover", "xrd")


class StepError(ValueError):
    """Params or result of a step that do not match its schema; the message names the field."""


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")

    sim_time_min: float | None = Field(default=None, ge=0, allow_inf_nan=False)


_SampleId = Field(min_length=1, max_length=200)


class PrecursorTarget(_Params):
    formula: str = Field(min_length=1, max_length=100)
    target_mass_g: float = Field(gt=0, le=1000, allow_inf_nan=False)


class DoseMixParams(_Params):
    sample_id: str = _SampleId
    precursors: list[PrecursorTarget] = Field(min_length=1, max_length=20)


class Dispensed(BaseModel):
    formula: str = Field(min_length=1)
    mass_g: float = Field(ge=0, allow_inf_nan=False)


class DoseMixResult(_Result):
    sample_id: str
    dispensed: list[Dispensed]
    location: str


class HeatSegment(_Params):
    ramp_c_per_min: float = Field(gt=0, le=100, allow_inf_nan=False)
    setpoint_c: float = Field(ge=0, le=2000, allow_inf_nan=False)
    dwell_min: float = Field(ge=0, le=10_000, allow_inf_nan=False)


class HeatParams(_Params):
    sample_ids: list[str] = Field(min_length=1, max_length=100)
    profile: list[HeatSegment] = Field(min_length=1, max_length=20)
    atmosphere: Literal["air", "O2", "N2", "Ar"] = "air"


class HeatResult(_Result):
    sample_ids: list[str]
    duration_min: float = Field(ge=0, allow_inf_nan=False)
    max_temperature_c: float = Field(allow_inf_nan=False)


class RecoverParams(_Params):
    sample_id: str = _SampleId
    grind: bool = True


class RecoverResult(_Result):
    sample_id: str
    mass_g: float = Field(ge=0, allow_inf_nan=False)
    location: str


class XrdParams(_Params):
    sample_id: str = _SampleId
    two_theta_start: float = Field(default=10.0, ge=0, lt=180, allow_inf_nan=False)
    two_theta_end: float = Field(default=80.0, gt=0, le=180, allow_inf_nan=False)
    step: float = Field(default=0.02, gt=0, le=5, allow_inf_nan=False)
    scan_time_min: float = Field(default=8.0, gt=0, le=24 * 60, allow_inf_nan=False)

    @model_validator(mode="after")
    def _range(self) -> XrdParams:
        if self.two_theta_end <= self.two_theta_start:
            raise ValueError(
                f"two_theta_end ({self.two_theta_end}) must exceed two_theta_start "
                f"({self.two_theta_start})"
            )
        if (self.two_theta_end - self.two_theta_start) / self.step > 200_000:
            raise ValueError("more than 200000 points: increase step")
        return self


class XrdResult(_Result):
    sample_id: str
    two_theta: list[float]
    intensities: list[float]
    wavelength_angstrom: float = Field(default=1.5406, gt=0, allow_inf_nan=False)
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _same_length(self) -> XrdResult:
        if len(self.two_theta) != len(self.intensities):
            raise ValueError(
                f"two_theta has {len(self.two_theta)} points but intensities "
                f"{len(self.intensities)}"
            )
        return self


STEP_MODELS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "dose_mix": (DoseMixParams, DoseMixResult),
    "heat": (HeatParams, HeatResult),
    "recover": (RecoverParams, RecoverResult),
    "xrd": (XrdParams, XrdResult),
}


def _explain(kind: str, capability: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        if err.get("type") == "missing":
            parts.append(f"{loc}: required field missing")
            continue
        shown = repr(err.get("input"))
        if len(shown) > 60:
            shown = shown[:57] + "..."
        parts.append(f"{loc}={shown}: {err.get('msg', 'invalid')}")
    return f"{capability} {kind}: " + "; ".join(parts)


def validate_params(capability: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validated params of a standard step (defaults filled in); other capabilities pass through.

    Raises :class:`StepError` naming the field and value.
    """
    models = STEP_MODELS.get(capability)
    if models is None:
        return dict(params)
    try:
        return models[0].model_validate(params).model_dump(mode="json")
    except ValidationError as exc:
        raise StepError(_explain("params", capability, exc)) from None


def validate_result(capability: str, result: dict[str, Any]) -> dict[str, Any]:
    """Validated result payload of a standard step; other capabilities pass through.

    Raises :class:`StepError`. Extra keys are kept; ``sim_time_min`` is dropped when None.
    """
    if not isinstance(result, dict):
        raise StepError(f"{capability} result must be a dict, got {type(result).__name__}")
    models = STEP_MODELS.get(capability)
    if models is None:
        return dict(result)
    try:
        return models[1].model_validate(result).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        raise StepError(_explain("result", capability, exc)) from None


def example_params(capability: str, sample_id: str = "S-conformance-1") -> dict[str, Any]:
    """Small valid params for a standard step (used by the conformance kit and examples)."""
    examples: dict[str, dict[str, Any]] = {
        "dose_mix": {
            "sample_id": sample_id,
            "precursors": [
                {"formula": "Li2CO3", "target_mass_g": 0.37},
                {"formula": "Fe2O3", "target_mass_g": 0.8},
            ],
        },
        "heat": {
            "sample_ids": [sample_id],
            "profile": [{"ramp_c_per_min": 10.0, "setpoint_c": 800.0, "dwell_min": 60.0}],
            "atmosphere": "air",
        },
        "recover": {"sample_id": sample_id, "grind": True},
        "xrd": {
            "sample_id": sample_id,
            "two_theta_start": 10.0,
            "two_theta_end": 80.0,
            "step": 0.02,
            "scan_time_min": 8.0,
        },
    }
    if capability not in examples:
        raise KeyError(f"no example params for non-standard capability {capability!r}")
    return examples[capability]
