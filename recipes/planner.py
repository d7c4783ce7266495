"""The recipe planner: up to five initial recipes per target, then ARROWS3-style replacement.

Strategies (same face, for benchmarks):
- ``full``: candidate sets ranked by the probability of reaching the yield threshold (yield
  GP, or a physics prior before data) as a filter, then by the driving force left at the
  target-forming step after predicted intermediates (learned pairwise reactions, else the
  thermodynamic prior) plus experience; five diverse sets; conditions chosen by the GP.
  ``replace`` learns the failed experiment's pairwise reactions and either retries the set
  hotter/longer (when it looks kinetically limited) or proposes the best untested set that
  does not fail predictably.
- ``driving_force``: sets ranked by overall reaction energy only, heuristic conditions, no
  learning; ``replace`` takes the next set in that order.
- ``random``: random stocked sets that balance (seeded), heuristic conditions.

Purity: every public method is a function of its arguments and the constructor's config.
Caches (energies, pair reactions, enumerated sets) only memoise those functions.
"""

from __future__ import annotations

import itertools
import math
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .conditions import DWELL_CHOICES, build_profile, heuristic_conditions, mean_melting_k
from .library import PrecursorLibrary, reduced_formula
from .literature import LiteratureModel, literature_model
from .pathways import PathwayKnowledge, effective_phases
from .replay import CandidateSpace
from .temperature_model import display_formula
from .thermo import GASIFIABLE, Reaction, Thermo, amounts_of, molar_mass, rf
from .types import (
    Exhausted,
    MissingElementsError,
    Observation,
    PrecursorAmount,
    Recipe,
    RecipeError,
    TargetSpec,
    recipes_tried,
)
from .yield_model import YieldModel

Strategy = Literal["full", "driving_force", "random"]
STRATEGIES = ("full", "driving_force", "random")
EXPERIENCE_MEV = 150.0  # ranking bonus (meV/atom equivalent) of a fully successful track record
MAX_CONDITION_RETRIES = 1  # per set: escalating further overshoots (volatility, decomposition)
FORMING_YIELD = 0.1  # a yield this high is evidence the set works and conditions are the issue
RETRY_STEP_C = 50.0
PREFER_RETRY_YIELD = 0.25  # from this yield on, new conditions for the same set come first
GP_MIN_POINTS_FOR_CONDITIONS = 15  # below this the GP extrapolates conditions badly
GP_CONDITION_GAIN = 0.25  # P(feasible) the GP must add before it overrides the heuristic
CONDITION_SEARCH_SETS = 12
PRIOR_WEIGHT = 0.5
# uncertainty of the target energy by its source (meV/atom), see RecipePlanner._skip_margin
ENERGY_MARGIN_MEV = {"table": 0.0, "given": 50.0, "hull_estimate": 150.0}
# ---- the one ranking score of the full strategy, in nats (see RecipePlanner._score_terms)
# the weights below were LEARNED (issue 20): a conditional logit over each target's candidate
# sets (positive = a set a paper used) on 1,626 reachable tune targets (the validation fold of the
# training targets), cross-validated by target on top-5 recall (85.7 % vs 83.7 % hand-weighted);
# handling stays a chemist's preference (fixed); ``python -m recipes._train_ranker``
THERMO_NATS_PER_100MEV = 0.12  # 100 meV/atom at the target-forming step = 0.12 nat of literature log-odds
THERMO_NATS_NO_LITERATURE = 0.5  # without literature only handling competes with it (hand-set, unchanged)
# nats per unit of each part of the literature evidence (``LiteratureModel.set_evidence``)
LITERATURE_WEIGHTS = {
    "sources": 0.79,  # Σ log P(the set's source of each element | similar targets' papers)
    "same_set": 0.96,  # log(1 + similar targets whose papers used this very set)
    "unknown_sources": 1.08,  # per element whose source no similar paper used (corrects the floor)
    "pairs": 0.64,  # mean log share of reactions using a pair of the powders together
    "popularity": 0.44,  # mean log(1 + reactions using each powder)
    "compound_source": 3.85,  # one powder brings two of the target's elements
}
THERMO_CAP_MEV = 300.0  # beyond this, more driving force does not make a set more likely to work
THERMO_CAP_NO_LITERATURE_MEV = 1000.0
HANDLING_NATS = {"air_sensitive": 1.0, "carcinogen": 1.0, "toxic": 0.5, "deliquescent": 0.25, "elemental": 1.0}
EXPERIENCE_NATS = 2.0  # × experience in [-0.5, 0.5]
LITERATURE_SOURCES_PER_ELEMENT = 8  # large shelves: at most this many powders per element,
LITERATURE_COMBOS = 400  # fewer for many-element targets (about this many combinations); 1000 was
# measured (issue 20): +1 top-5 hit, -1/-2 top-1 on tune / held-out at +13-18 % CPU — not worth it;
# most never-scored paper sets hold a powder foreign to the target's elements (see the benchmark)
THERMO_FLOOR_MEV = -1e9  # no floor: an uphill target-forming step sinks a set
DIVERSITY_DECOMPOSED = True  # diversity also compares the solids the powders decompose to
DIVERSITY_NATS = 0.25  # full strategy: a pick loses this × its similarity to a set already picked
# (learned with the weights above: 0-0.25 tie on tune recall, 1.0 costs ~5 hits of 1,626)
# which literature temperature a one-step recipe fires at: "firing" (the paper's highest heating
# step) — a single firing must both form and finish the phase; the paper's calcination is
# usually followed by regrinding and a hotter step (recipes/temperature_model.py has both)
PLANNER_TEMPERATURE_KIND = "firing"
# the literature's temperature is raised to the Tammann rule's when that is hotter (asymmetric
# cost: too cold forms nothing, too hot mostly still forms — volatility has its own cap)
RAISE_TO_TAMMANN = True
LITERATURE_PRUNE_ABOVE = 30  # usable powders for a target above which the literature prunes
# before data, sets whose score bound (literature + handling + experience + the thermodynamic
# cap) cannot reach the picks are not evaluated: same picks, a fraction of the pathway work
PRUNE_BY_BOUND = True
PRUNE_CHUNK = 8
PRUNE_SLACK_NATS = 0.0  # > 0 keeps more sets (benchmarks re-scoring with other weights)


@dataclass
class Candidate:
    """One balanced precursor set evaluated at one set of conditions."""

    formulas: tuple[str, ...]
    reaction: Reaction  # at the candidate's temperature
    temperature_c: float
    dwell_min: float
    heuristic_reasons: tuple[str, ...]
    remaining_mev: float  # driving force left for the target-forming step (learned reactions only)
    prior_remaining_mev: float  # same with the thermodynamic prior for unobserved pairs
    pathway_steps: list[dict[str, Any]]
    intermediates: list[str]
    features: list[float]
    prob_feasible: float = 0.0
    predicted_yield: float = 0.0
    experience: float = 0.0
    experience_note: str = ""
    notes: list[str] = field(default_factory=list)
    literature_nats: float = 0.0
    literature_note: str = ""
    terms: dict[str, float] = field(default_factory=dict)
    decided_by: str = ""
    feasible: bool = True

    @property
    def driving_force(self) -> float:
        return -self.reaction.energy_mev_per_atom

    @property
    def step_force(self) -> float:
        """Driving force of the weakest necessary step: the target-forming step after the
        predicted intermediates, and the overall reaction (both must be downhill)."""
        return min(self.remaining_mev, self.driving_force)


def _history_key(history: Sequence[Observation]) -> str:
    """Content fingerprint of a history (recipes, phases, yields), order included."""
    import hashlib
    import json

    text = json.dumps([o.to_dict() for o in history], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def _rf(formula: str) -> str:
    return rf(formula)


@dataclass(frozen=True)
class LastPick:
    """How the diverse pick chose its last recipe, for the score-bound pruning: the powder(s)
    every earlier pick uses (``common``), the value the last pick won with (score − diversity
    penalty), and whether no evaluated set avoided ``common`` (``fallback``: then any
    unevaluated set that avoids it may still win)."""

    common: frozenset[str] = frozenset()
    value: float = -math.inf
    fallback: bool = False


class RecipePlanner:
    """Plans recipes for targets from the stocked precursors (see module docstring)."""

    def __init__(
        self,
        *,
        stock: Sequence[str] | None = None,
        max_recipes: int = 5,
        yield_threshold: float = 0.5,
        strategy: Strategy = "full",
        seed: int = 0,
        batch_mass_g: float = 2.0,
        min_temperature_c: float = 300.0,
        max_temperature_c: float = 1300.0,
        min_driving_force_mev: float = 50.0,
        extra_precursors: str | Path | None = None,
        max_attempts: int | None = None,
        atmosphere: str = "air",
        max_set_size: int = 4,
        pairwise_prior: bool = True,
        known: Any = None,
        literature: bool | LiteratureModel = True,
        candidate_space: CandidateSpace | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise RecipeError(f"strategy {strategy!r} unknown; use one of {', '.join(STRATEGIES)}")
        if max_recipes < 1:
            raise RecipeError(f"max_recipes must be >= 1, got {max_recipes}")
        if not (0 < yield_threshold <= 1):
            raise RecipeError(f"yield_threshold must be in (0, 1], got {yield_threshold}")
        if min_temperature_c >= max_temperature_c:
            raise RecipeError(
                f"min_temperature_c ({min_temperature_c}) must be below max_temperature_c ({max_temperature_c})"
            )
        if batch_mass_g <= 0:
            raise RecipeError(f"batch_mass_g must be positive, got {batch_mass_g}")
        if known is None:
            from surrogates import known_phases

            known = known_phases()
        self.strategy: Strategy = strategy
        self.max_recipes = int(max_recipes)
        self.max_attempts = int(max_attempts) if max_attempts is not None else int(max_recipes)
        self.threshold = float(yield_threshold)
        self.seed = int(seed)
        self.batch_mass_g = float(batch_mass_g)
        self.min_c = float(min_temperature_c)
        self.max_c = float(max_temperature_c)
        self.min_df = float(min_driving_force_mev)
        self.atmosphere = atmosphere
        self.max_set_size = int(max_set_size)
        self.pairwise_prior = bool(pairwise_prior)
        self.library = PrecursorLibrary.bundled(extra_precursors)
        self.thermo = Thermo(known, atmosphere=atmosphere)
        self.space = candidate_space
        if stock is None and candidate_space is not None:
            stock = candidate_space.precursors
        # literature knowledge ranks and fires the full strategy's sets (recipes/literature.py)
        if isinstance(literature, LiteratureModel):
            self.literature: LiteratureModel | None = literature
        elif literature and strategy == "full":
            self.literature = literature_model()
        else:
            self.literature = None
        stocked = self.library.stocked(list(stock) if stock is not None else None)
        self.stock: dict[str, Any] = {}
        self.unusable: dict[str, str] = {}
        for p in stocked:
            if self.thermo.formation_energy(p.key) is None:
                self.unusable[p.key] = "not on the Materials Project table, so its energy is unknown"
                if stock is not None:
                    # one odd bottle must not stop planning for the whole shelf
                    warnings.warn(
                        f"stocked precursor {p.formula} skipped: {self.unusable[p.key]}",
                        stacklevel=2,
                    )
                continue
            self.stock[p.key] = p
        # recipes name each powder as the shelf does (the dosing station matches these names)
        self.shelf_names: dict[str, str] = {reduced_formula(f): f for f in (stock or [])}
        self._exclude_rows: set[tuple[tuple[str, ...], float, float]] = set()
        self._space_made: set[tuple[str, ...]] = set()
        self.space_unusable: dict[tuple[str, ...], str] = {}
        self._t_hint: tuple[float, float] | None = None
        self._dead_t: set[float] = set()
        self._trained = False
        self._sets_cache: dict[str, list[tuple[str, ...]]] = {}
        # per-call memo of pathway predictions (cleared at every public call: knowledge changes)
        self._memo: dict[tuple[Any, ...], tuple[float, float, list[dict[str, Any]], list[str]]] = {}
        self._learned: tuple[str, tuple[PathwayKnowledge, YieldModel]] | None = None

    # ================================================================== public face
    def initial_recipes(self, target: TargetSpec, history: Sequence[Observation] = ()) -> list[Recipe]:
        """At most ``max_recipes`` diverse recipes for ``target``, best first."""
        if isinstance(target, str):
            target = TargetSpec(target)
        key, e_source, sets = self._prepare(target, history)
        if self.strategy == "random":
            order = self._random_order(key, sets)
            cands = [self._evaluate(key, s, None, None, None, None) for s in order[: self.max_recipes]]
            return [self._to_recipe(key, c, e_source, "random stocked set that balances") for c in cands]
        if self.strategy == "driving_force":
            cands = self._driving_force_ranking(key, sets)
            chosen = self._diverse(cands, self.max_recipes)
            return [self._to_recipe(key, c, e_source, "ranked by overall driving force") for c in chosen]
        _, chosen, model = self._full_picks(key, sets, history)
        return [self._to_recipe(key, c, e_source, self._why_full(model)) for c in chosen]

    def ranking(self, target: TargetSpec | str, history: Sequence[Observation] = ()) -> tuple[list[Candidate], list[Candidate]]:
        """The full strategy's whole ranking of ``target``'s sets and the diverse picks
        (``initial_recipes`` turns the picks into recipes): for diagnosing why a set a chemist
        expects is not among the five — its score terms beside the picks'."""
        if isinstance(target, str):
            target = TargetSpec(target)
        key, _, sets = self._prepare(target, history)
        cands, chosen, _ = self._full_picks(key, sets, history)
        return cands, chosen

    def _full_picks(self, key: str, sets: list[tuple[str, ...]],
                    history: Sequence[Observation]) -> tuple[list[Candidate], list[Candidate], YieldModel]:
        """The full strategy's ranking and its diverse picks. Before data, with literature, only
        the sets whose score can still reach the picks are evaluated (``_within_reach``)."""
        knowledge, model = self._learn(history)
        self._trained = model.trained
        if not (PRUNE_BY_BOUND and self.literature is not None and not model.trained
                and len(sets) > 2 * self.max_recipes):
            cands = self._rank_full(key, sets, knowledge, model, history)
            return cands, self._diverse(cands, self.max_recipes), model
        bound = {s: self._score_bound(key, s, history) for s in sets}
        pending = sorted(sets, key=lambda s: (-bound[s], s))
        scores: list[float] = []
        i = 0
        while i < len(pending):
            if len(scores) >= self.max_recipes:
                kth = sorted(scores, reverse=True)[self.max_recipes - 1]
                # a pick is worth at least the k-th best score minus the diversity penalty (≤ 1
                # similarity) while fewer than k are picked: a set bounded below that is never one
                if bound[pending[i]] < kth - DIVERSITY_NATS:
                    break
            chunk = pending[i:i + PRUNE_CHUNK]
            i += len(chunk)
            scores += [c.terms["score"] for c in self._rank_full(key, chunk, knowledge, model, history)]
        kept, rest = pending[:i], pending[i:]
        while True:
            cands = self._rank_full(key, kept, knowledge, model, history)
            chosen, last = self._diverse_picks(cands, self.max_recipes)
            # the last pick avoids a powder all other picks use: an unevaluated set without it
            # may beat the last pick (any of them, when no evaluated set avoids it)
            add = [s for s in rest if last.common and not last.common <= set(s)
                   and (last.fallback or bound[s] >= last.value)][:PRUNE_CHUNK]
            if not add:
                return cands, chosen, model
            kept = kept + add
            rest = [s for s in rest if s not in add]

    def _score_bound(self, key: str, formulas: tuple[str, ...], history: Sequence[Observation]) -> float:
        """An upper bound of the full score of a set without its pathway prediction or
        temperature (the costly parts): literature, handling and experience are exact; the
        thermodynamic term is at most its cap."""
        ref = self.thermo.balance(formulas, key, 800.0)  # coefficients do not depend on T
        assert ref is not None
        lit = self._literature_term(key, formulas)[0]
        flags = self._handling_flags(ref)
        hand = -sum(HANDLING_NATS.get(h, 0.0) for h in flags)
        exp = EXPERIENCE_NATS * self._experience(key, formulas, history)[0]
        cap = THERMO_CAP_MEV if self.literature is not None else THERMO_CAP_NO_LITERATURE_MEV
        return lit + hand + exp + self._thermo_nats() * cap / 100.0 + PRUNE_SLACK_NATS

    def _thermo_nats(self) -> float:
        return THERMO_NATS_PER_100MEV if self.literature is not None else THERMO_NATS_NO_LITERATURE

    def _literature_term(self, key: str, formulas: Sequence[str]) -> tuple[float, str]:
        """The literature term (nats: ``LITERATURE_WEIGHTS`` · the evidence's parts) and its
        note for the rationale; 0 without literature."""
        if self.literature is None:
            return 0.0, ""
        parts, notes = self.literature.set_evidence(key, formulas)
        nats = sum(LITERATURE_WEIGHTS[k] * v for k, v in parts.items())
        note = "P(source) " + ", ".join(f"{self._display(f)} for {el} {p:.0%}" for el, f, p in notes)
        if parts["same_set"] > 0:
            note += f"; this set in similar targets' papers (+{LITERATURE_WEIGHTS['same_set'] * parts['same_set']:.2f})"
        if parts["compound_source"]:
            note += f"; one powder brings two elements (+{LITERATURE_WEIGHTS['compound_source']:.2f})"
        return nats, note

    def _prepare(self, target: TargetSpec, history: Sequence[Observation]) -> tuple[str, str, list[tuple[str, ...]]]:
        """Per-call state and the target's balanced sets (replay: those with rows left)."""
        self._memo.clear()
        self._exclude_rows = set()
        self._space_made: set[tuple[str, ...]] = set()
        key, e_source = self._register(target)
        self._t_hint = self._temperature_hint(key, history)
        self._pair_products(key, history)
        sets = self._balanced_sets(key)
        if self.space is not None and self.space.covers(key):
            sets = self._space_untried(key, sets, history)
            if not sets:
                raise RecipeError(f"every recorded experiment of {key} that can still help has been run")
        if not sets:
            raise RecipeError(
                f"no combination of the stocked precursors balances to {key} with the allowed "
                "gases (CO2, H2O, O2, NH3, NO2, HF); stock a precursor for each of its elements"
            )
        return key, e_source, sets

    def replace(
        self,
        recipe: Recipe,
        observed: Observation,
        history: Sequence[Observation] = (),
        *,
        pending: Sequence[Recipe] = (),
    ) -> Recipe | Exhausted:
        """A better recipe after ``observed`` fell short, or Exhausted with the reason."""
        self._memo.clear()
        self._exclude_rows = set()
        self._space_made = set()
        key = _rf(recipe.target)
        self._t_hint = self._temperature_hint(key, [*history, observed])
        _, e_source = self._register(self._spec_of(recipe))
        hist = list(history)
        if not any(o is observed or o == observed for o in hist):
            hist.append(observed)
        self._pair_products(key, hist)
        if observed.target_yield >= self.threshold:
            return Exhausted(
                key,
                f"nothing to replace: the recipe reached {observed.target_yield:.0%} "
                f"(threshold {self.threshold:.0%})",
            )
        mine = [o for o in hist if _rf(o.recipe.target) == key]
        tried = recipes_tried(key, mine, same_target=lambda a, b: _rf(a) == b)
        if tried >= self.max_attempts:
            return Exhausted(
                key,
                f"max recipes reached: {tried} of {self.max_attempts} recipes for {key} "
                f"tried, best yield {max(o.target_yield for o in mine):.0%}",
            )
        sets = self._balanced_sets(key)
        tried_sets = {tuple(sorted(_rf(p.formula) for p in o.recipe.precursors)) for o in mine}
        tried_sets |= {tuple(sorted(_rf(p.formula) for p in r.precursors)) for r in pending}
        untried = [s for s in sets if tuple(sorted(s)) not in tried_sets]
        in_space = self.space is not None and self.space.covers(key)
        if in_space:
            # a replay: only recorded rows, each run once; a set's other temperatures stay open
            self._space_untried(key, sets, mine)
            self._exclude_rows |= {self._row_key(r.precursor_formulas, r.temperature_c, r.dwell_min) for r in pending}
            open_sets = [s for s in sets if self._space_conditions(s)]
            if not open_sets:
                return Exhausted(key, f"all {len(self.space)} recorded experiments of {key} that can help were run")
            untried = [s for s in untried if s in open_sets]

        if self.strategy == "random":
            if in_space:  # random order over the recorded rows, not over sets
                return self._to_recipe(key, self._space_random(key, open_sets), e_source,
                                       "next random recorded experiment")
            order = [s for s in self._random_order(key, sets) if tuple(sorted(s)) not in tried_sets]
            if not order:
                return Exhausted(key, f"all {len(sets)} balanced stocked precursor sets tried")
            c = self._evaluate(key, order[0], None, None, None, None)
            return self._to_recipe(key, c, e_source, "next random stocked set that balances")
        if self.strategy == "driving_force":
            ranked = [c for c in self._driving_force_ranking(key, untried or open_sets if in_space else untried)]
            if not ranked:
                return Exhausted(key, f"all {len(sets)} balanced stocked precursor sets tried")
            return self._to_recipe(key, ranked[0], e_source, "next set by overall driving force")

        knowledge, model = self._learn(hist)
        self._trained = model.trained
        learned_now = knowledge.learn(observed)  # idempotent: already learned, returns reactions
        # --- option A: same set, new conditions (kinetically limited failure)
        retry = self._condition_retry(key, recipe, observed, mine, knowledge, model)
        last_resort = None
        if retry is None:
            # before giving up, new conditions for a set that visibly did not finish reacting
            last_resort = self._condition_retry(key, recipe, observed, mine, knowledge, model, force=True)
        # --- option B: the best untested set that does not fail predictably
        ranked = self._rank_full(key, untried, knowledge, model, hist)
        stall = self.min_df - self._skip_margin(key)
        viable = [c for c in ranked if c.step_force >= stall]
        skipped = [c for c in ranked if c.step_force < stall]
        why = self._why_full(model)
        lesson = ""
        if learned_now:
            lesson = "learned from the failed experiment: " + "; ".join(
                f"{' + '.join(r.reactants)} -> {r.product} at {r.temperature_c:.0f} °C" for r in learned_now
            )
        prefer_retry = retry is not None and (
            observed.target_yield >= PREFER_RETRY_YIELD
            or not viable
            or retry.prob_feasible >= 0.9 * viable[0].prob_feasible
        )
        if retry is not None and prefer_retry:
            retry.notes.append(
                f"same precursors again, {retry.temperature_c:.0f} °C for {retry.dwell_min:.0f} min "
                f"(was {recipe.temperature_c:.0f} °C / {recipe.dwell_min:.0f} min): the failure looks "
                "kinetic (target or unreacted precursors seen, driving force left)"
            )
            if lesson:
                retry.notes.append(lesson)
            return self._to_recipe(key, retry, e_source, why)
        if in_space and not viable:
            # a replay never gives up while recorded rows are left: predicted failures come last
            rest = self._rank_full(key, [s for s in open_sets if s not in untried], knowledge, model, hist)
            rest.sort(key=lambda c: -self._best_yield_of(c.formulas, mine))
            viable = (skipped + rest)[:1]
            skipped = []
        if viable:
            best = viable[0]
            if skipped:
                best.notes.append(
                    f"skipped {len(skipped)} untested set(s) predicted to stall below "
                    f"{stall:.0f} meV/atom, e.g. {' + '.join(skipped[0].formulas)}"
                )
            if lesson:
                best.notes.append(lesson)
            return self._to_recipe(key, best, e_source, why)
        if last_resort is not None:
            last_resort.notes.append(
                f"last resort before giving up: same precursors at {last_resort.temperature_c:.0f} °C "
                f"for {last_resort.dwell_min:.0f} min (precursors were left unreacted; no other set "
                "is predicted to keep enough driving force)"
            )
            if lesson:
                last_resort.notes.append(lesson)
            return self._to_recipe(key, last_resort, e_source, why)
        if not untried:
            return Exhausted(key, f"all {len(sets)} balanced stocked precursor sets tried for {key}")
        return Exhausted(
            key,
            f"no set keeps enough driving force: all {len(untried)} untested set(s) are predicted "
            f"to leave < {stall:.0f} meV/atom for the target-forming step"
            + (f" (e.g. {' + '.join(skipped[0].formulas)}: {skipped[0].step_force:.0f} meV/atom)" if skipped else ""),
        )

    # ================================================================== candidates
    @staticmethod
    def _spec_of(recipe: Recipe) -> TargetSpec:
        """The target as first given: its energy only if the caller had given one."""
        e = recipe.details.get("target_e_form_ev_per_atom")
        given = recipe.details.get("target_energy_kind") == "given"
        return TargetSpec(_rf(recipe.target), float(e) if (given and e is not None) else None)

    def _skip_margin(self, target: str) -> float:
        """meV/atom by which a predicted stall must undercut ``min_driving_force_mev`` before a
        set is skipped: the target energy's own uncertainty (none for a tabulated phase, ~GNN
        error for a given prediction, more for an on-hull guess)."""
        return ENERGY_MARGIN_MEV.get(self.thermo.target_kind.get(target, "table"), 0.0)

    def _register(self, target: TargetSpec) -> tuple[str, str]:
        try:
            key = reduced_formula(target.formula)
        except RecipeError as exc:
            raise RecipeError(f"target: {exc}") from None
        value, source = self.thermo.register_target(TargetSpec(key, target.e_form_ev_per_atom))
        return key, f"{value:.4f} eV/atom ({source})"

    def _pair_products(self, key: str, history: Sequence[Observation]) -> None:
        """Hypothetical compounds a pair of present phases may react to: this target and the
        targets of the history — never one merely planned before. Why: a plan must depend
        only on its arguments, so a resumed campaign (whose planner has forgotten earlier
        targets) decides as an uninterrupted one, and the order targets were planned in does
        not change anyone's recipes."""
        self.thermo.pair_targets = frozenset({key} | {_rf(o.recipe.target) for o in history})

    # ------------------------------------------------------------------ replay space
    @staticmethod
    def _row_key(formulas: Sequence[str], t: float, d: float) -> tuple[tuple[str, ...], float, float]:
        return (tuple(sorted(_rf(f) for f in formulas)), round(float(t), 1), round(float(d), 1))

    def _space_untried(self, key: str, sets: list[tuple[str, ...]],
                       history: Sequence[Observation]) -> list[tuple[str, ...]]:
        """Replay: the recorded rows already run are excluded, and so is every row of a set
        that already reached the threshold (it is found); the sets with rows left."""
        mine = [o for o in history if _rf(o.recipe.target) == key]
        self._exclude_rows = {self._row_key(o.recipe.precursor_formulas, o.recipe.temperature_c,
                                            o.recipe.dwell_min) for o in mine}
        self._space_made = {tuple(sorted(_rf(f) for f in o.recipe.precursor_formulas))
                            for o in mine if o.target_yield >= self.threshold}
        return [s for s in sets if self._space_conditions(s)]

    def _space_conditions(self, formulas: Sequence[str]) -> list[tuple[float, float]]:
        """Recorded (temperature, dwell) of a set not yet run (replay only)."""
        assert self.space is not None
        k = tuple(sorted(formulas))
        if k in self._space_made:
            return []
        return [(t, d) for t, d in self.space.conditions.get(k, [])
                if (k, round(t, 1), round(d, 1)) not in self._exclude_rows]

    def _space_random(self, key: str, open_sets: list[tuple[str, ...]]) -> Candidate:
        rows = sorted((s, t, d) for s in open_sets for t, d in self._space_conditions(s))
        rng = np.random.default_rng([self.seed, zlib.crc32(key.encode()), len(self._exclude_rows)])
        s, t, d = rows[int(rng.integers(len(rows)))]
        return self._evaluate(key, s, None, None, t, d)

    @staticmethod
    def _best_yield_of(formulas: Sequence[str], mine: Sequence[Observation]) -> float:
        k = sorted(formulas)
        return max((o.target_yield for o in mine if sorted(_rf(f) for f in o.recipe.precursor_formulas) == k),
                   default=0.0)

    def _temperature_hint(self, key: str, history: Sequence[Observation]) -> tuple[float, float] | None:
        """(temperature, yield) of this target's best experiment so far if the target formed
        (yield ≥ ``FORMING_YIELD``): a new set starts there — the same compound, the same
        kinetics — instead of at the literature's or the heuristic's temperature."""
        best = max((o for o in history if _rf(o.recipe.target) == key),
                   key=lambda o: o.target_yield, default=None)
        mine = [o for o in history if _rf(o.recipe.target) == key]
        # temperatures where two or more sets of this target formed nothing: try elsewhere first
        counts: dict[float, int] = {}
        for o in mine:
            if o.target_yield < FORMING_YIELD:
                counts[round(o.recipe.temperature_c, 1)] = counts.get(round(o.recipe.temperature_c, 1), 0) + 1
        self._dead_t = {t for t, n in counts.items() if n >= 2}
        if best is None or best.target_yield < FORMING_YIELD:
            return None
        return best.recipe.temperature_c, best.target_yield

    @staticmethod
    def _thermo_text(terms: dict[str, Any]) -> str:
        """The driving force the thermodynamic term counts, as the sum it is: the observed-only and
        the predicted-intermediate figures printed earlier in the rationale, weighted and capped —
        so the three numbers a reader sees add up instead of contradicting each other."""
        mev, w = terms["thermo_mev"], terms.get("thermo_prior_weight", 0.0)
        if "thermo_observed_mev" not in terms or w <= 0:
            return f"{mev:.0f} meV/atom at the target-forming step"
        capped = (max(terms["thermo_observed_mev"], terms["thermo_prior_mev"]) >= terms["thermo_cap_mev"])
        return (f"{mev:.0f} meV/atom at the target-forming step = {1 - w:.2g} × "
                f"{terms['thermo_observed_mev']:.0f} observed-only + {w:.2g} × {terms['thermo_prior_mev']:.0f} "
                "with the predicted intermediates"
                + (f", each capped at {terms['thermo_cap_mev']:.0f}" if capped else ""))

    def _display(self, formula: str) -> str:
        """How a person writes a powder: the library's formula (LiOH, not LiHO), else the shelf's."""
        p = self.library.get(formula)
        if p is not None:
            return p.formula
        return self.shelf_names.get(formula, formula)

    def _equation(self, rxn: Reaction) -> str:
        def fmt(c: float, f: str) -> str:
            name = self._display(f)
            return name if abs(c - 1) < 1e-9 else f"{c:.4g} {name}"

        left = [fmt(c, f) for f, c in rxn.reactants]
        right = [rxn.product]
        for g, c in rxn.gases:
            if g == "O2" and c < 0:
                left.append(fmt(-c, "O2"))
            elif c > 1e-12:
                right.append(fmt(c, g))
        return " + ".join(left) + " -> " + " + ".join(right)

    def usable_precursors(self, target: str) -> list[str]:
        """Stocked precursors that can contribute to ``target`` without leaving foreign elements."""
        pinned = set(amounts_of(target)) - {"O"}
        out = []
        for key, p in self.stock.items():
            elems = set(p.elements)
            own = elems - {"O"}
            if not (own & pinned):
                continue
            foreign = elems - pinned - {"O"}
            if foreign - GASIFIABLE:
                continue
            if "F" in foreign and "H" not in elems:
                continue  # a metal fluoride is no source for an F-free target (F leaves only as HF)
            out.append(key)
        return sorted(out)

    def _balanced_sets(self, target: str) -> list[tuple[str, ...]]:
        if target in self._sets_cache:
            return self._sets_cache[target]
        pinned = set(amounts_of(target)) - {"O"}
        if self.space is not None and self.space.covers(target):
            out_space: list[tuple[str, ...]] = []
            self.space_unusable: dict[tuple[str, ...], str] = {}
            for combo in self.space.conditions:
                off = [f for f in combo if f not in self.stock]
                if off:
                    self.space_unusable[combo] = f"{', '.join(off)} not usable ({self.unusable.get(off[0], 'unknown')})"
                elif self.thermo.balance(combo, target, 800.0) is None:
                    self.space_unusable[combo] = f"does not balance to {target}"
                else:
                    out_space.append(combo)
            self._sets_cache[target] = out_space
            return out_space
        usable = self.usable_precursors(target)
        provided = set().union(*[set(self.stock[u].elements) for u in usable]) if usable else set()
        missing = sorted(pinned - provided)
        if missing:
            raise MissingElementsError(target, missing)
        if self.literature is not None and (len(usable) > LITERATURE_PRUNE_ABOVE
                                            or math.comb(len(usable), len(pinned)) > 5 * LITERATURE_COMBOS):
            # a large shelf: per element, only the powders similar targets' papers use most
            keep: set[str] = set()
            per = max(2, min(LITERATURE_SOURCES_PER_ELEMENT, round(LITERATURE_COMBOS ** (1 / len(pinned)))))
            for el in sorted(pinned):
                probs = self.literature.source_probabilities(target, el)
                with_el = [u for u in usable if el in self.stock[u].elements]
                with_el.sort(key=lambda u: (-probs.get(u, 0.0), u))
                keep.update(with_el[:per])
            usable = [u for u in usable if u in keep]
        pinned_of = {u: frozenset(set(self.stock[u].elements) & pinned) for u in usable}
        out: list[tuple[str, ...]] = []
        # literature on: as many powders as the target has elements (doped targets, 5 cations)
        largest = max(self.max_set_size, len(pinned)) if self.literature is not None else self.max_set_size
        for size in range(1, min(len(pinned), largest) + 1):
            for combo in itertools.combinations(usable, size):
                if set().union(*(pinned_of[c] for c in combo)) != pinned:
                    continue
                if self.thermo.balance(combo, target, 800.0) is not None:
                    out.append(combo)
        self._sets_cache[target] = out
        return out

    def _random_order(self, target: str, sets: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        rng = np.random.default_rng([self.seed, zlib.crc32(target.encode())])
        idx = rng.permutation(len(sets))
        return [sets[i] for i in idx]

    def _features(
        self, target: str, formulas: tuple[str, ...], rxn: Reaction, remaining: float, t: float, dwell: float
    ) -> list[float]:
        reactants = list(rxn.reactants)
        homologous = (t + 273.15) / mean_melting_k(self.library, reactants, at_c=t)
        total = sum(c for _, c in reactants)
        vol = sum(c for f, c in reactants if self.library.describe(f).volatile_at(t)) / total
        return [-rxn.energy_mev_per_atom, remaining, t, math.log10(max(dwell, 1.0)), homologous, vol]

    def _evaluate(
        self,
        target: str,
        formulas: tuple[str, ...],
        knowledge: PathwayKnowledge | None,
        model: YieldModel | None,
        temperature_c: float | None,
        dwell_min: float | None,
        *,
        score: bool = True,
    ) -> Candidate:
        """Candidate at given conditions (None: the heuristic's); ``score=False`` leaves the
        yield-model fields for a batched call."""
        ref = self.thermo.balance(formulas, target, 800.0)
        assert ref is not None
        heur = heuristic_conditions(
            self.library, list(ref.reactants), -ref.energy_mev_per_atom, self.min_c, self.max_c
        )
        t_pred, reasons, lit_dwell = heur.temperature_c, heur.reasons, None
        guess = (self.literature.temperature(target, formulas, PLANNER_TEMPERATURE_KIND)
                 if self.literature is not None else None)
        if guess is not None:
            t_pred = min(max(float(round(guess.temperature_c / 25.0) * 25.0), self.min_c), self.max_c)
            how = ("tree ensemble over precursor and neighbour features" if guess.method == "tree ensemble"
                   else "weighted median")
            reasons = (f"literature: {guess.kind} temperature from {guess.support} syntheses of similar targets "
                       f"(nearest {display_formula(guess.nearest)}; {how}) = {guess.temperature_c:.0f} °C",)
            if RAISE_TO_TAMMANN and heur.temperature_c > t_pred:
                t_pred = heur.temperature_c
                reasons = (*reasons, f"raised to {t_pred:.0f} °C, the Tammann rule's: colder, the solids "
                           "barely diffuse and a first firing that forms nothing is an experiment lost")
            if heur.cap_c is not None and heur.cap_c >= heur.floor_c and t_pred > heur.cap_c:
                t_pred = max(float(round(heur.cap_c / 25.0) * 25.0), self.min_c)
                reasons = (*reasons, f"capped at {t_pred:.0f} °C: a volatile precursor loses material above it")
            if guess.hours is not None:
                lit_dwell = min(DWELL_CHOICES, key=lambda d: abs(math.log(d / max(guess.hours * 60.0, 1.0))))
        if self._t_hint is not None and self.strategy == "full":
            t_pred = min(max(self._t_hint[0], self.min_c), self.max_c)
            reasons = (f"this target formed best so far at {self._t_hint[0]:.0f} °C "
                       f"(yield {self._t_hint[1]:.0%})",)
        if temperature_c is None and self.space is not None and self.space.covers(target):
            rows = self._space_conditions(formulas) or self.space.conditions.get(tuple(sorted(formulas)), [])
            temperature_c, dwell_min = min(rows, key=lambda r: (
                self._t_hint is None and round(r[0], 1) in self._dead_t,  # nothing formed there twice
                abs(r[0] - t_pred), abs(r[1] - (lit_dwell or 240.0))))
            reasons = (*reasons, f"recorded experiment closest to that: {temperature_c:.0f} °C for {dwell_min:.0f} min")
        t = t_pred if temperature_c is None else temperature_c
        rxn = self.thermo.balance(formulas, target, t)
        assert rxn is not None
        dwell = dwell_min
        if dwell is None:
            dwell = lit_dwell if lit_dwell is not None else heuristic_conditions(
                self.library, list(rxn.reactants), -rxn.energy_mev_per_atom, self.min_c, self.max_c
            ).dwell_min
        overall = -rxn.energy_mev_per_atom
        remaining = prior_remaining = overall
        steps: list[dict[str, Any]] = []
        inter: list[str] = []
        memo_key = (target, formulas, round(t, 3), knowledge is not None)
        if memo_key in self._memo:
            remaining, prior_remaining, steps, inter = self._memo[memo_key]
        elif knowledge is not None:
            start = effective_phases(list(rxn.reactants), self.library, t)
            learned = knowledge.predict(list(rxn.reactants), target, t, prior=False)
            remaining = self._step_force(learned, overall)
            steps = [s.to_dict() for s in learned.steps]
            inter = learned.intermediates(start, target)
            if self.pairwise_prior:
                full = knowledge.predict(list(rxn.reactants), target, t, prior=True)
                prior_remaining = self._step_force(full, overall)
                steps = [s.to_dict() for s in full.steps]
                inter = full.intermediates(start, target)
            else:
                prior_remaining = remaining
        self._memo[memo_key] = (remaining, prior_remaining, steps, inter)
        feats = self._features(target, formulas, rxn, remaining, t, dwell)
        cand = Candidate(
            formulas, rxn, t, dwell, tuple(reasons), remaining, prior_remaining, steps, inter, feats
        )
        if model is not None and score:
            self._score([cand], model)
        return cand

    @staticmethod
    def _score(cands: list[Candidate], model: YieldModel) -> None:
        """P(yield ≥ threshold) and predicted yield for many candidates in one GP call."""
        if not cands:
            return
        feats = [c.features for c in cands]
        pf = model.prob_feasible(feats)
        mean, _ = model.predict(feats)
        for c, p, m in zip(cands, pf, mean, strict=True):
            c.prob_feasible = float(p)
            c.predicted_yield = float(m)

    @staticmethod
    def _step_force(path: Any, overall: float) -> float:
        """Driving force (meV/atom, positive downhill) of the step that forms the target."""
        if path.remaining_mev_per_atom is None:
            return overall
        if path.target_formed_by_step:
            return max(-path.remaining_mev_per_atom, overall)
        return -path.remaining_mev_per_atom

    def _driving_force_ranking(self, target: str, sets: list[tuple[str, ...]]) -> list[Candidate]:
        cands = [self._evaluate(target, s, None, None, None, None) for s in sets]
        cands.sort(key=lambda c: (-c.driving_force, c.formulas))
        return cands

    # ================================================================== learning
    def _learn(self, history: Sequence[Observation]) -> tuple[PathwayKnowledge, YieldModel]:
        """Pairwise reactions and the yield GP, rebuilt from the whole history.

        Memoised on the history's content: a campaign asks for recipes for several new targets
        between two results, and each rebuild refits the GP (tens to hundreds of ms); the same
        history always gives the same knowledge and model, so the last one is reused.
        """
        key = _history_key(history)
        if self._learned is not None and self._learned[0] == key:
            return self._learned[1]
        warm = self._learned[1][1] if self._learned is not None else None
        learned = self._learn_from(history, warm)
        self._learned = (key, learned)
        return learned

    def _learn_from(self, history: Sequence[Observation],
                    warm: YieldModel | None = None) -> tuple[PathwayKnowledge, YieldModel]:
        knowledge = PathwayKnowledge(self.thermo, self.library)
        for obs in history:
            self._register_quiet(obs.recipe)
            knowledge.learn(obs)
        model = YieldModel(self.threshold)
        xs, ys = [], []
        for obs in history:
            tgt = _rf(obs.recipe.target)
            formulas = tuple(_rf(p.formula) for p in obs.recipe.precursors)
            t = obs.recipe.temperature_c
            rxn = self.thermo.balance(formulas, tgt, t)
            if rxn is None:
                continue  # a recipe from another planner that does not balance: no features
            path = knowledge.predict(list(rxn.reactants), tgt, t, prior=False)
            rem = self._step_force(path, -rxn.energy_mev_per_atom)
            xs.append(self._features(tgt, formulas, rxn, rem, t, obs.recipe.dwell_min))
            ys.append(obs.target_yield)
        model.fit(xs, ys, warm=warm)
        return knowledge, model

    def _register_quiet(self, recipe: Recipe) -> None:
        """Give history targets (other compounds) an energy so their reactions can be learned."""
        key = _rf(recipe.target)
        if key not in self.thermo.target_kind:
            try:
                self.thermo.register_target(self._spec_of(recipe))
            except Exception:  # noqa: BLE001 - a history target we cannot place is skipped
                pass

    def _experience(self, target: str, formulas: tuple[str, ...], history: Sequence[Observation]) -> tuple[float, str]:
        """Track record of these precursors as sources of the same elements in other targets:
        mean of (successes + 1)/(tries + 2) − 0.5 over (element, precursor) pairs with data."""
        pinned = set(amounts_of(target)) - {"O"}
        stats: dict[tuple[str, str], list[int]] = {}
        for obs in history:
            tgt_el = set(amounts_of(obs.recipe.target)) - {"O"}
            ok = int(obs.target_yield >= self.threshold)
            for p in obs.recipe.precursors:
                for el in set(self.library.describe(p.formula).elements) & tgt_el & pinned:
                    s = stats.setdefault((el, _rf(p.formula)), [0, 0])
                    s[0] += ok
                    s[1] += 1
        scores, notes = [], []
        for f in formulas:
            for el in sorted(set(self.library.describe(f).elements) & pinned):  # stable text
                if (el, f) in stats:
                    s, n = stats[(el, f)]
                    scores.append((s + 1) / (n + 2) - 0.5)
                    notes.append(f"{f} as {el} source worked {s}/{n}")
        if not scores:
            return 0.0, ""
        return float(np.mean(scores)), "experience: " + ", ".join(notes)

    # ================================================================== full ranking
    def _conditions_grid(self, heuristic_t: float) -> list[tuple[float, float]]:
        temps = sorted({
            min(max(heuristic_t + d, self.min_c), self.max_c) for d in range(-100, 201, 50)
        })
        return [(t, d) for t in temps for d in DWELL_CHOICES]

    def _best_conditions(
        self, target: str, formulas: tuple[str, ...], knowledge: PathwayKnowledge, model: YieldModel,
        *, above: tuple[float, float] | None = None,
    ) -> Candidate | None:
        """Heuristic conditions unless a GP trained on enough yields finds conditions it rates
        at least ``GP_CONDITION_GAIN`` more likely to succeed: the grid is filtered by
        P(feasible) (≥ 80 % of the best), then the highest predicted yield wins, the conditions
        closest to the heuristic's on ties. ``above``: only hotter or longer than (T, dwell)."""
        base = self._evaluate(target, formulas, knowledge, model, None, None)
        if not model.trained or model.n_train < GP_MIN_POINTS_FOR_CONDITIONS:
            return base if above is None else None
        grid = self._conditions_grid(base.temperature_c)
        if self.space is not None and self.space.covers(target):
            grid = self._space_conditions(formulas)
        if above is not None:
            t0, d0 = above
            grid = [(t, d) for t, d in grid if (t > t0 + 1 and d >= min(d0, 240)) or (t >= t0 - 1 and d > d0 + 1)]
            if not grid:
                return None
        if not grid:
            return base
        cands = [self._evaluate(target, formulas, knowledge, model, t, d, score=False) for t, d in grid]
        self._score(cands, model)
        pf = np.array([c.prob_feasible for c in cands])
        keep = [c for c, p in zip(cands, pf, strict=True) if p >= 0.8 * pf.max()]
        # ties (predicted yields within 0.05) go to the heuristic temperature, then its dwell
        keep.sort(key=lambda c: (
            -round(c.predicted_yield * 20),
            abs(c.temperature_c - base.temperature_c),
            abs(math.log(c.dwell_min / base.dwell_min)),
        ))
        if above is None and keep[0].prob_feasible < base.prob_feasible + GP_CONDITION_GAIN:
            return base
        return keep[0]

    def _rank_full(
        self,
        target: str,
        sets: list[tuple[str, ...]],
        knowledge: PathwayKnowledge,
        model: YieldModel,
        history: Sequence[Observation],
    ) -> list[Candidate]:
        """Filter by probability of feasibility, then order by driving force left + experience."""
        quick = [self._evaluate(target, s, knowledge, model, None, None, score=False) for s in sets]
        self._score(quick, model)
        if model.trained and len(quick) > CONDITION_SEARCH_SETS:
            quick.sort(key=lambda c: (-c.prob_feasible, -c.driving_force))
            quick = quick[:CONDITION_SEARCH_SETS]  # condition search only for promising sets
        cands: list[Candidate] = []
        for q in quick:
            c = q
            if model.trained and model.n_train >= GP_MIN_POINTS_FOR_CONDITIONS:
                c = self._best_conditions(target, q.formulas, knowledge, model)
            if c is None:
                continue
            c.experience, c.experience_note = self._experience(target, c.formulas, history)
            if self.literature is not None:
                c.literature_nats, c.literature_note = self._literature_term(target, c.formulas)
            c.terms = self._score_terms(c)
            cands.append(c)
        if not cands:
            return []
        best_pf = max(c.prob_feasible for c in cands)
        # the feasibility filter once the yield model has yields; before data its physics prior
        # only filters when no literature knows better
        cut = max(0.05, 0.5 * best_pf) if (model.trained or self.literature is None) else -1.0
        feasible = sorted((c for c in cands if c.prob_feasible >= cut), key=lambda c: (-c.terms["score"], c.formulas))
        rest = sorted((c for c in cands if c.prob_feasible < cut), key=lambda c: (-c.prob_feasible, c.formulas))
        ranked = feasible + rest
        for c in rest:
            c.feasible = False
        for i, c in enumerate(ranked):
            other = ranked[i + 1] if i + 1 < len(ranked) else None
            if other is None:
                c.decided_by = ""
            elif c in feasible and other not in feasible:
                c.decided_by = (f"ranked above {' + '.join(map(self._display, other.formulas))} by the yield "
                                f"model: P(yield ≥ {self.threshold:.0%}) {c.prob_feasible:.2f} vs {other.prob_feasible:.2f}")
            elif c in feasible:
                gains = {k: c.terms[k] - other.terms[k] for k in ("literature", "thermodynamics", "handling", "experience")}
                term = max(gains, key=lambda k: gains[k])
                c.decided_by = (f"ranked above {' + '.join(map(self._display, other.formulas))} by "
                                f"{term} (+{gains[term]:.2f} nats of +{c.terms['score'] - other.terms['score']:.2f})")
        return ranked

    def _score_terms(self, c: Candidate) -> dict[str, float]:
        """The full strategy's one score, in nats (natural-log odds), and its terms:

        - literature: ``LITERATURE_WEIGHTS`` · the parts of the literature evidence for the set
          as the precursors of the target (``LiteratureModel.set_evidence``: log P of each
          element's source among similar targets' papers, the same set in their papers, sources
          no paper used, pairs of powders used together, the powders' popularity, one powder
          bringing two elements), 0 without literature;
        - thermodynamics: ``THERMO_NATS_PER_100MEV`` (``THERMO_NATS_NO_LITERATURE`` without
          literature) per 100 meV/atom of driving force at the
          target-forming step (½ from observed reactions, ½ with the pairwise thermodynamic
          prior for unobserved pairs; never more than the overall reaction's), capped at
          ``THERMO_CAP_MEV`` (300: past that, more driving force does not make a set likelier
          to work; 1000 without literature), uncapped below (an uphill step sinks the set);
        - handling: − ``HANDLING_NATS`` per hazard flag of the powders (air-sensitive,
          carcinogen, toxic, deliquescent; "elemental": a metal or element for an oxide target):
          a chemist avoids them when an equal route exists;
        - experience: ``EXPERIENCE_NATS`` × the powders' track record in this campaign.
        """
        cap = THERMO_CAP_MEV if self.literature is not None else THERMO_CAP_NO_LITERATURE_MEV
        evidence = min(c.step_force, cap)
        prior = min(c.prior_remaining_mev, c.driving_force, cap)
        w = PRIOR_WEIGHT if self.pairwise_prior else 0.0
        thermo_mev = max((1 - w) * evidence + w * prior, THERMO_FLOOR_MEV)
        flags = self._handling_flags(c.reaction)
        terms = {
            "literature": c.literature_nats,
            "thermodynamics": self._thermo_nats() * thermo_mev / 100.0,
            "handling": -sum(HANDLING_NATS.get(h, 0.0) for h in flags),
            "experience": EXPERIENCE_NATS * c.experience,
            "thermo_mev": thermo_mev,
            # what thermo_mev is made of, so a rationale can show the sum it prints
            "thermo_observed_mev": evidence,
            "thermo_prior_mev": prior,
            "thermo_prior_weight": w,
            "thermo_cap_mev": cap,
            "flags": sorted(flags),
        }
        terms["score"] = terms["literature"] + terms["thermodynamics"] + terms["handling"] + terms["experience"]
        return terms

    def _handling_flags(self, rxn: Reaction) -> set[str]:
        flags = {h for f, _ in rxn.reactants for h in self.library.describe(f).handling}
        if "O" in amounts_of(rxn.product) and any(len(amounts_of(f)) == 1 for f, _ in rxn.reactants):
            flags.add("elemental")  # a metal or element for an oxide: burns exothermically first in air
        return flags

    def _condition_retry(
        self,
        target: str,
        recipe: Recipe,
        observed: Observation,
        mine: list[Observation],
        knowledge: PathwayKnowledge,
        model: YieldModel,
        *,
        force: bool = False,
    ) -> Candidate | None:
        """Same set hotter or longer, if the failure looks kinetic and not retried too often.

        Kinetic: the target formed in part, or unreacted precursors are still there. When the
        target formed (yield ≥ ``FORMING_YIELD``) that evidence beats any predicted stall.
        Without a trained GP the new conditions are +50 °C and twice the dwell (≤ 12 h)."""
        formulas = tuple(_rf(p.formula) for p in recipe.precursors)
        same = [o for o in mine if sorted(_rf(p.formula) for p in o.recipe.precursors) == sorted(formulas)]
        forming = observed.target_yield >= FORMING_YIELD
        if len(same) > MAX_CONDITION_RETRIES:
            return None
        if self.thermo.balance(formulas, target, recipe.temperature_c) is None:
            return None
        start = set(effective_phases(
            [(p.formula, max(p.moles, 1e-12)) for p in recipe.precursors], self.library, recipe.temperature_c
        )) | set(formulas)
        seen = {_rf(f) for f, w in observed.phases.items() if w >= 0.02}
        kinetic = observed.target_yield >= 0.05 or bool(seen & start)
        if not kinetic:
            return None
        t0, d0 = recipe.temperature_c, recipe.dwell_min
        if model.trained and model.n_train >= GP_MIN_POINTS_FOR_CONDITIONS:
            cand = self._best_conditions(target, formulas, knowledge, model, above=(t0, d0))
        elif self.space is not None and self.space.covers(target):
            hotter = [(t, d) for t, d in self._space_conditions(formulas)
                      if t > t0 + 1 or (t >= t0 - 1 and d > d0 + 1)]
            if not hotter:
                return None
            t, d = min(hotter)
            cand = self._evaluate(target, formulas, knowledge, model, t, d)
        else:
            t = min(self.max_c, t0 + RETRY_STEP_C)
            d = min(max(DWELL_CHOICES), 2 * d0)
            if t <= t0 and d <= d0:
                return None
            cand = self._evaluate(target, formulas, knowledge, model, t, d)
        if cand is None:
            return None
        if not (forming or force) and cand.step_force < self.min_df - self._skip_margin(target):
            return None
        cand.experience, cand.experience_note = self._experience(target, formulas, mine)
        return cand

    # ================================================================== output
    def _diverse(self, cands: list[Candidate], n: int) -> list[Candidate]:
        return self._diverse_picks(cands, n)[0]

    def _diverse_picks(self, cands: list[Candidate], n: int) -> tuple[list[Candidate], LastPick]:
        """Greedy pick in rank order, refusing near-duplicates of sets already picked: first
        pass Jaccard ≤ 1/3 (on precursors and on the solids they decompose to), then ≤ 1/2,
        then the least similar left, so we always return min(n, len(cands)) recipes."""

        def sim(a: Candidate, b: Candidate) -> float:
            sa, sb = set(a.formulas), set(b.formulas)
            j1 = len(sa & sb) / len(sa | sb)
            if not DIVERSITY_DECOMPOSED:
                return j1
            ea = set(effective_phases(list(a.reaction.reactants), self.library, a.temperature_c))
            eb = set(effective_phases(list(b.reaction.reactants), self.library, b.temperature_c))
            j2 = len(ea & eb) / len(ea | eb)
            return max(j1, j2)

        chosen: list[Candidate] = []
        last_pick = LastPick()
        if cands and all(c.terms for c in cands):
            # the full strategy: maximal marginal relevance on its one score — each pick maximises
            # score − DIVERSITY_NATS × (Jaccard similarity to the closest set already picked),
            # feasible sets (yield model) before the rest, and no powder in every pick (the last
            # pick avoids one common to all others); the picks are shown in score order
            while len(chosen) < min(n, len(cands)):
                rest = [c for c in cands if not any(c is x for x in chosen)]
                common = set.intersection(*(set(x.formulas) for x in chosen)) if len(chosen) > 1 else set()
                last = common and len(chosen) == min(n, len(cands)) - 1
                if last:
                    # the last pick gives an alternative to a powder every other pick uses
                    avoiding = [c for c in rest if not common <= set(c.formulas)]
                    last_pick = LastPick(frozenset(common), -math.inf, not avoiding)
                    rest = avoiding or rest

                def value(c: Candidate) -> tuple[bool, float]:
                    return c.feasible, c.terms["score"] - DIVERSITY_NATS * max((sim(c, x) for x in chosen), default=0.0)

                chosen.append(max(rest, key=value))
                if last:
                    last_pick = LastPick(last_pick.common, value(chosen[-1])[1], last_pick.fallback)
            order = {id(c): i for i, c in enumerate(cands)}
            chosen.sort(key=lambda c: order[id(c)])
            return chosen, last_pick
        for limit in (1 / 3 + 1e-9, 0.5 + 1e-9):
            for c in cands:
                if len(chosen) >= n:
                    break
                if any(c is x for x in chosen):
                    continue
                if all(sim(c, x) <= limit for x in chosen):
                    chosen.append(c)
        # fill up with the least similar remaining candidates (rank order breaks ties)
        while len(chosen) < min(n, len(cands)):
            rest = [c for c in cands if not any(c is x for x in chosen)]
            chosen.append(min(rest, key=lambda c: max(sim(c, x) for x in chosen)))
        order = {id(c): i for i, c in enumerate(cands)}
        chosen.sort(key=lambda c: order[id(c)])
        return chosen, last_pick

    def _why_full(self, model: YieldModel) -> str:
        if model.trained:
            return (f"yield GP on {model.n_train} result(s): filtered by P(yield ≥ {self.threshold:.0%}), "
                    "then ordered by the score")
        if self.literature is None:
            return ("before data: physics prior on P(yield ≥ threshold) as a filter, then ordered by the score "
                    "(thermodynamics, handling, experience; no literature)")
        return "before data: ordered by the score (literature + thermodynamics + handling + experience)"

    def _to_recipe(self, target: str, c: Candidate, e_source: str, why: str) -> Recipe:
        rxn = c.reaction
        n_target = self.batch_mass_g / molar_mass(target)
        precursors = []
        for f, coeff in rxn.reactants:
            p = self.stock.get(f)
            label = self.shelf_names.get(f) or (p.formula if p is not None else f)
            moles = coeff * n_target
            precursors.append(
                PrecursorAmount(label, round(moles, 8), round(moles * molar_mass(f), 6))
            )
        profile = build_profile(self.library, [f for f, _ in rxn.reactants], c.temperature_c, c.dwell_min)
        equation = self._equation(rxn)
        parts = [
            f"{equation}: overall driving force {c.driving_force:.0f} meV/atom at {c.temperature_c:.0f} °C"
            + (" (uphill: the target should not form)" if c.driving_force < 0 else ""),
        ]
        trained = False
        if self.strategy == "full":
            terms = c.terms or self._score_terms(c)
            with_prior = min(c.prior_remaining_mev, c.driving_force)
            if c.pathway_steps:
                first = c.pathway_steps[0]
                parts.append(
                    f"predicted first step {' + '.join(map(self._display, first['reactants']))} -> "
                    f"{self._display(first['product'])} ({first['source']}), leaving {with_prior:.0f} meV/atom "
                    f"for the target-forming step ({c.step_force:.0f} counting only reactions observed in "
                    "experiments)"
                )
            else:
                parts.append("no intermediate predicted: the full driving force goes to the target")
            parts.append(
                f"score {terms['score']:.2f} nats = literature {terms['literature']:.2f}"
                + (f" ({c.literature_note})" if c.literature_note else "")
                + f" + thermodynamics {terms['thermodynamics']:.2f} ({self._thermo_text(terms)})"
                f" + handling {terms['handling']:.2f} + experience {terms['experience']:.2f}"
            )
            if c.decided_by:
                parts.append(c.decided_by)
            trained = self._trained  # the GP of this call has yields
            if trained:
                parts.append(f"yield GP: predicted yield {c.predicted_yield:.2f}, "
                             f"P(yield ≥ {self.threshold:.0%}) = {c.prob_feasible:.2f}")
            else:
                parts.append(f"physics prior (no yields yet): P(yield ≥ {self.threshold:.0%}) = {c.prob_feasible:.2f}")
            if c.experience_note:
                parts.append(c.experience_note)
        parts.append(f"{c.temperature_c:.0f} °C for {c.dwell_min:.0f} min ({'; '.join(c.heuristic_reasons)})")
        if self.literature is not None and self.literature.attribution:
            parts.append("literature: Kononova et al. 2019 text-mined reactions")
        handling = sorted({h for f, _ in rxn.reactants for h in self.library.describe(f).handling}
                          | ({"elemental"} & set((c.terms or {}).get("flags", ()))))
        if handling:
            parts.append("handling: " + ", ".join(handling))
        undescribed = [f for f, _ in rxn.reactants if not self.library.describe(f).described]
        if undescribed:
            parts.append(f"not in the precursor library (neutral properties assumed): {', '.join(undescribed)}")
        parts.extend(c.notes)
        parts.append(why)
        details = {
            "reaction": {**rxn.to_dict(), "equation": equation},
            "score_terms": {k: v for k, v in (c.terms or {}).items() if k != "flags"},
            "target_e_form_ev_per_atom": self.thermo.formation_energy(target),
            "target_energy_source": e_source,
            "target_energy_kind": self.thermo.target_kind.get(target, "table"),
            "remaining_driving_force_mev_per_atom": c.remaining_mev,
            "prior_remaining_driving_force_mev_per_atom": c.prior_remaining_mev,
            "predicted_pathway": c.pathway_steps,
            "predicted_intermediates": c.intermediates,
            "features": dict(zip(
                ("driving_force_mev", "remaining_mev", "temperature_c", "log10_dwell_min",
                 "homologous_t", "volatile_share"), c.features, strict=True)),
            "prob_feasible": c.prob_feasible,
            "strategy": self.strategy,
            "batch_mass_g": self.batch_mass_g,
        }
        return Recipe(
            target=target,
            precursors=tuple(precursors),
            profile=profile,
            atmosphere=self.atmosphere,
            planner=self.strategy,
            rationale="; ".join(parts),
            driving_force_mev_per_atom=round(c.driving_force, 3),
            # a yield prediction only from a GP on yields: the prior is a probability, not a yield
            predicted_yield=round(c.predicted_yield, 4) if (self.strategy == "full" and trained) else None,
            details=details,
        )
