"""The life of an experiment as an explicit state machine.

Why explicit: the controller can be killed at any moment and must resume from the store
alone. A state that can only be entered from known predecessors makes every row
interpretable after a crash, and an illegal jump (``proposed`` straight to ``succeeded``)
is a bug that must stop the program rather than corrupt the campaign record.
"""

from __future__ import annotations

from enum import StrEnum


class ExperimentState(StrEnum):
    PROPOSED = "proposed"    # planned by the recipe planner, waiting for approval (or auto-approval)
    APPROVED = "approved"    # a person (or the auto-approval policy) accepted it
    QUEUED = "queued"        # waiting for instruments
    RUNNING = "running"      # at least one step command has been sent
    MEASURED = "measured"    # the XRD pattern is stored
    ANALYSED = "analysed"    # phases and the target's yield are stored
    SUCCEEDED = "succeeded"  # target yield reached the threshold
    FAILED = "failed"        # below threshold, or a step failed for good (reason recorded)
    CANCELLED = "cancelled"  # withdrawn by a person or a policy before it finished
    UNKNOWN = "unknown"      # after a crash, no driver could account for an in-flight step


S = ExperimentState

TRANSITIONS: dict[ExperimentState, frozenset[ExperimentState]] = {
    S.PROPOSED: frozenset({S.APPROVED, S.CANCELLED}),
    S.APPROVED: frozenset({S.QUEUED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset({S.MEASURED, S.FAILED, S.UNKNOWN, S.CANCELLED}),
    S.MEASURED: frozenset({S.ANALYSED, S.FAILED}),
    S.ANALYSED: frozenset({S.SUCCEEDED, S.FAILED}),
    # an unaccounted experiment is either re-run from the queue, found still running or
    # finished when a driver reappears, or given up by policy
    S.UNKNOWN: frozenset({S.QUEUED, S.RUNNING, S.MEASURED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}

TERMINAL_STATES = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
ACTIVE_STATES = frozenset(S) - TERMINAL_STATES


class IllegalTransition(RuntimeError):
    """Raised when code asks for a state change the machine does not allow."""

    def __init__(self, experiment_id: int, current: ExperimentState, requested: ExperimentState):
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (terminal state)"
        super().__init__(
            f"experiment {experiment_id}: cannot go from {current.value!r} to {requested.value!r}; "
            f"allowed from {current.value!r}: {allowed}"
        )
        self.experiment_id = experiment_id
        self.current = current
        self.requested = requested


def check_transition(experiment_id: int, current: str, requested: str) -> ExperimentState:
    """Return the requested state if the move is legal, else raise :class:`IllegalTransition`."""
    cur, req = ExperimentState(current), ExperimentState(requested)
    if req not in TRANSITIONS[cur]:
        raise IllegalTransition(experiment_id, cur, req)
    return req


class StepState(StrEnum):
    """State of one instrument command (a step of an experiment)."""

    PENDING = "pending"      # written to SQL, not yet sent
    SENT = "sent"            # handed to the transport
    ACKED = "acked"          # the driver accepted it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"      # lost with a driver or a controller crash, not yet reconciled


STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    StepState.PENDING: frozenset({StepState.SENT, StepState.FAILED, StepState.UNKNOWN}),
    StepState.SENT: frozenset({StepState.ACKED, StepState.SUCCEEDED, StepState.FAILED, StepState.UNKNOWN}),
    StepState.ACKED: frozenset({StepState.SUCCEEDED, StepState.FAILED, StepState.UNKNOWN}),
    StepState.UNKNOWN: frozenset({StepState.SENT, StepState.ACKED, StepState.SUCCEEDED, StepState.FAILED}),
    StepState.SUCCEEDED: frozenset(),
    StepState.FAILED: frozenset(),
}


class TargetState(StrEnum):
    ACTIVE = "active"        # recipes being tried
    MADE = "made"            # a recipe reached the yield threshold
    EXHAUSTED = "exhausted"  # no sensible recipe left (reason recorded)
    ABANDONED = "abandoned"  # stopped by a person or the budget
