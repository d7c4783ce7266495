"""The closed-loop campaign controller: scheduling, persistence, recovery, reports, the demo.

The face of ``controller.loop``: other modules (the CLI, the web app) import only these names.
"""

from .brain import Brain, CandidateSpec, RecipeSpec
from .campaign import STRATEGIES, CampaignRunner, RunOptions, RunSummary
from .control import ControlError, approve, pause, reject, resume, set_status, stop
from .labtime import lab_days
from .recovery import Reconciliation, reconcile
from .report import ReportFiles, experiment_records, export_experiments, write_report
from .runtime import CampaignResult, run_async, run_campaign
from .scheduler import ExperimentRunner, Pool, StepPolicy
from .steps import STEP_ORDER, expected_minutes, step_params

__all__ = [
    "STEP_ORDER", "STRATEGIES", "Brain", "CampaignResult", "CampaignRunner", "CandidateSpec",
    "ControlError", "ExperimentRunner", "Pool", "RecipeSpec", "Reconciliation", "ReportFiles",
    "RunOptions", "RunSummary", "StepPolicy", "approve", "expected_minutes", "experiment_records",
    "export_experiments", "lab_days", "pause", "reconcile", "reject", "resume", "run_async",
    "run_campaign", "set_status", "step_params", "stop", "write_report",
]
