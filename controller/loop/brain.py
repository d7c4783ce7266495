"""The campaign's brain, as the loop sees it: candidates, models, acquisition, recipes, XRD.

Why a thin adapter: the loop must not care how a surrogate is trained or a pattern fitted. The
brain gives the loop one object with its verbs — ``candidates``, ``train``/``select``
(``discovery.Surrogate``), ``planner`` (``recipes.RecipePlanner``), ``analyze``
(``assess.PhaseAssessor``) — over the other packages' faces and a ``PublicWorld``.

What the brain may know of a simulated world: its list of hypothetical target compositions
(a candidate list, like a chemist's wish list), the precursors on its shelf and the public
crystal structures of known phases. Never the truth attached to the targets.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import surrogates  # a lazy face: the candidate generator loads on first use
from recipes import RecipePlanner, on_shelf, read_stock_file
from surrogates import chemical_system, reduced_formula

from ..config import CampaignConfig, campaign_path
from ..xrd import XrdPattern
from .analysis_pool import AnalysisPool
from .assess import Assessed, PhaseAssessor
from .discovery import Pick, Surrogate, Trained
from .public_world import PublicWorld
from .strategy import strategy

if TYPE_CHECKING:
    from surrogates import StructurePredictor

log = logging.getLogger(__name__)


class Brain:
    """Real implementation over ``surrogates``, ``recipes`` and ``controller.xrd``."""

    def __init__(self, cfg: CampaignConfig, *, world: PublicWorld | None = None,
                 strategy: str = "full", base_dir: str | Path | None = None):
        self.cfg = cfg
        self.world = world  # a simulated lab's public view; None for a real lab
        # relative recipe files (stock, extra precursors) are read from the campaign directory
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.strategy = strategy
        self.seed = int(cfg.campaign.seed)
        self.surrogate = Surrogate(cfg, world, seed=self.seed)
        self.assessor = PhaseAssessor(cfg, world)
        self._predictor: StructurePredictor | None = None
        self._planner: RecipePlanner | None = None

    def candidates(self) -> list[surrogates.Candidate]:
        """The pool: the configured sources; in a simulated lab, restricted to the world's wish list.

        A wish-list composition that is a known phase takes its public structure. One no source
        produced a structure for gets a predicted one (``surrogates.StructurePredictor``:
        substitution into a public known structure, else decoration of a public template with
        the same anonymised formula), so every target has a structure for the surrogate and the
        XRD analysis.
        """
        cs = self.cfg.chemical_space
        systems = list(cs.systems)
        wish: list[str] | None = None
        if self.world is not None:
            wish = list(dict.fromkeys(reduced_formula(f) for f in self.world.target_formulas))
            systems = sorted(set(systems) | {chemical_system(f) for f in wish})
        found: list[Any] = []
        for source in cs.candidate_sources:
            if source.kind == "substitution" and source.generator == "pool":
                pool, reports = surrogates.build_candidate_pool(
                    systems, seed=self.seed, max_candidates=cs.max_candidates,
                    settings=surrogates.PoolSettings(substitution_threshold=source.threshold))
                for rep in reports:
                    log.info("candidate pool %s", rep.as_dict())
                found += pool
            elif source.kind == "substitution":
                found += surrogates.generate_candidates(systems, seed=self.seed, max_candidates=cs.max_candidates,
                                             threshold=source.threshold)
            elif source.kind == "cif_dir":
                cands, errors = surrogates.read_candidate_cifs(source.path)
                for err in errors:
                    log.warning("candidate CIF skipped: %s", err)
                found += cands
            elif source.kind == "screen":
                found += surrogates.read_screen_candidates(source.path, top=source.top)
        out: list[surrogates.Candidate] = []
        seen: set[str] = set()
        # a wish-list compound that is already known has public crystallography, and a
        # hypothetical one a database has computed comes with that structure (as the A-Lab's
        # targets came with DFT structures): a lab uses those, the brain's prediction is only a
        # fallback
        public = [] if self.world is None else [
            ("known", self.world.known_structures, "known phase"),
            ("computed", self.world.computed_structures, "published computed structure")]
        for kind, structures, what in public:
            for formula in wish or []:
                if formula in structures and formula not in seen:
                    seen.add(formula)
                    out.append(surrogates.Candidate(f"{kind}:{formula}", formula, structures[formula],
                                                    f"{kind}-structure", {"kind": what}))
        for cand in found:
            formula = reduced_formula(cand.formula)
            if (wish is not None and formula not in wish) or formula in seen:
                continue
            seen.add(formula)
            out.append(surrogates.Candidate(cand.id, formula, cand.structure, cand.source,
                                            {"id": cand.id, **_plain(cand.provenance)}))
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
            out.append(surrogates.Candidate(f"predicted:{formula}", formula, struct,
                                            "prototype-decoration", {"template": template}))
        return out

    @property
    def structure_predictor(self) -> StructurePredictor:
        """Structure prediction over the world's public known structures, prepared once."""
        if self._predictor is None:
            # imported here: the predictor's module loads the candidate generator and the MP
            # hull code, which a controller that only serves pages never needs
            known = self.world.known_structures if self.world is not None else {}
            self._predictor = surrogates.StructurePredictor(known)
        return self._predictor

    @property
    def planner(self) -> RecipePlanner:
        """The recipe planner of this campaign, built once (its caches outlive a call)."""
        if self._planner is None:
            rc = self.cfg.recipes
            extra = campaign_path(rc.extra_precursors, self.base_dir) if rc.extra_precursors else None
            self._planner = RecipePlanner(stock=self.stock(), max_recipes=rc.max_recipes_per_target,
                                          yield_threshold=rc.yield_threshold,
                                          strategy=strategy(self.strategy).recipes,
                                          seed=self.seed, min_temperature_c=rc.min_temperature_c,
                                          max_temperature_c=rc.max_temperature_c,
                                          min_driving_force_mev=rc.min_driving_force_mev,
                                          extra_precursors=extra)
        return self._planner

    def stock(self) -> list[str] | None:
        """The powders the planner may propose; None = the whole precursor library.

        ``recipes.stock`` is a list or a stock file (``recipes.read_stock_file``; a relative
        path from the campaign directory). Why read here and not left to the planner: the file
        used to be ignored silently and a real lab was offered the whole library, powders it
        does not have. A simulated lab's shelf is its world's; a configured stock narrows it,
        and a stocked powder the world's shelf lacks is skipped with a warning naming it (the
        planner skips a powder it cannot use the same way).
        """
        configured = self.cfg.recipes.stock
        if isinstance(configured, str):
            configured = read_stock_file(campaign_path(configured, self.base_dir))
        if self.world is None:
            return list(configured) if configured is not None else None
        shelf = list(self.world.precursors)
        if configured is None:
            return shelf
        kept, off = on_shelf(configured, shelf)
        for formula in off:
            log.warning("stocked precursor %s skipped: not on the simulated world's shelf", formula)
        return kept

    # the loop's verbs, each served by one part
    def train(self, cands: list[Any], results: list[tuple[int, float]], previous: Any,
              seed: int) -> Trained:
        return self.surrogate.train(cands, results, previous, seed)

    def load_model(self, checkpoint: bytes) -> Any:
        return self.surrogate.load_model(checkpoint)

    def select(self, model: Any, cands: list[Any], q: int, pending: set[int], excluded: set[int],
               seed: int, strategy: str | None = None) -> list[Pick]:
        return self.surrogate.select(model, cands, q, pending, excluded, seed, strategy)

    def analyze(self, pattern: XrdPattern, target: str, target_structure: dict | None,
                precursors: list[str]) -> Assessed:
        return self.assessor.analyze(pattern, target, target_structure, precursors)

    @property
    def pool_structures(self) -> dict[str, dict]:
        return self.assessor.pool_structures

    @pool_structures.setter
    def pool_structures(self, value: dict[str, dict]) -> None:
        self.assessor.pool_structures = value

    @property
    def analysis_pool(self) -> AnalysisPool:
        return self.assessor.analysis_pool

    def close(self) -> None:
        """Stop the XRD worker processes (the brain's only resource that outlives a call)."""
        self.assessor.close()


def _plain(d: Any) -> dict:
    """A JSON-safe copy of a provenance dict."""
    return json.loads(json.dumps(dict(d or {}), default=str))
