"""A chemical system's candidate pool: every generator, one plausibility verdict, one novelty check.

Why one pipeline: each generator alone gives a handful of compositions per system (whole-site
substitution: the seeds' formulas) or many that repeat one another (prototype decorations of
one formula, the same mixed-site composition from two parents). Here, per system:

1. whole-site substitution on the seeds (:func:`candidates.generate_candidates`);
2. prototype enumeration on the shipped templates (:mod:`enumeration`);
2b. perovskite-family cells decorated by site role (:mod:`perovskite_families`: Ruddlesden-Popper
   n = 1-3, Dion-Jacobson, B- and A-site ordered double perovskites, oxygen-deficient AA'B2O5 and
   brownmillerite), so large-cation systems get the layered and ordered members of their family;
3. parents = 1 + 2 + 2b that pass the odd-chemistry rules, one per composition; on them isovalent
   partial substitution in supercells of up to 8 cells (eighths to halves,
   :func:`partial.partial_substitutions`) and aliovalent substitution with charge compensation
   (:func:`partial.aliovalent_substitutions`);
4. every product judged by :func:`plausibility.oddities` (rare valence, redox pair), dropped
   when odd unless ``keep_odd`` (then flagged in ``provenance["oddities"]`` as rule + detail);
5. novelty against the Materials Project table (``holdout`` compositions treated as unknown);
6. de-duplication by reduced formula, then ``StructureMatcher`` inside a formula (at most
   ``max_per_formula`` structures).

:class:`PoolReport` counts what each step kept and why it dropped the rest (data, not logs).
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from .candidates import Candidate, generate_candidates, is_known, reduced_set
from .enumeration import DEFAULT_TOLERANCE, IonicTemplate, enumerate_prototypes
from .partial import FINE_FRACTIONS, aliovalent_substitutions, partial_substitutions
from .perovskite_families import FAMILIES, enumerate_families
from .plausibility import MIN_VALENCE_SHARE, REDOX_MARGIN_V, Oddity, oddities, species_amounts
from .thermo import known_phases

#: the generators, in the order their candidates are ranked in the pool
SOURCES = ("substitution", "prototypes", "families", "partial", "aliovalent")


@dataclass(frozen=True)
class PoolSettings:
    """Knobs of :func:`build_candidate_pool` (defaults chosen on the tune systems of
    ``benchmarks/candidates.py``, never on the systems it reports)."""

    sources: tuple[str, ...] = SOURCES
    tolerance: float = DEFAULT_TOLERANCE  # relative ionic-radius mismatch per site
    substitution_threshold: float = 1e-3
    max_atoms: int = 40
    max_cells: int = 8  # largest supercell (parent cells) of the isovalent step
    max_per_formula: int = 1
    min_valence_share: float = MIN_VALENCE_SHARE
    redox_margin: float = REDOX_MARGIN_V
    keep_odd: bool = False
    #: decoration templates (default: every shipped one, :func:`enumeration.ionic_templates`)
    templates: tuple[IonicTemplate, ...] | None = None
    #: perovskite families of the ``families`` source (:data:`perovskite_families.FAMILIES`)
    families: tuple[str, ...] = FAMILIES
    #: which Pauling bounds of the families' site roles the tolerance widens (plausibility.WIDEN_CHOICES)
    family_widen: str = "B"

    def __post_init__(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown:
            raise ValueError(f"unknown candidate source(s) {unknown}; choose from {list(SOURCES)}")
        bad = [f for f in self.families if f not in FAMILIES]
        if bad:
            raise ValueError(f"unknown perovskite famil(y/ies) {bad}; choose from {list(FAMILIES)}")
        if self.max_per_formula < 1:
            raise ValueError("max_per_formula must be >= 1")


@dataclass
class PoolReport:
    """What the pipeline made of one chemical system."""

    system: str
    generated: dict[str, int] = field(default_factory=dict)  # candidates per source
    novel_compositions: dict[str, int] = field(default_factory=dict)  # per source, before the rules
    odd: Counter = field(default_factory=Counter)  # rule -> candidates it struck out
    novel_before_rules: int = 0  # distinct novel compositions, all sources
    novel_after_rules: int = 0  # ... that pass the odd-chemistry rules
    kept: int = 0  # candidates in the pool (structures)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"system": self.system, "generated": dict(self.generated),
                "novel_compositions": dict(self.novel_compositions), "odd": dict(self.odd),
                "novel_before_rules": self.novel_before_rules,
                "novel_after_rules": self.novel_after_rules, "kept": self.kept,
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}


def _judge(c: Candidate, settings: PoolSettings) -> list[Oddity]:
    return oddities(species_amounts(c.structure), min_share=settings.min_valence_share,
                    redox_margin=settings.redox_margin)


def build_candidate_pool(
    systems: Sequence[str],
    *,
    seed: int = 0,
    settings: PoolSettings | None = None,
    holdout: Collection[str] = (),
    novel_only: bool = True,
    max_candidates: int = 5000,
) -> tuple[list[Candidate], list[PoolReport]]:
    """(candidates, one report per system); candidates ranked by source (``SOURCES`` order),
    then each generator's own order, at most ``max_candidates`` in all.

    ``holdout``: compositions treated as unknown by every novelty check and never used as seeds
    or templates (a recall experiment: does the pipeline find known compounds it was not shown).
    Each candidate's ``provenance`` gets ``novel`` and ``oddities`` (empty unless ``keep_odd``).
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    if max_candidates < 1:
        raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
    settings = settings or PoolSettings()
    held = reduced_set(holdout)
    kp = known_phases()
    matcher = StructureMatcher()
    pool: list[Candidate] = []
    kept_structs: dict[str, list] = {}
    reports = []
    for system in systems:
        rep = PoolReport(system)
        made: dict[str, list[Candidate]] = {s: [] for s in SOURCES}
        t0 = time.perf_counter()
        whole = generate_candidates([system], seed=seed, max_candidates=100_000, novel_only=False,
                                    threshold=settings.substitution_threshold,
                                    max_atoms=settings.max_atoms, holdout=held)
        if "substitution" in settings.sources:
            made["substitution"] = whole
        rep.seconds["substitution"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        protos = enumerate_prototypes(system, tolerance=settings.tolerance,
                                      max_atoms=settings.max_atoms, exclude_formulas=held,
                                      templates=settings.templates)
        if "prototypes" in settings.sources:
            made["prototypes"] = protos
        rep.seconds["prototypes"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if "families" in settings.sources:
            made["families"] = enumerate_families(system, tolerance=settings.tolerance,
                                                  max_atoms=settings.max_atoms, families=settings.families,
                                                  widen=settings.family_widen)
        rep.seconds["families"] = time.perf_counter() - t0
        verdicts: dict[int, list[Oddity]] = {}

        def verdict(c: Candidate, memo: dict[int, list[Oddity]] = verdicts) -> list[Oddity]:
            if id(c) not in memo:
                memo[id(c)] = _judge(c, settings)
            return memo[id(c)]

        parents: list[Candidate] = []
        seen: set[str] = set()
        for c in [*made["substitution"], *made["prototypes"], *made["families"]]:
            if c.formula not in seen and not verdict(c):
                seen.add(c.formula)
                parents.append(c)
        t0 = time.perf_counter()
        if "partial" in settings.sources:
            made["partial"] = partial_substitutions(
                parents, [system], max_per_parent=40, max_orderings=4, max_atoms=settings.max_atoms,
                novel_only=novel_only, seed=seed, holdout=held, fractions=FINE_FRACTIONS,
                max_cells=settings.max_cells, tolerance=settings.tolerance)
        rep.seconds["partial"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if "aliovalent" in settings.sources:
            made["aliovalent"] = aliovalent_substitutions(
                parents, [system], tolerance=settings.tolerance, max_atoms=settings.max_atoms,
                novel_only=novel_only, seed=seed, holdout=held)
        rep.seconds["aliovalent"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        novel_all: set[str] = set()
        novel_ok: set[str] = set()
        known_cache: dict[str, bool] = {}
        for source in SOURCES:
            cands = made[source]
            rep.generated[source] = len(cands)
            novel_here = set()
            for c in cands:
                if c.formula not in known_cache:
                    known_cache[c.formula] = is_known(c.formula, held, kp)
                novel = not known_cache[c.formula]
                if novel:
                    novel_here.add(c.formula)
                    novel_all.add(c.formula)
                if novel_only and not novel:
                    continue
                odd = verdict(c)
                for o in odd:
                    rep.odd[o.rule] += 1
                if odd and not settings.keep_odd:
                    continue
                if novel:
                    novel_ok.add(c.formula)
                group = kept_structs.setdefault(c.formula, [])
                if len(group) >= settings.max_per_formula:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if any(matcher.fit(c.structure, other) for other in group):
                        continue
                group.append(c.structure)
                pool.append(Candidate(c.id, c.formula, c.structure, c.source,
                                      {**c.provenance, "novel": novel, "oddities": [{"rule": o.rule, "detail": o.detail} for o in odd],
                                       "system": system}))
                rep.kept += 1
            rep.novel_compositions[source] = len(novel_here)
        rep.novel_before_rules = len(novel_all)
        rep.novel_after_rules = len(novel_ok)
        rep.seconds["filter_dedup"] = time.perf_counter() - t0
        reports.append(rep)
    return pool[:max_candidates], reports
