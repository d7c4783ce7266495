"""The four steps of an experiment and the parameters each instrument receives.

Why a module of its own: the step sequence (dose & mix -> heat -> recover -> XRD) and the
shape of each step's parameters are the contract with the drivers (see docs/protocol.md);
keeping it in one place means the scheduler, the recovery code and the tests agree on it.
"""

from __future__ import annotations

from typing import Any

from recipes import Recipe

STEP_ORDER: tuple[str, ...] = ("dose_mix", "heat", "recover", "xrd")
"""Capabilities in the order an experiment visits them (``StepCommand.sequence`` = index)."""

XRD_SCAN: dict[str, float] = {
    "two_theta_start": 10.0,
    "two_theta_end": 80.0,
    "step": 0.02,
    "scan_time_min": 8.0,
}

# Simulated minutes an instrument needs besides the heating profile (used for deadlines only).
_FIXED_MINUTES = {"dose_mix": 20.0, "recover": 15.0, "xrd": XRD_SCAN["scan_time_min"] + 5.0}


def step_params(step: str, sample_id: str, recipe: Recipe) -> dict[str, Any]:
    """The ``params`` dict of one step command, as the drivers' step models expect it."""
    if step == "dose_mix":
        return {
            "sample_id": sample_id,
            "precursors": [
                {"formula": p.formula, "target_mass_g": float(p.mass_g)} for p in recipe.precursors
            ],
        }
    if step == "heat":
        return {
            "sample_ids": [sample_id],
            "profile": [
                {
                    "ramp_c_per_min": float(seg.ramp_c_per_min),
                    "setpoint_c": float(seg.setpoint_c),
                    "dwell_min": float(seg.dwell_min),
                }
                for seg in recipe.profile
            ],
            "atmosphere": recipe.atmosphere,
        }
    if step == "recover":
        return {"sample_id": sample_id, "grind": True}
    if step == "xrd":
        return {"sample_id": sample_id, **XRD_SCAN}
    raise ValueError(f"unknown step {step!r}; steps are {', '.join(STEP_ORDER)}")


def expected_minutes(step: str, params: dict[str, Any]) -> float:
    """Simulated (or real) minutes a step should take: heating ramps + dwells, or a fixed time."""
    if step != "heat":
        return _FIXED_MINUTES.get(step, 30.0)
    total, temperature = 0.0, 25.0
    for seg in params.get("profile", []):
        ramp = max(float(seg["ramp_c_per_min"]), 1e-3)
        total += abs(float(seg["setpoint_c"]) - temperature) / ramp + float(seg["dwell_min"])
        temperature = float(seg["setpoint_c"])
    # cooling back to room temperature at a typical 5 C/min furnace rate
    return total + max(temperature - 25.0, 0.0) / 5.0


def deadline_seconds(step: str, params: dict[str, Any], *, speedup: float, floor_s: float = 30.0) -> float:
    """Wall-clock deadline: three times the expected duration at ``speedup``, never below ``floor_s``.

    Why a generous factor: a deadline is a safety net for a stuck instrument, not a
    schedule; a furnace that is merely slow must not be declared failed.
    """
    return max(floor_s, 3.0 * expected_minutes(step, params) * 60.0 / max(speedup, 1e-9))
