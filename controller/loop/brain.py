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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import CampaignConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandidateSpec:
    formula: str
    chemical_system: str
    structure: dict | None
    source: str
    provenance: dict


@dataclass
class RecipeSpec:
    """A recipe as plain JSON values (the store's columns), convertible to ``recipes.Recipe``."""

    target: str
    precursors: list[dict]
    profile: list[dict]
    atmosphere: str = "air"
    planner: str = "unknown"
    rationale: str = ""
    driving_force_mev_per_atom: float | None = None
    predicted_yield: float | None = None
    details: dict = field(default_factory=dict)

    def key(self) -> str:
        """Identity for de-duplication: precursor set, profile and atmosphere (not masses)."""
        return json.dumps({
            "p": sorted(p["formula"] for p in self.precursors),
            "h": [(round(float(s["setpoint_c"])), round(float(s["dwell_min"]))) for s in self.profile],
            "a": self.atmosphere,
        }, sort_keys=True)

    @classmethod
    def from_recipe(cls, recipe: Any) -> RecipeSpec:
        d = recipe.to_dict()
        details = dict(d.get("details") or {})
        details.setdefault("target", d["target"])
        details["recipe"] = d
        return cls(target=d["target"], precursors=list(d["precursors"]), profile=list(d["profile"]),
                   atmosphere=d.get("atmosphere", "air"), planner=d.get("planner", "unknown"),
                   rationale=d.get("rationale", ""),
                   driving_force_mev_per_atom=d.get("driving_force_mev_per_atom"),
                   predicted_yield=d.get("predicted_yield"), details=details)

    def to_recipe(self) -> Any:
        from recipes import Recipe

        stored = self.details.get("recipe")
        if stored:
            return Recipe.from_dict(stored)
        return Recipe.from_dict({
            "target": self.target, "precursors": self.precursors, "profile": self.profile,
            "atmosphere": self.atmosphere, "planner": self.planner, "rationale": self.rationale,
            "driving_force_mev_per_atom": self.driving_force_mev_per_atom,
            "predicted_yield": self.predicted_yield, "details": {},
        })


@dataclass
class Pick:
    index: int
    value: float
    predicted: dict


@dataclass
class Trained:
    model: Any
    checkpoint: bytes
    metrics: dict
    n_train: int
    predictions: dict[str, tuple[np.ndarray, np.ndarray | None]]


def _chemsys(formula: str) -> str:
    from pymatgen.core import Composition

    return "-".join(sorted(el.symbol for el in Composition(formula).elements))


def _reduced(formula: str) -> str:
    from pymatgen.core import Composition

    return Composition(formula).reduced_formula


class Brain:
    """Real implementation over ``surrogates``, ``recipes`` and ``controller.xrd``."""

    def __init__(self, cfg: CampaignConfig, *, world: Any | None = None, strategy: str = "full"):
        self.cfg = cfg
        self.world = world
        self.strategy = strategy
        self.seed = int(cfg.campaign.seed)
        self._planner: Any = None
        self._phase_cache: dict[str, Any] = {}

    # ------------------------------------------------------------------ candidates
    def candidates(self) -> list[CandidateSpec]:
        """The pool: generated candidates, restricted in a simulated lab to the world's wish list."""
        from surrogates import generate_candidates

        systems = list(self.cfg.chemical_space.systems)
        wish: set[str] | None = None
        if self.world is not None:
            wish = {_reduced(f) for f in self.world.target_formulas()}
            systems = sorted(set(systems) | {_chemsys(f) for f in wish})
        generated = generate_candidates(systems, seed=self.seed,
                                        max_candidates=self.cfg.chemical_space.max_candidates)
        out: list[CandidateSpec] = []
        for cand in generated:
            formula = _reduced(cand.formula)
            if wish is not None and formula not in wish:
                continue
            out.append(CandidateSpec(formula=formula, chemical_system=_chemsys(formula),
                                     structure=cand.structure.as_dict(), source=cand.source,
                                     provenance={"id": cand.id, **dict(cand.provenance or {})}))
        return out

    # ------------------------------------------------------------------ models
    def _ensemble_config(self, seed: int) -> Any:
        from surrogates import EnsembleConfig

        sc = self.cfg.surrogate
        return EnsembleConfig(architecture=sc.architecture, members=sc.ensemble_size, hidden=sc.hidden,
                              layers=sc.layers, cutoff=sc.cutoff_angstrom, max_neighbors=sc.max_neighbors,
                              epochs=sc.epochs, lr=sc.learning_rate, seed=seed)

    def train(self, cands: list[Any], results: list[tuple[int, float]], previous: Any,
              seed: int) -> Trained:
        """Train a new ensemble on known formation energies + XRD-verified campaign yields."""
        import torch
        from pymatgen.core import Structure

        from surrogates import known_phases, train_ensemble

        torch.set_num_threads(1)
        kp = known_phases()
        structures, e_form, yields = [], [], []
        by_id = {c.id: i for i, c in enumerate(cands)}
        observed = {by_id[cid]: y for cid, y in results if cid in by_id}
        all_structs = [Structure.from_dict(c.structure) for c in cands]
        for i, c in enumerate(cands):
            ef = kp.formation_energy(c.formula)
            if ef is None and i not in observed:
                continue
            structures.append(all_structs[i])
            e_form.append(np.nan if ef is None else float(ef))
            yields.append(observed.get(i, np.nan))
        targets = {"e_form": np.array(e_form, dtype=float), "yield": np.array(yields, dtype=float)}
        ensemble = train_ensemble(structures, targets, self._ensemble_config(seed))
        table = ensemble.predict(all_structs)
        predictions = self._objectives(cands, table)
        metrics: dict[str, Any] = {"n_known": int(np.isfinite(targets["e_form"]).sum()),
                                   "n_yield": len(observed)}
        if previous is not None and observed:
            prev_pred = previous.predict([all_structs[i] for i in observed])
            y_prev = self._yield_of(prev_pred)
            truth = np.array(list(observed.values()))
            metrics["yield_mae_previous_model"] = float(np.mean(np.abs(y_prev - truth)))
        return Trained(model=ensemble, checkpoint=ensemble.to_bytes(), metrics=metrics,
                       n_train=len(structures), predictions=predictions)

    def load_model(self, checkpoint: bytes) -> Any:
        from surrogates import Ensemble

        return Ensemble.from_bytes(checkpoint)

    @staticmethod
    def _yield_of(table: Any) -> np.ndarray:
        mean = np.asarray(table.mean)
        return mean[:, 1] if mean.ndim == 2 and mean.shape[1] > 1 else mean.reshape(-1)

    def _objectives(self, cands: list[Any], table: Any) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        from surrogates import known_phases

        mean, std = np.asarray(table.mean), np.asarray(table.std)
        if mean.ndim == 1:
            mean, std = mean[:, None], std[:, None]
        kp = known_phases()
        e_hull = np.array([kp.hull_energy(c.formula, float(mean[i, 0])) for i, c in enumerate(cands)])
        out = {"e_form": (mean[:, 0], std[:, 0]), "e_decomp": (e_hull, std[:, 0])}
        if mean.shape[1] > 1:
            out["yield"] = (mean[:, 1], std[:, 1])
        return out

    def select(self, model: Any, cands: list[Any], q: int, pending: set[int], excluded: set[int],
               seed: int, strategy: str | None = None) -> list[Pick]:
        """Acquire up to ``q`` new targets among the candidates not yet chosen."""
        from pymatgen.core import Structure

        from surrogates import select_batch

        table = model.predict([Structure.from_dict(c.structure) for c in cands])
        objectives = self._objectives(cands, table)
        picks = select_batch(table, strategy=strategy or self.cfg.acquisition.strategy, q=q,
                             pending=set(pending) | set(excluded), seed=seed)
        out = []
        for sel in picks:
            if sel.index in excluded:
                continue
            predicted = {k: float(v[0][sel.index]) for k, v in objectives.items()}
            predicted.update({f"{k}_std": float(v[1][sel.index]) for k, v in objectives.items()
                              if v[1] is not None})
            out.append(Pick(index=int(sel.index), value=float(sel.acquisition_value), predicted=predicted))
        return out[:q]

    # ------------------------------------------------------------------ recipes
    @property
    def planner(self) -> Any:
        if self._planner is None:
            from recipes import RecipePlanner

            rc = self.cfg.recipes
            stock = list(self.world.precursors) if self.world is not None else (
                rc.stock if isinstance(rc.stock, list) else None)
            # random_recipes: the planner's random baseline; no_active_learning: recipes ranked
            # by driving force alone (nothing learned from observations); else the full planner
            strategy = {"random_recipes": "random", "no_active_learning": "driving_force"}.get(
                self.strategy, "full")
            self._planner = RecipePlanner(stock=stock, max_recipes=rc.max_recipes_per_target,
                                          yield_threshold=rc.yield_threshold, strategy=strategy,
                                          seed=self.seed, min_temperature_c=rc.min_temperature_c,
                                          max_temperature_c=rc.max_temperature_c,
                                          min_driving_force_mev=rc.min_driving_force_mev,
                                          extra_precursors=rc.extra_precursors)
        return self._planner

    def _observations(self, history: list[dict]) -> list[Any]:
        from recipes import Observation

        return [Observation(recipe=h["recipe"].to_recipe(), phases=h["phases"],
                            target_yield=h["target_yield"]) for h in history]

    def initial_recipes(self, formula: str, e_form: float | None,
                        history: list[dict]) -> list[RecipeSpec] | str:
        """Up to ``max_recipes`` recipes, or the planner's reason (a string) why there is none."""
        from recipes import RecipeError, TargetSpec

        try:
            recipes = self.planner.initial_recipes(TargetSpec(formula=formula, e_form_ev_per_atom=e_form),
                                                   self._observations(history))
        except RecipeError as exc:
            return f"planner: {exc}"
        return [RecipeSpec.from_recipe(r) for r in recipes]

    def replace(self, failed: RecipeSpec, observed: dict, history: list[dict]) -> RecipeSpec | str:
        """A better recipe, or the planner's reason (a string) why the target is exhausted."""
        from recipes import Exhausted, Observation

        obs = Observation(recipe=failed.to_recipe(), phases=observed["phases"],
                          target_yield=observed["target_yield"])
        out = self.planner.replace(failed.to_recipe(), obs, self._observations(history))
        if isinstance(out, Exhausted):
            return out.reason
        return RecipeSpec.from_recipe(out)

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
                known = self.world.known_structure(formula)
                if known is not None:
                    ref = ReferencePhase.from_structure(known, formula)
        except Exception as exc:  # noqa: BLE001 - a phase we cannot simulate is left out, logged
            log.warning("no reference pattern for %s: %s", formula, exc)
        self._phase_cache[key] = ref
        return ref

    def known_phase_formulas(self, formula: str, precursors: list[str]) -> list[str]:
        """Public phases that may appear: precursors and known compounds of the target's system."""
        names = list(dict.fromkeys(_reduced(p) for p in precursors))
        if self.world is not None and hasattr(self.world, "known_formulas"):
            system = set(_chemsys(formula).split("-"))
            for f in self.world.known_formulas():
                if set(_chemsys(f).split("-")) <= system | {"C", "H"}:
                    names.append(_reduced(f))
        return list(dict.fromkeys(names))

    def analyze(self, two_theta: np.ndarray, intensities: np.ndarray, wavelength: float,
                target: str, target_structure: dict | None, precursors: list[str]) -> dict:
        from ..xrd import XrdPattern, analyze

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
        pattern = XrdPattern(two_theta=np.asarray(two_theta), intensities=np.asarray(intensities),
                             wavelength_angstrom=float(wavelength), source=None)
        result = analyze(pattern, phases, target=target)
        d = result.to_dict()
        return {
            "phases": [{"name": p.name, "formula": p.formula, "weight_fraction": float(p.weight_fraction),
                        "std": float(p.weight_fraction_std)} for p in result.phases],
            "rwp": float(result.rwp) if result.rwp is not None else None,
            "target_yield": float(result.target_yield or 0.0),
            "method": "whole-pattern",
            "details": {"unexplained_peaks": list(result.unexplained_peaks)[:50],
                        "candidate_phases": [p.name for p in phases],
                        **{k: v for k, v in d.items() if k not in {"phases"} and _jsonable(v)}},
        }


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False

