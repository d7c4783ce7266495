"""Read model of the web app: what each page and API endpoint shows, as plain JSON-able dicts.

Why a separate read model: the pages and the JSON API must show the same numbers, and the
queries must stay fast on a store with 10,000+ experiments while the loop writes to it. Every
function here runs a handful of indexed SQL queries (aggregates in SQL, lists paged and
capped) and never loads XRD blobs or model checkpoints unless one experiment or model is asked for.

One module per page family (rows, overview, proposals, experiments, targets, models, events);
this face re-exports what the app, the actions and the CLI use as ``queries.<name>``.
"""

from .events import event_log, events_after, last_event_id, recent_events
from .experiments import (
    POOR_RWP,
    POOR_UNEXPLAINED,
    experiment_detail,
    fit_warning,
    fitted_curves,
    in_flight,
    phase_ticks,
    results,
    xrd_data,
)
from .models import model_quality, models
from .overview import instruments, model_error_series, overview, yield_series
from .proposals import (
    ACQUISITION_MEANING,
    OBJECTIVE_MEANING,
    judge,
    latest_predictions,
    proposals,
    target_dict,
)
from .rows import (
    MAX_LIST,
    UNFINISHED_STEP_STATES,
    NotFound,
    aware,
    campaign_experiment,
    event_dict,
    experiment_dict,
    finite,
    peak_temperature,
    reaction_text,
    recipe_dict,
    state_values,
    step_dict,
)
from .targets import recipe_history, targets

__all__ = [
    "ACQUISITION_MEANING",
    "MAX_LIST",
    "NotFound",
    "OBJECTIVE_MEANING",
    "POOR_RWP",
    "POOR_UNEXPLAINED",
    "UNFINISHED_STEP_STATES",
    "aware",
    "campaign_experiment",
    "event_dict",
    "event_log",
    "events_after",
    "experiment_detail",
    "experiment_dict",
    "finite",
    "fit_warning",
    "fitted_curves",
    "in_flight",
    "instruments",
    "judge",
    "last_event_id",
    "latest_predictions",
    "model_error_series",
    "model_quality",
    "models",
    "overview",
    "peak_temperature",
    "phase_ticks",
    "proposals",
    "reaction_text",
    "recent_events",
    "recipe_dict",
    "recipe_history",
    "results",
    "state_values",
    "step_dict",
    "target_dict",
    "targets",
    "xrd_data",
    "yield_series",
]
