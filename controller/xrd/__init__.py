"""XRD analysis: read real patterns, build reference phases, fit, identify and quantify phases."""

from .analysis import AnalysisSettings, PhaseAnalysis, PhaseResult, XrdAnalysisError, analyze
from .calibration import CalibrationError, InstrumentProfile, calibrate
from .pattern import XrdFormatError, XrdPattern, read_pattern
from .plotting import plot_analysis
from .reference import ReferencePhase, XrdReferenceError, bundled_cifs, load_phase
from .simulate import simulate_mixture

__all__ = [
    "AnalysisSettings",
    "CalibrationError",
    "InstrumentProfile",
    "calibrate",
    "PhaseAnalysis",
    "PhaseResult",
    "XrdAnalysisError",
    "analyze",
    "ReferencePhase",
    "XrdFormatError",
    "XrdPattern",
    "XrdReferenceError",
    "bundled_cifs",
    "load_phase",
    "plot_analysis",
    "read_pattern",
    "simulate_mixture",
]
