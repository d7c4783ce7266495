"""Candidate structures, GNoME-style: ion substitution on seed prototypes, user CIF files.

Why substitution: most new stable inorganic crystals are decorations of known prototypes.
For each seed (oxidation-state decorated) and each set of target-system species, every
one-to-one species map is scored with pymatgen's data-mined substitution probabilities
(``SubstitutionProbability.cond_prob_list``, the model behind ``SubstitutionPredictor``
and ``Substitutor``); maps above ``threshold`` that keep the cell charge neutral are applied,
the volume is rescaled by atomic radii, duplicates are removed with ``StructureMatcher``, and
compositions already in the Materials Project table are dropped unless ``novel_only=False``.
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Composition, Element, Species, Structure

from .thermo import KnownPhases, known_phases

SEED_DIR = Path(__file__).resolve().parent / "data" / "seeds"


@dataclass
class Candidate:
    """A hypothetical (or user-supplied) crystal the campaign may target."""

    id: str
    formula: str  # reduced formula
    structure: Structure
    source: str  # "substitution" | "cif" | ...
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "formula": self.formula, "structure": self.structure.as_dict(),
                "source": self.source, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        return cls(d["id"], d["formula"], Structure.from_dict(d["structure"]), d["source"],
                   dict(d.get("provenance", {})))


def read_candidate_cifs(folder: str | Path) -> tuple[list[Candidate], list[str]]:
    """Every ``*.cif`` in ``folder`` (sorted) as a Candidate; a file that cannot be parsed
    into an ordered structure is reported as ``"NAME: reason"`` and skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"candidate folder {folder} does not exist")
    out: list[Candidate] = []
    errors: list[str] = []
    for path in sorted(folder.glob("*.cif")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = Structure.from_file(path)
            if len(s) == 0:
                raise ValueError("no atoms")
            if not s.is_ordered:
                raise ValueError("disordered structure (partial occupancies)")
        except Exception as exc:  # any parse failure: report and continue with the rest
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            errors.append(f"{path.name}: {msg}")
            continue
        formula = s.composition.reduced_formula
        out.append(Candidate(id=f"cif-{path.stem}", formula=formula, structure=s, source="cif",
                             provenance={"file": path.name}))
    return out, errors


class SubstitutionTable:
    """pymatgen's data-mined ion substitution probabilities (Hautier et al., Inorg. Chem. 2011).

    The same lambda table and formulas as
    ``pymatgen...substitution_probability.SubstitutionProbability`` (``alpha = -5`` for
    never-observed pairs; ``cond_prob(s1, s2) = exp(λ(s1, s2)) / p_x(s2)``), but keyed by
    species strings and normalised with one numpy pass: pymatgen's own constructor hashes
    ~450,000 Species objects and takes ~8 s, this takes ~50 ms.
    """

    def __init__(self, alpha: float = -5.0) -> None:
        import json

        import pymatgen.core.structure_prediction as sp_pkg

        path = Path(sp_pkg.__file__).resolve().parent / "data" / "lambda.json"
        rows = [r for r in json.loads(path.read_text(encoding="utf-8")) if "D1+" not in r]
        names = sorted({r[0] for r in rows} | {r[1] for r in rows})
        self.index = {n: i for i, n in enumerate(names)}
        lam = np.full((len(names), len(names)), float(alpha))
        for a, b, v in rows:
            i, j = self.index[a], self.index[b]
            lam[i, j] = lam[j, i] = float(v)
        self._exp = np.exp(lam)
        self._px = self._exp.sum(axis=1)

    @staticmethod
    def key(sp: Species | str) -> str:
        """The table's spelling of a species: ``Li1+``, ``O2-``."""
        if isinstance(sp, str):
            try:
                sp = Species.from_str(sp)
            except ValueError as exc:
                raise KeyError(f"{sp!r} is not a species: {exc}") from None
        ox = sp.oxi_state
        if ox is None or ox != int(ox) or ox == 0:
            raise KeyError(f"{sp}: no integer oxidation state")
        return f"{sp.symbol}{abs(int(ox))}{'+' if ox > 0 else '-'}"

    def cond_prob(self, s1: Species | str, s2: Species | str) -> float:
        """Probability of ``s1`` given the fixed ``s2`` (KeyError for an unknown species)."""
        i, j = self.index[self.key(s1)], self.index[self.key(s2)]
        return float(self._exp[i, j] / self._px[j])

    def cond_prob_list(self, l1: list, l2: list) -> float:
        """Product of conditional probabilities of a full species map ``l2[i] → l1[i]``."""
        if len(l1) != len(l2):
            raise ValueError("species lists differ in length")
        p = 1.0
        for a, b in zip(l1, l2, strict=True):
            p *= self.cond_prob(a, b)
        return p


@lru_cache(maxsize=1)
def _substitution_probability() -> SubstitutionTable:
    return SubstitutionTable()


@lru_cache(maxsize=8)
def _load_seeds(folder: str) -> tuple[tuple[str, Structure], ...]:
    seeds = []
    for path in sorted(Path(folder).glob("*.cif")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_file(path)  # seeds ship with oxidation states
        if any(getattr(sp, "oxi_state", None) in (None, 0) for sp in s.composition):
            continue
        seeds.append((path.stem, s))
    return tuple(seeds)


def is_known(formula: str, holdout: Collection[str] = (), kp: KnownPhases | None = None) -> bool:
    """Whether ``formula`` is in the Materials Project table, with the compositions in
    ``holdout`` (reduced formulas) treated as unknown: a hold-out experiment asks a generator
    to re-discover them."""
    if holdout and Composition(formula).reduced_formula in holdout:
        return False
    return (kp or known_phases()).formation_energy(formula) is not None


def reduced_set(formulas: Collection[str]) -> frozenset[str]:
    """Reduced formulas of ``formulas`` (the spelling ``holdout`` arguments are compared in)."""
    return frozenset(Composition(f).reduced_formula for f in formulas)


def seed_structures(folder: str | Path | None = None) -> list[tuple[str, Structure]]:
    """(id, oxidation-state decorated structure) of the bundled (or given) seed CIFs."""
    return list(_load_seeds(str(folder or SEED_DIR)))


def _species_options(elements: list[str]) -> list[Species]:
    opts = []
    for el in elements:
        e = Element(el)
        for ox in e.common_oxidation_states or ():
            if ox != 0:
                opts.append(Species(el, ox))
    return opts


def _radius(sp: Species) -> float:
    with warnings.catch_warnings():  # "no default ionic radius for Mn4+, using ls data"
        warnings.simplefilter("ignore")
        r = sp.ionic_radius if getattr(sp, "ionic_radius", None) else None
    if r is None:
        r = Element(sp.symbol).atomic_radius or 1.5
    return float(r)


def _scaled(parent: Structure, new: Structure) -> Structure:
    """``new`` (``parent`` with species replaced) rescaled in place by Σ r³ of its ions against
    the parent's: a first guess of its volume, not a relaxation (partial.py uses it too)."""
    old_vol = sum(_radius(s.specie) ** 3 for s in parent)
    new_vol = sum(_radius(s.specie) ** 3 for s in new)
    if old_vol > 0 and new_vol > 0:
        new.scale_lattice(parent.volume * new_vol / old_vol)
    return new


def _substitute(seed: Structure, mapping: dict[Species, Species]) -> Structure:
    new = seed.copy()
    new.replace_species({k: v for k, v in mapping.items()})
    return _scaled(seed, new)


def generate_candidates(
    systems: list[str],
    *,
    seed: int = 0,
    max_candidates: int = 1000,
    threshold: float = 1e-3,
    novel_only: bool = True,
    seeds_folder: str | Path | None = None,
    max_atoms: int = 40,
    holdout: Collection[str] = (),
) -> list[Candidate]:
    """Substitution candidates inside the given chemical systems (e.g. ``["Li-Mn-Ti-O"]``).

    Ranked by substitution probability (ties broken by a seeded shuffle); at most
    ``max_candidates``. Compositions in the known-phase table are skipped if ``novel_only``.
    ``holdout``: compositions treated as unknown, whose seeds are not used (a recall test).
    """
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
    allowed: list[list[str]] = []
    for system in systems:
        els = sorted({s.strip() for s in system.split("-") if s.strip()})
        for el in els:
            if not Element.is_valid_symbol(el):
                raise ValueError(f"unknown element {el!r} in system {system!r}")
        allowed.append(els)
    sp_model = _substitution_probability()
    kp = known_phases()
    held = reduced_set(holdout)
    rng = np.random.default_rng(seed)
    raw: list[tuple[float, float, str, Structure, dict[str, Any]]] = []
    for els in allowed:
        options = _species_options(els)
        for seed_id, struct in seed_structures(seeds_folder):
            if len(struct) > max_atoms or struct.composition.reduced_formula in held:
                continue
            comp = struct.composition
            src = sorted(comp, key=lambda sp: (sp.oxi_state, sp.symbol))
            counts = [comp[sp] for sp in src]
            for target in itertools.permutations(options, len(src)):
                if len({t.symbol for t in target}) != len(target):
                    continue
                if abs(sum(c * t.oxi_state for c, t in zip(counts, target, strict=True))) > 1e-6:
                    continue
                if all(a == b for a, b in zip(src, target, strict=True)):
                    continue  # the seed itself
                try:
                    prob = float(sp_model.cond_prob_list(list(target), list(src)))
                except (KeyError, ValueError, ZeroDivisionError):  # species unknown to the table
                    continue
                if prob < threshold:
                    continue
                mapping = dict(zip(src, target, strict=True))
                raw.append((prob, float(rng.random()), seed_id, struct, mapping))
    raw.sort(key=lambda r: (-r[0], r[1]))
    return _finalise(raw, kp, novel_only, max_candidates, held)


def _finalise(raw, kp, novel_only: bool, max_candidates: int, held: frozenset[str]) -> list[Candidate]:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher()
    kept: dict[str, list[Structure]] = {}
    out: list[Candidate] = []
    known_cache: dict[str, bool] = {}
    for prob, _, seed_id, struct, mapping in raw:
        formula = Composition({t: struct.composition[s] for s, t in mapping.items()}).reduced_formula
        if novel_only:
            if formula not in known_cache:
                known_cache[formula] = is_known(formula, held, kp)
            if known_cache[formula]:
                continue
        new = _substitute(struct, mapping)
        group = kept.setdefault(formula, [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if any(matcher.fit(new, other) for other in group):
                continue
        group.append(new)
        subs = {str(k): str(v) for k, v in mapping.items()}
        digest = hashlib.blake2b(f"{seed_id}|{sorted(subs.items())}".encode(), digest_size=4).hexdigest()
        out.append(Candidate(
            id=f"sub-{formula}-{digest}", formula=formula, structure=new, source="substitution",
            provenance={"seed": seed_id, "seed_formula": struct.composition.reduced_formula,
                        "substitutions": subs, "probability": prob,
                        "novel": not is_known(formula, held, kp)},
        ))
        if len(out) >= max_candidates:
            break
    return out
