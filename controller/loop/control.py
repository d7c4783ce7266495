"""Human-in-the-loop actions on a campaign: approve, reject, pause, resume, stop.

Why through the store: the person (CLI or web app) and the running controller are different
processes. Each action is a state change committed with its event row; the controller polls
the campaign row and the experiments' states, so an action takes effect within a poll
interval and survives a controller restart.
"""

from __future__ import annotations

from sqlmodel import select

from ..store import Campaign, Experiment, ExperimentState, Store, StoreError, StoreErrorKind, utcnow

CAMPAIGN_STATUSES = ("created", "running", "paused", "stopping", "finished")


class ControlError(StoreError):
    """An action that does not apply (wrong experiment state, finished campaign, ...)."""


def _campaign(s, name: str) -> Campaign:  # noqa: ANN001 - sqlmodel Session
    camp = s.exec(select(Campaign).where(Campaign.name == name)).first()
    if camp is None:
        raise ControlError(f"no campaign {name!r} in this store (has it been started?)",
                           StoreErrorKind.NOT_FOUND)
    return camp


def approve(store: Store, campaign: str, experiment_id: int, *, actor: str) -> Experiment:
    """Accept a proposed experiment so the scheduler may queue it."""
    with store.session() as s:
        camp = _campaign(s, campaign)
        exp = s.get(Experiment, experiment_id)
        if exp is None or exp.campaign_id != camp.id:
            raise ControlError(f"no experiment {experiment_id} in campaign {campaign!r}",
                               StoreErrorKind.NOT_FOUND)
        if exp.state != ExperimentState.PROPOSED:
            raise ControlError(f"experiment {experiment_id} is {exp.state!r}; only 'proposed' "
                               "experiments can be approved")
        return store.transition(experiment_id, ExperimentState.APPROVED, actor=actor,
                                reason=f"approved by {actor}", session=s)


def reject(store: Store, campaign: str, experiment_id: int, *, actor: str, reason: str = "") -> Experiment:
    """Withdraw a proposed (or approved, not yet started) experiment; its recipe counts as refused."""
    with store.session() as s:
        camp = _campaign(s, campaign)
        exp = s.get(Experiment, experiment_id)
        if exp is None or exp.campaign_id != camp.id:
            raise ControlError(f"no experiment {experiment_id} in campaign {campaign!r}",
                               StoreErrorKind.NOT_FOUND)
        if exp.state not in {ExperimentState.PROPOSED, ExperimentState.APPROVED}:
            raise ControlError(f"experiment {experiment_id} is {exp.state!r}; only proposed or "
                               "approved experiments can be rejected")
        why = f"rejected by {actor}" + (f": {reason}" if reason else "")
        return store.transition(experiment_id, ExperimentState.CANCELLED, actor=actor, reason=why,
                                session=s)


def set_status(store: Store, campaign: str, status: str, *, actor: str, reason: str | None = None) -> Campaign:
    """Change the campaign's run status (paused / running / stopping / finished), logged."""
    if status not in CAMPAIGN_STATUSES:
        raise ControlError(f"unknown campaign status {status!r}; one of {', '.join(CAMPAIGN_STATUSES)}",
                           StoreErrorKind.INVALID)
    with store.session() as s:
        camp = _campaign(s, campaign)
        previous = camp.status
        if previous == "finished" and status != "finished":
            raise ControlError(f"campaign {campaign!r} is finished ({camp.stop_reason}); "
                               "start a new campaign to continue")
        if previous == "stopping" and status in {"running", "paused"} and actor != "controller":
            raise ControlError(f"campaign {campaign!r} is stopping; it cannot be resumed")
        camp.status = status
        camp.updated_at = utcnow()
        if reason is not None:
            camp.stop_reason = reason
        s.add(camp)
        store.log(s, "campaign.status", campaign_id=camp.id, entity="campaign", entity_id=camp.id,
                  from_state=previous, to_state=status, actor=actor, message=reason)
        return camp


def pause(store: Store, campaign: str, *, actor: str) -> Campaign:
    """No new step starts while paused; steps already on an instrument finish and are recorded."""
    return set_status(store, campaign, "paused", actor=actor, reason=None)


def resume(store: Store, campaign: str, *, actor: str) -> Campaign:
    with store.session() as s:
        status = _campaign(s, campaign).status
    if status != "paused":
        raise ControlError(f"campaign {campaign!r} is {status!r}, not paused")
    return set_status(store, campaign, "running", actor=actor)


def stop(store: Store, campaign: str, *, actor: str) -> Campaign:
    """Ask the campaign to stop: unstarted experiments are cancelled, running ones finish."""
    return set_status(store, campaign, "stopping", actor=actor, reason=f"stopped by {actor}")
