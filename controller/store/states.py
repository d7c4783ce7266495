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

# ---------------------------------------------------------------- experiment-state groups
# The one home of the sets of states the rest of the code asks about ("is it still open?",
# "may the runner drive it?"), so every reader means the same thing by the same word. Members
# are ExperimentState (a StrEnum: a stored state string tests ``in`` them directly; give SQL
# ``[s.value for s in GROUP]``).

TERMINAL_STATES: frozenset[ExperimentState] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
"""Finished for good: succeeded, failed, cancelled (no move leaves them)."""

OPEN_STATES: frozenset[ExperimentState] = frozenset(S) - TERMINAL_STATES
"""Not terminal: the experiment may still change state (it counts as pending work)."""

NOT_STARTED: frozenset[ExperimentState] = frozenset({S.PROPOSED, S.APPROVED, S.QUEUED})
"""Not yet running: no step has gone to an instrument, so withdrawing it costs no lab time."""

RUNNABLE: frozenset[ExperimentState] = frozenset({S.QUEUED, S.RUNNING, S.UNKNOWN})
"""States the experiment runner may drive through the instruments (send or re-send steps)."""

IN_FLIGHT: frozenset[ExperimentState] = frozenset({S.APPROVED, S.QUEUED, S.RUNNING, S.UNKNOWN,
                                                   S.MEASURED, S.ANALYSED})
"""Accepted and unfinished: the loop keeps one task per such experiment (steps, then analysis)."""

VERDICT_STATES: frozenset[ExperimentState] = frozenset({S.SUCCEEDED, S.FAILED})
"""A result was reached (made or not made); cancelled is terminal but no verdict."""


class FailureKind(StrEnum):
    """Why an experiment ended without success: data on the row, never parsed out of ``reason``.

    The loop acts differently on each kind (an instrument failure repeats the same recipe, a
    chemistry failure replaces it, an unverified yield repeats it to settle the claim), so the
    kind must be a value a query can filter on, not a prefix of human-readable text that any
    rewording would silently break. ``reason`` stays free text for people.
    """

    CHEMISTRY = "chemistry"
    """The recipe ran and was measured, and the target's yield is below the threshold: the
    chemistry answered, so the recipe is evidence for the planner."""

    INSTRUMENT = "instrument"
    """The lab, not the chemistry, spoiled it (a step failed for good, an unusable XRD pattern,
    a command nobody could account for after a crash): it says nothing about the recipe."""

    UNVERIFIED = "unverified"
    """The yield is above the threshold but its lower bound is below it: not a claim yet; a
    repeat on a new sample settles it."""

    CANCELLED = "cancelled"
    """Withdrawn (by a person, a stop, or a policy) before it finished: no outcome at all."""


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
