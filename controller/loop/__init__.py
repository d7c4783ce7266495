"""The closed-loop campaign controller: decisions, scheduling, persistence, recovery, reports.

The face of ``controller.loop``: other modules (the CLI, the web app, benchmarks) import only
these names. The decisions are ``policy`` (pure functions of typed records) and ``AskTell``
(the same decisions driven from a script, with no lab and no database); ``CampaignRunner``
runs them against instruments and the store.
"""

from .asktell import AskTell, Book, Proposal, advance_target
from .assess import Assessed, claimable_yield
from .brain import Brain
from .campaign import CampaignRunner, RunOptions, RunSummary
from .control import ControlError, approve, pause, reject, resume, set_status, stop
from .history import PlannedRecipe, TargetHistory, Trial
from .labtime import lab_days
from .policy import Rules, Verdict, next_action, verdict
from .public_world import PublicWorld
from .records import CampaignRecords
from .recovery import Reconciliation, reconcile
from .report import ReportFiles, experiment_records, export_experiments, write_report
from .runtime import CampaignResult, run_async, run_campaign
from .scheduler import ExperimentRunner, Pool, StepPolicy
from .steps import STEP_ORDER, expected_minutes, step_params
from .strategy import STRATEGIES, Strategy, strategy

__all__ = [
    "STEP_ORDER", "STRATEGIES", "AskTell", "Assessed", "Book", "Brain", "CampaignRecords",
    "CampaignResult", "CampaignRunner", "ControlError", "ExperimentRunner",
    "PlannedRecipe", "Pool", "Proposal", "PublicWorld", "Reconciliation", "ReportFiles", "Rules", "RunOptions",
    "RunSummary", "StepPolicy", "Strategy", "TargetHistory", "Trial", "Verdict", "advance_target",
    "approve", "claimable_yield", "expected_minutes", "experiment_records", "export_experiments",
    "lab_days", "next_action", "pause", "reconcile", "reject", "resume", "run_async",
    "run_campaign", "set_status", "step_params", "stop", "strategy", "verdict", "write_report",
]
