"""The plain values that cross the recipes boundary (frozen, JSON-serialisable dataclasses).

Why frozen dataclasses rather than pydantic: the planner is a pure function of its inputs,
and immutable values make that true by construction (a caller cannot mutate a recipe the
planner already reasoned about). ``to_dict``/``from_dict`` give the controller JSON for SQL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class RecipeError(ValueError):
    """A request the planner cannot serve; the message names the problem (formula, element...)."""


class MissingElementsError(RecipeError):
    """No stocked precursor provides some element of the target."""

    def __init__(self, target: str, missing: list[str]) -> None:
        self.target = target
        self.missing = sorted(missing)
        super().__init__(
            f"cannot make {target}: no stocked precursor provides element(s) "
            f"{', '.join(self.missing)}; add a precursor containing "
            f"{' and '.join(self.missing)} to the stock"
        )


@dataclass(frozen=True)
class PrecursorAmount:
    """One weighed powder of a recipe."""

    formula: str
    moles: float
    mass_g: float

    def to_dict(self) -> dict[str, Any]:
        return {"formula": self.formula, "moles": self.moles, "mass_g": self.mass_g}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrecursorAmount:
        return cls(str(d["formula"]), float(d["moles"]), float(d["mass_g"]))


@dataclass(frozen=True)
class HeatingSegment:
    """Ramp to ``setpoint_c`` at ``ramp_c_per_min`` and hold for ``dwell_min``."""

    ramp_c_per_min: float
    setpoint_c: float
    dwell_min: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "ramp_c_per_min": self.ramp_c_per_min,
            "setpoint_c": self.setpoint_c,
            "dwell_min": self.dwell_min,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeatingSegment:
        return cls(float(d["ramp_c_per_min"]), float(d["setpoint_c"]), float(d["dwell_min"]))


@dataclass(frozen=True)
class Recipe:
    """A complete synthesis instruction for one target, with the planner's reasons.

    ``details`` carries the balanced reaction, predicted intermediates, the features the yield
    model saw, and the target energy used, so a later ``replace`` call can reason about the
    recipe without recomputing (and a person can audit it).
    """

    target: str
    precursors: tuple[PrecursorAmount, ...]
    profile: tuple[HeatingSegment, ...]
    atmosphere: str = "air"
    planner: str = "full"
    rationale: str = ""
    driving_force_mev_per_atom: float = 0.0
    predicted_yield: float | None = None
    details: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def precursor_formulas(self) -> tuple[str, ...]:
        return tuple(p.formula for p in self.precursors)

    @property
    def temperature_c(self) -> float:
        """Highest setpoint of the profile (the firing temperature)."""
        return max(s.setpoint_c for s in self.profile)

    @property
    def dwell_min(self) -> float:
        """Dwell at the highest setpoint."""
        top = self.temperature_c
        return sum(s.dwell_min for s in self.profile if s.setpoint_c == top)

    def key(self) -> tuple[str, tuple[str, ...], float, float]:
        """Identity of the experiment: target, sorted precursors, temperature, dwell."""
        return (
            self.target,
            tuple(sorted(self.precursor_formulas)),
            round(self.temperature_c, 1),
            round(self.dwell_min, 1),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "precursors": [p.to_dict() for p in self.precursors],
            "profile": [s.to_dict() for s in self.profile],
            "atmosphere": self.atmosphere,
            "planner": self.planner,
            "rationale": self.rationale,
            "driving_force_mev_per_atom": self.driving_force_mev_per_atom,
            "predicted_yield": self.predicted_yield,
            "details": _jsonable(self.details),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        py = d.get("predicted_yield")
        return cls(
            target=str(d["target"]),
            precursors=tuple(PrecursorAmount.from_dict(p) for p in d["precursors"]),
            profile=tuple(HeatingSegment.from_dict(s) for s in d["profile"]),
            atmosphere=str(d.get("atmosphere", "air")),
            planner=str(d.get("planner", "full")),
            rationale=str(d.get("rationale", "")),
            driving_force_mev_per_atom=float(d.get("driving_force_mev_per_atom", 0.0)),
            predicted_yield=None if py is None else float(py),
            details=dict(d.get("details") or {}),
        )


@dataclass(frozen=True)
class Observation:
    """What an analysed experiment showed: phases (formula -> weight fraction) and the yield."""

    recipe: Recipe
    phases: dict[str, float] = field(hash=False, compare=False)
    target_yield: float

    def __post_init__(self) -> None:
        if isinstance(self.target_yield, bool) or not isinstance(self.target_yield, int | float):
            raise RecipeError(
                f"observation of {self.recipe.target}: target_yield must be a number in [0, 1], "
                f"got {self.target_yield!r}"
            )
        if math.isnan(self.target_yield) or not (0.0 <= self.target_yield <= 1.0):
            raise RecipeError(
                f"observation of {self.recipe.target}: target_yield {self.target_yield!r} "
                "must be a weight fraction in [0, 1]"
            )
        for formula, w in self.phases.items():
            if not (-0.01 <= float(w) <= 1.01):  # refinement noise tolerated
                raise RecipeError(
                    f"observation of {self.recipe.target}: weight fraction of {formula} is {w!r}, "
                    "expected a value in [0, 1]"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.to_dict(),
            "phases": dict(self.phases),
            "target_yield": self.target_yield,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Observation:
        return cls(
            Recipe.from_dict(d["recipe"]),
            {str(k): float(v) for k, v in d["phases"].items()},
            float(d["target_yield"]),
        )


@dataclass(frozen=True)
class Exhausted:
    """The planner has no sensible recipe left for ``target``; ``reason`` says why."""

    target: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Exhausted:
        return cls(str(d["target"]), str(d["reason"]))


def recipes_tried(target: str, history: Sequence[Observation], *, same_target: Any = None) -> int:
    """How many distinct recipes of ``target`` the history has judged: THE count a target's
    recipe budget is spent in (the planner's ``max_attempts`` and the loop's exhaustion rule).

    Why distinct recipes, not experiments: repeating a recipe on a new sample to verify an
    uncertain yield, or because an instrument spoiled it, does not try anything new.
    ``same_target(a, b)`` compares formulas (default: equal strings).
    """
    same = same_target or (lambda a, b: a == b)
    return len({o.recipe.key() for o in history if same(o.recipe.target, target)})


@dataclass(frozen=True)
class TargetSpec:
    """A compound to make. ``e_form_ev_per_atom``: its formation energy if known or predicted
    (e.g. by the surrogate ensemble); otherwise the planner looks it up or assumes on-hull."""

    formula: str
    e_form_ev_per_atom: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"formula": self.formula, "e_form_ev_per_atom": self.e_form_ev_per_atom}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetSpec:
        e = d.get("e_form_ev_per_atom")
        return cls(str(d["formula"]), None if e is None else float(e))


def _jsonable(value: Any) -> Any:
    """Tuples to lists, numpy scalars to floats, so ``json.dumps(recipe.to_dict())`` works."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
