"""The campaign's brain, as the loop sees it: candidates, models, acquisition, recipes, XRD.

Why an adapter: the loop's persistence logic must not care how a surrogate is trained or a
pattern fitted. This module turns the other packages' faces (``surrogates``, ``recipes``,
``controller.xrd``, and ``sim_lab``'s *public* world information) into plain values the loop
stores: dicts and small dataclasses that go straight into SQL rows.

What the brain may know of a simulated world: its list of hypothetical target compositions
(a candidate list, like a chemist's wish list), the precursors on its shelf and the public
crystal structures of known phases. Never the truth attached to the targets.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from recipes import RecipePlanner
from surrogates import chemical_system, reduced_formula

from ..config import CampaignConfig
from ..xrd import AnalysisSettings, PhaseAnalysis, XrdPattern
from .analysis_pool import AnalysisPool
from .public_world import PublicWorld
from .strategy import strategy

if TYPE_CHECKING:
    from surrogates import StructurePredictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandidateSpec:
    formula: str
    chemical_system: str
    structure: dict | None
    source: str
    provenance: dict


@dataclass
class Pick:
    index: int
    value: float
    predicted: dict


@dataclass(frozen=True)
class Assessed:
    """A measured pattern judged: the analysis, the target's yield and the bound a claim
    needs (see :func:`claimable_yield`), and the reference phases that were offered."""

    analysis: PhaseAnalysis
    target_yield: float
    yield_lower: float
    candidate_phases: tuple[str, ...]


@dataclass
class Trained:
    model: Any
    checkpoint: bytes
    metrics: dict
    n_train: int
    predictions: dict[str, tuple[np.ndarray, np.ndarray | None]]


# graph passes per ensemble member and fine-tune (epochs x results): 25 epochs of 32 results
FINE_TUNE_SAMPLE_EPOCHS = 800


class Brain:
    """Real implementation over ``surrogates``, ``recipes`` and ``controller.xrd``."""

    def __init__(self, cfg: CampaignConfig, *, world: PublicWorld | None = None,
                 strategy: str = "full"):
        self.cfg = cfg
        self.world = world  # a simulated lab's public view; None for a real lab
        self._predictor: StructurePredictor | None = None
        self._ref_cache: dict[str, float] = {}  # formula -> known hull energy at its composition
        self.strategy = strategy
        self.seed = int(cfg.campaign.seed)
        self._planner: Any = None
        self.pool_structures: dict[str, dict] = {}  # formula -> predicted structure (set by the loop)
        self._phase_cache: dict[str, Any] = {}
        self._analysis_pool: AnalysisPool | None = None

    # ------------------------------------------------------------------ candidates
    def candidates(self) -> list[CandidateSpec]:
        """The pool: the configured sources; in a simulated lab, restricted to the world's wish list.

        A wish-list composition that is a known phase takes its public structure. One no source
        produced a structure for gets a predicted one (``surrogates.StructurePredictor``:
        substitution into a public known structure, else decoration of a public template with
        the same anonymised formula), so every target has a structure for the surrogate and the
        XRD analysis.
        """
        from surrogates import generate_candidates, read_candidate_cifs

        cs = self.cfg.chemical_space
        systems = list(cs.systems)
        wish: list[str] | None = None
        if self.world is not None:
            wish = list(dict.fromkeys(reduced_formula(f) for f in self.world.target_formulas))
            systems = sorted(set(systems) | {chemical_system(f) for f in wish})
        found: list[Any] = []
        for source in cs.candidate_sources:
            if source.kind == "substitution":
                found += generate_candidates(systems, seed=self.seed, max_candidates=cs.max_candidates,
                                             threshold=source.threshold)
            elif source.kind == "cif_dir":
                cands, errors = read_candidate_cifs(source.path)
                for err in errors:
                    log.warning("candidate CIF skipped: %s", err)
                found += cands
        out: list[CandidateSpec] = []
        seen: set[str] = set()
        # a wish-list compound that is already known has public crystallography: a lab uses that
        # structure (for the surrogate and as its XRD reference), not a predicted one
        known = self.world.known_structures if self.world is not None else {}
        for formula in wish or []:
            if formula in known and formula not in seen:
                seen.add(formula)
                out.append(CandidateSpec(formula=formula, chemical_system=chemical_system(formula),
                                         structure=known[formula].as_dict(),
                                         source="known-structure", provenance={"kind": "known phase"}))
        for cand in found:
            formula = reduced_formula(cand.formula)
            if (wish is not None and formula not in wish) or formula in seen:
                continue
            seen.add(formula)
            out.append(CandidateSpec(formula=formula, chemical_system=chemical_system(formula),
                                     structure=cand.structure.as_dict(), source=cand.source,
                                     provenance={"id": cand.id, **_plain(cand.provenance)}))
        want_prototypes = wish is not None or any(s.kind == "prototypes" for s in cs.candidate_sources)
        for formula in (wish or []) if want_prototypes else []:
            if formula in seen:
                continue
            made = self.structure_predictor.predict(formula)
            if made is None:
                log.warning("no structure for candidate %s: no template with its anonymised formula", formula)
                continue
            struct, template = made
            seen.add(formula)
            out.append(CandidateSpec(formula=formula, chemical_system=chemical_system(formula),
                                     structure=struct.as_dict(), source="prototype-decoration",
                                     provenance={"template": template}))
        return out

    @property
    def structure_predictor(self) -> StructurePredictor:
        """Structure prediction over the world's public known structures, prepared once."""
        if self._predictor is None:
            # imported here: the predictor's module loads the candidate generator and the MP
            # hull code, which a controller that only serves pages never needs
            from surrogates import StructurePredictor

            known = self.world.known_structures if self.world is not None else {}
            self._predictor = StructurePredictor(known)
        return self._predictor

    # ------------------------------------------------------------------ models
    OUTPUTS = ("e_form", "yield")

    def _ensemble_config(self, seed: int, n: int) -> Any:
        from surrogates import EnsembleConfig

        sc = self.cfg.surrogate
        # small pools: smaller batches, so training gets enough optimiser steps to learn
        # (>= 40); the ensemble itself handles runs too short for a one-cycle schedule
        batch = 64
        while batch > 4 and sc.epochs * -(-n // batch) < 40:
            batch //= 2
        return EnsembleConfig(architecture=sc.architecture, members=sc.ensemble_size, hidden=sc.hidden,
                              layers=sc.layers, cutoff=sc.cutoff_angstrom, max_neighbors=sc.max_neighbors,
                              epochs=sc.epochs, lr=sc.learning_rate, seed=seed, workers=1,
                              batch_size=batch, patience=max(10, sc.epochs // 3),
                              aux_targets=tuple(sc.auxiliary_targets))

    def _fine_tune_epochs(self, n: int) -> int:
        """Enough epochs for the yield head to move even when fine-tuned on a handful of results,
        and fewer as the results pile up: each fine-tune starts from the previous version, which
        has already learned the older results, so the work per retrain stays about constant
        (~FINE_TUNE_SAMPLE_EPOCHS graph passes per member) instead of growing with the campaign."""
        full = max(25, self.cfg.surrogate.epochs // 3)
        return max(3, min(full, round(FINE_TUNE_SAMPLE_EPOCHS / max(n, 1))))

    def _structures(self, cands: list[Any]) -> list[Any]:
        from pymatgen.core import Structure

        key = tuple(c.id for c in cands)
        if getattr(self, "_struct_key", None) != key:
            self._struct_key = key
            self._struct_list = [Structure.from_dict(c.structure) for c in cands]
        return self._struct_list

    def _pretraining_set(self, cands: list[Any], structs: list[Any]) -> tuple[list[Any], list[float]]:
        """Known phases with public formation energies (Materials Project table): the world's known
        structures (public crystallography) and pool members that are known compounds."""
        from surrogates import known_phases

        kp = known_phases()
        seen: set[str] = set()
        out_s, out_e = [], []
        if self.world is not None:
            for formula, structure in sorted(self.world.known_structures.items()):
                ef = kp.formation_energy(formula)
                if ef is None or formula in seen:
                    continue
                out_s.append(structure)
                out_e.append(float(ef))
                seen.add(formula)
        for c, s in zip(cands, structs, strict=True):
            ef = kp.formation_energy(c.formula)
            if ef is not None and c.formula not in seen:
                out_s.append(s)
                out_e.append(float(ef))
                seen.add(c.formula)
        return out_s, out_e

    def train(self, cands: list[Any], results: list[tuple[int, float]], previous: Any,
              seed: int) -> Trained:
        """Pretrain on known formation energies, then fine-tune the yield head on XRD-verified yields."""
        import torch

        from surrogates import train_ensemble

        torch.set_num_threads(1)
        structs = self._structures(cands)
        by_id = {c.id: i for i, c in enumerate(cands)}
        observed = {by_id[cid]: y for cid, y in results if cid in by_id}
        metrics: dict[str, Any] = {"n_yield": len(observed)}
        if previous is None:
            train_s, e_form = self._pretraining_set(cands, structs)
            if len(train_s) < 4:
                raise RuntimeError(f"only {len(train_s)} known phases with public formation energies "
                                   "in this chemical space: too few to pretrain the surrogate")
            targets = {"e_form": np.array(e_form), "yield": np.full(len(e_form), np.nan)}
            ensemble = train_ensemble(train_s, targets, self._ensemble_config(seed, len(train_s)))
            n_train = len(train_s)
            metrics["n_known"] = n_train
            metrics["kind"] = "pretrained"
        else:
            idx = sorted(observed)
            prev_table = previous.predict([structs[i] for i in idx])
            truth = np.array([observed[i] for i in idx])
            j = list(prev_table.outputs).index("yield")
            metrics["yield_mae_previous_model"] = float(np.mean(np.abs(np.clip(prev_table.mean[:, j], 0, 1) - truth)))
            sc = self.cfg.surrogate
            ensemble = previous.fine_tune([structs[i] for i in idx], {"yield": truth},
                                          epochs=self._fine_tune_epochs(len(idx)),
                                          lr=sc.learning_rate / 3, seed=seed)
            n_train = len(idx)
            metrics["kind"] = "fine-tuned on campaign yields"
        table = ensemble.predict(structs)
        return Trained(model=ensemble, checkpoint=ensemble.to_bytes(), metrics=metrics,
                       n_train=n_train, predictions=self._objectives(cands, table))

    def load_model(self, checkpoint: bytes) -> Any:
        from surrogates import Ensemble

        return Ensemble.from_bytes(checkpoint)

    def _hull_refs(self, cands: list[Any]) -> np.ndarray:
        """Per candidate, the known hull's energy at its composition (eV/atom)."""
        from surrogates import known_phases

        cache = self._ref_cache
        kp = known_phases()
        out = []
        for c in cands:
            if c.formula not in cache:
                try:
                    cache[c.formula] = float(kp.hull_reference_energy(c.formula))
                except Exception:  # noqa: BLE001 - unknown elements: no hull, nothing beats 0
                    cache[c.formula] = 0.0
            out.append(cache[c.formula])
        return np.array(out)

    def _objectives(self, cands: list[Any], table: Any) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        outputs = list(table.outputs)
        mean, std = np.asarray(table.mean), np.asarray(table.std)
        je, jy = outputs.index("e_form"), outputs.index("yield")
        refs = self._hull_refs(cands)
        return {"e_form": (mean[:, je], std[:, je]), "e_decomp": (mean[:, je] - refs, std[:, je]),
                "yield": (np.clip(mean[:, jy], 0.0, 1.0), std[:, jy])}

    def select(self, model: Any, cands: list[Any], q: int, pending: set[int], excluded: set[int],
               seed: int, strategy: str | None = None) -> list[Pick]:
        """Acquire up to ``q`` new targets; in-flight targets are BoTorch pending points."""
        from surrogates import objective_for, select_batch  # here: BoTorch loads only to acquire

        table = model.predict(self._structures(cands))
        objectives = self._objectives(cands, table)
        # the yield head counts once fine-tuned on a few campaign results
        yield_known = int((getattr(model, "metrics", {}) or {}).get("fine_tuned_on", 0)) >= 4
        objective = objective_for(
            self.cfg.acquisition.objective, refs=self._hull_refs(cands),
            threshold=self.cfg.acquisition.stability_threshold_ev,
            yield_threshold=self.cfg.recipes.yield_threshold, use_yield=yield_known)
        picks = select_batch(table, strategy=strategy or self.cfg.acquisition.strategy, q=q,
                             pending=sorted(pending), exclude=sorted(set(excluded) - set(pending)),
                             objective=objective, seed=seed, beta=self.cfg.acquisition.ucb_beta)
        out = []
        for sel in picks:
            i = int(sel.index)
            if i in excluded or i in pending:
                continue
            predicted = {k: float(v[0][i]) for k, v in objectives.items()}
            predicted.update({f"{k}_std": float(v[1][i]) for k, v in objectives.items() if v[1] is not None})
            predicted["objective_mean"] = float(sel.mean)
            out.append(Pick(index=i, value=float(sel.acquisition_value), predicted=predicted))
        return out[:q]

    # ------------------------------------------------------------------ recipes
    @property
    def planner(self) -> RecipePlanner:
        """The recipe planner of this campaign, built once (its caches outlive a call)."""
        if self._planner is None:
            rc = self.cfg.recipes
            stock = list(self.world.precursors) if self.world is not None else (
                rc.stock if isinstance(rc.stock, list) else None)
            self._planner = RecipePlanner(stock=stock, max_recipes=rc.max_recipes_per_target,
                                          yield_threshold=rc.yield_threshold,
                                          strategy=strategy(self.strategy).recipes,
                                          seed=self.seed, min_temperature_c=rc.min_temperature_c,
                                          max_temperature_c=rc.max_temperature_c,
                                          min_driving_force_mev=rc.min_driving_force_mev,
                                          extra_precursors=rc.extra_precursors)
        return self._planner

    # ------------------------------------------------------------------ XRD
    def _reference(self, formula: str, structure: dict | None) -> Any | None:
        from pymatgen.core import Structure

        from ..xrd import ReferencePhase

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
        settings = AnalysisSettings(amorphous_threshold=ac.amorphous_threshold,
                                    screen_nfev=ac.screen_iterations)
        analysis = self.analysis_pool.analyze(pattern, phases, target, settings)
        y, y_low = claimable_yield(analysis, claim_sigma=ac.claim_sigma,
                                   systematic_std=ac.systematic_yield_std)
        return Assessed(analysis=analysis, target_yield=y, yield_lower=y_low,
                        candidate_phases=tuple(p.name for p in phases))

    def close(self) -> None:
        """Stop the XRD worker processes (the brain's only resource that outlives a call)."""
        if self._analysis_pool is not None:
            self._analysis_pool.close()

    @property
    def analysis_pool(self) -> AnalysisPool:
        if self._analysis_pool is None:
            self._analysis_pool = AnalysisPool(self.cfg.analysis.workers)
        return self._analysis_pool


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


def _plain(d: Any) -> dict:
    """A JSON-safe copy of a provenance dict."""
    return json.loads(json.dumps(dict(d or {}), default=str))


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False

