"""Judging a measured pattern: which phases it holds and the target's claimable yield.

Why its own module: the loop's verdict needs two numbers (the target's yield and the lower
bound a claim rests on) and the references the fit was offered; everything between — which
reference patterns a sample may show, the fit in worker processes, the uncertainty budget —
lives here. ``XrdPattern`` goes in, ``Assessed`` (holding the ``PhaseAnalysis``) comes out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymatgen.core import Structure

from surrogates import chemical_system, reduced_formula

from ..config import AnalysisSection, CampaignConfig
from ..xrd import AnalysisSettings, PhaseAnalysis, ReferencePhase, XrdPattern
from ..xrd.calibration import InstrumentProfile
from .analysis_pool import AnalysisPool
from .public_world import PublicWorld

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assessed:
    """A measured pattern judged: the analysis, the target's yield and the bound a claim
    needs (see :func:`claimable_yield`), and the reference phases that were offered."""

    analysis: PhaseAnalysis
    target_yield: float
    yield_lower: float
    candidate_phases: tuple[str, ...]
    target_ambiguous: bool = False  # the fit could barely tell the target from a look-alike


@dataclass
class PhaseAssessor:
    """Reference phases for a campaign's samples, and the fits (in ``analysis.workers``
    processes). ``pool_structures``: the candidate pool's predicted structures (formula ->
    structure dict), which may form instead of a target."""

    cfg: CampaignConfig
    world: PublicWorld | None = None
    pool_structures: dict[str, dict] = field(default_factory=dict)
    _phase_cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _analysis_pool: AnalysisPool | None = field(default=None, repr=False)
    _settings: AnalysisSettings | None = field(default=None, repr=False)

    def _reference(self, formula: str, structure: dict | None) -> Any | None:
        key = f"{formula}|{'cand' if structure else 'known'}"
        if key in self._phase_cache:
            return self._phase_cache[key]
        ref = None
        try:
            if structure is not None:
                ref = ReferencePhase.from_structure(Structure.from_dict(structure), formula)
            elif self.world is not None:
                known = self.world.known_structures.get(formula)
                if known is not None:
                    ref = ReferencePhase.from_structure(known, formula)
        except Exception as exc:  # noqa: BLE001 - a phase we cannot simulate is left out, logged
            log.warning("no reference pattern for %s: %s", formula, exc)
        self._phase_cache[key] = ref
        return ref

    def known_phase_formulas(self, formula: str, precursors: list[str]) -> list[str]:
        """Public phases that may appear: precursors and known compounds of the target's system."""
        names = list(dict.fromkeys(reduced_formula(p) for p in precursors))
        if self.world is not None:
            system = set(chemical_system(formula).split("-"))
            for f in self.world.known_structures:
                if set(chemical_system(f).split("-")) <= system | {"C", "H"}:
                    names.append(reduced_formula(f))
        return list(dict.fromkeys(names))

    def analyze(self, pattern: XrdPattern, target: str, target_structure: dict | None,
                precursors: list[str]) -> Assessed:
        """Phases and the target's claimable yield in one measured pattern.

        The references offered: the target (its predicted structure), the precursors, the
        public known phases of its chemical system and the pool's other hypothetical compounds
        of that system (one may form instead of the target)."""
        phases = []
        tref = self._reference(target, target_structure)
        if tref is not None:
            phases.append(tref)
        for name in self.known_phase_formulas(target, precursors):
            if name == target:
                continue
            ref = self._reference(name, None)
            if ref is not None:
                phases.append(ref)
        system = set(chemical_system(target).split("-"))
        for formula, struct in sorted(self.pool_structures.items()):
            if formula != target and set(chemical_system(formula).split("-")) <= system:
                ref = self._reference(formula, struct)
                if ref is not None:
                    phases.append(ref)
        phases = list({p.name: p for p in reversed(phases)}.values())[::-1]  # unique names, first wins
        ac = self.cfg.analysis
        # the recipe weighs its precursors to the target's stoichiometry (recipes balance every
        # set to it), so the sample's nominal composition is the target formula: it decides
        # between look-alikes the pattern cannot separate (AnalysisSettings.composition_weight)
        analysis = self.analysis_pool.analyze(pattern, phases, target, self.settings,
                                              composition=target)
        y, y_low = claimable_yield(analysis, claim_sigma=ac.claim_sigma,
                                   systematic_std=ac.systematic_yield_std)
        ambiguous = any(target in a["phases"] for a in analysis.ambiguities)
        return Assessed(analysis=analysis, target_yield=y, yield_lower=y_low,
                        candidate_phases=tuple(p.name for p in phases), target_ambiguous=ambiguous)

    @property
    def settings(self) -> AnalysisSettings:
        """The campaign's analysis settings (built once: the instrument profile is a file)."""
        if self._settings is None:
            self._settings = analysis_settings(self.cfg.analysis)
        return self._settings

    def close(self) -> None:
        """Stop the XRD worker processes (the brain's only resource that outlives a call)."""
        if self._analysis_pool is not None:
            self._analysis_pool.close()

    @property
    def analysis_pool(self) -> AnalysisPool:
        if self._analysis_pool is None:
            self._analysis_pool = AnalysisPool(self.cfg.analysis.workers)
        return self._analysis_pool



def analysis_settings(ac: AnalysisSection) -> AnalysisSettings:
    """``AnalysisSettings`` for a campaign's ``analysis`` section.

    ``preset``: 'simulated' keeps the library defaults (what the simulated lab's patterns were
    measured with); 'real_samples' is the set tuned on real A-Lab reaction products
    (``AnalysisSettings.real_samples``). An ``instrument_profile`` (``synthloop xrd calibrate``)
    then replaces the instrument part (peak width start, zero shift, spill-over angle). A target
    with no structure is accepted here (the loop's targets are real formulas): its yield comes
    from the structure-type search, 0 when no family explains the pattern.
    """
    common = {"amorphous_threshold": ac.amorphous_threshold, "screen_nfev": ac.screen_iterations,
              "allow_structureless_target": True}
    if ac.preset == "real_samples":
        settings = AnalysisSettings.real_samples(**common)
    elif ac.preset == "simulated":
        settings = AnalysisSettings(**common)
    else:  # the config validates it; a programmatic config may not have
        raise ValueError(f"analysis.preset {ac.preset!r}: expected 'simulated' or 'real_samples'")
    if ac.instrument_profile:
        settings = InstrumentProfile.load(ac.instrument_profile).apply(settings)
    return settings


def claimable_yield(analysis: PhaseAnalysis, *, claim_sigma: float,
                    systematic_std: float) -> tuple[float, float]:
    """(best estimate, lower bound) of the target's weight fraction in the whole sample.

    The estimate is the crystalline fraction scaled by (1 - amorphous share) when the pattern
    shows an amorphous hump. The bound starts from the lower of that and the alternative fit
    that keeps the phases dropped as nearly significant, and subtracts ``claim_sigma`` standard
    deviations of the fit, of the systematic floor and of the amorphous share (in quadrature): a target is
    claimed made only on the bound, because the point estimate claimed partly glassy samples.
    """
    cryst = float(analysis.target_yield or 0.0)
    whole = analysis.target_yield_whole_sample
    y = float(whole) if whole is not None else cryst
    # the claim must also hold with the nearly significant phases the fit dropped kept in
    alt = analysis.target_yield_alternative
    floor_y = min(y, float(alt) * (y / cryst if cryst > 0 else 1.0)) if alt is not None else y
    amorphous = analysis.amorphous
    fit_std = float(analysis.target_yield_std or 0.0)
    share_std = float(amorphous.share_std) if amorphous is not None and amorphous.detected else 0.0
    sigma = float(np.sqrt(fit_std**2 + systematic_std**2 + (cryst * share_std) ** 2)) if y > 0 else 0.0
    return y, max(floor_y - claim_sigma * sigma, 0.0)
