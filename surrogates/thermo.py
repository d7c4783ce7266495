"""Known phases: the Materials Project formation-energy table and convex hulls built from it.

Why a shipped table: stability of a hypothetical compound only means something relative to
the competing phases of its chemical system. The table (132,752 DFT formation energies, see
``data/README.md`` for attribution) is loaded once, lazily, and indexed by chemical system
with a cheap string parser, so the first hull costs about a second and later ones only the
phase diagram of their own system (cached).

Conventions: elements sit at 0 eV/atom (the table's elemental rows are metastable
allotropes and are dropped); for each composition only the lowest-energy polymorph counts.
"""

from __future__ import annotations

import bz2
import itertools
import json
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element

from .formulas import UnknownCompositionError
from .formulas import composition as _composition

DATA_FILE = Path(__file__).resolve().parent / "data" / "mp_e_form.json.bz2"
_TOKEN = re.compile(r"^([A-Z][a-z]?)(\d+(?:\.\d+)?)?$")
_Row = tuple[dict[str, float], float, int, str]  # amounts, e_form, spg_num, mbid


@dataclass(frozen=True)
class KnownPhase:
    """One row of the table reduced to what thermodynamics needs."""

    formula: str  # reduced formula, e.g. "Li2O"
    e_form: float  # eV/atom, lowest polymorph
    spg_num: int
    mbid: str


def _parse(text: str) -> dict[str, float]:
    """Parse the table's ``"Li2 O1"`` strings ~20x faster than pymatgen's Composition."""
    out: dict[str, float] = {}
    for tok in text.split():
        m = _TOKEN.match(tok)
        if m is None:
            raise UnknownCompositionError(f"cannot parse composition token {tok!r} in {text!r}")
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2) or 1)
    return out


def _frac_key(amounts: dict[str, float]) -> tuple[tuple[str, float], ...]:
    """Composition identity independent of formula units (fractions rounded to 1e-6)."""
    total = sum(amounts.values())
    return tuple(sorted((el, round(x / total, 6)) for el, x in amounts.items() if x > 0))


class KnownPhases:
    """Formation energies and convex hulls of the Materials Project table.

    Thread-safe lazy loading; phase diagrams are cached per chemical system.
    """

    def __init__(self, path: Path = DATA_FILE) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._by_sys: dict[frozenset[str], dict[tuple, _Row]] | None
        self._by_sys = None
        self._pd_cache = lru_cache(maxsize=256)(self._build_pd)

    # ------------------------------------------------------------------ loading
    def _index(self) -> dict[frozenset[str], dict[tuple, _Row]]:
        if self._by_sys is not None:
            return self._by_sys
        with self._lock:
            if self._by_sys is None:
                if not self._path.exists():
                    raise FileNotFoundError(f"known-phase table missing: {self._path}")
                with bz2.open(self._path, "rt", encoding="utf-8") as fh:
                    cols = json.load(fh)
                try:
                    comp, e_form = cols["composition"], cols["e_form"]
                    spg, mbid = cols["spg_num"], cols["mbid"]
                except KeyError as exc:
                    raise ValueError(f"{self._path}: missing column {exc}") from exc
                index: dict[frozenset[str], dict[tuple, _Row]] = {}
                for row, text in comp.items():
                    amounts = _parse(text)
                    if len(amounts) < 2:
                        continue  # elements are pinned at 0 eV/atom
                    key = _frac_key(amounts)
                    bucket = index.setdefault(frozenset(amounts), {})
                    e = float(e_form[row])
                    old = bucket.get(key)
                    if old is None or e < old[1]:
                        bucket[key] = (amounts, e, int(spg[row]), str(mbid[row]))
                self._by_sys = index
        return self._by_sys

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return sum(len(b) for b in self._index().values())

    def formation_energy(self, formula: str | Composition) -> float | None:
        """Lowest known formation energy (eV/atom) of this composition; 0.0 for an element,
        None when the table has no phase of that composition."""
        comp = _composition(formula)
        if len(comp.elements) == 1:
            return 0.0
        amounts = {el.symbol: float(x) for el, x in comp.items()}
        hit = self._index().get(frozenset(amounts), {}).get(_frac_key(amounts))
        return None if hit is None else hit[1]

    def phases(self, chemsys: str | list[str]) -> list[KnownPhase]:
        """Known compounds (lowest polymorph each) whose elements lie inside ``chemsys``."""
        elements = self._elements(chemsys)
        index = self._index()
        out: list[KnownPhase] = []
        for n in range(2, len(elements) + 1):
            for sub in itertools.combinations(sorted(elements), n):
                for amounts, e, spg, mbid in index.get(frozenset(sub), {}).values():
                    out.append(KnownPhase(Composition(amounts).reduced_formula, e, spg, mbid))
        return out

    def entries(self, chemsys: str | list[str]) -> list[PDEntry]:
        """PDEntries of a chemical system and all its subsystems: elements at 0 and the lowest
        polymorph of every known composition (energy = e_form × atoms in the formula)."""
        elements = self._elements(chemsys)
        index = self._index()
        out = [PDEntry(Composition(el), 0.0, name=el) for el in sorted(elements)]
        for n in range(2, len(elements) + 1):
            for sub in itertools.combinations(sorted(elements), n):
                for amounts, e, _spg, _mbid in index.get(frozenset(sub), {}).values():
                    comp = Composition(amounts)
                    out.append(PDEntry(comp, e * comp.num_atoms, name=comp.reduced_formula))
        return out

    def phase_diagram(self, chemsys: str | list[str]) -> PhaseDiagram:
        """Convex hull of the system (cached per system)."""
        return self._pd_cache("-".join(sorted(self._elements(chemsys))))

    def _build_pd(self, key: str) -> PhaseDiagram:
        return PhaseDiagram(self.entries(key))

    def hull_energy(self, formula: str | Composition, e_form_ev_per_atom: float) -> float:
        """Energy above the hull (eV/atom) of a phase of ``formula`` with this formation energy.

        Negative values mean the phase would lie *below* the known hull by that much (its
        decomposition energy), which is what a stability ranking of new candidates needs.
        """
        comp = _composition(formula)
        pd = self.phase_diagram([el.symbol for el in comp.elements])
        entry = PDEntry(comp, float(e_form_ev_per_atom) * comp.num_atoms)
        if len(comp.elements) == 1:
            return float(e_form_ev_per_atom)
        _, e = pd.get_decomp_and_e_above_hull(entry, allow_negative=True, check_stable=False)
        return float(e)

    def hull_reference_energy(self, formula: str | Composition) -> float:
        """Formation energy (eV/atom) of the hull at this composition: the energy a new phase
        must beat to be stable."""
        comp = _composition(formula)
        if len(comp.elements) == 1:
            return 0.0
        pd = self.phase_diagram([el.symbol for el in comp.elements])
        return float(pd.get_hull_energy_per_atom(comp))

    @staticmethod
    def _elements(chemsys: str | list[str]) -> list[str]:
        items = chemsys.split("-") if isinstance(chemsys, str) else list(chemsys)
        items = [s.strip() for s in items if s.strip()]
        if not items:
            raise UnknownCompositionError(f"empty chemical system {chemsys!r}")
        for s in items:
            if not Element.is_valid_symbol(s):
                raise UnknownCompositionError(f"unknown element {s!r} in chemical system {chemsys!r}")
        return sorted(set(items))


_SINGLETON: KnownPhases | None = None
_SINGLETON_LOCK = threading.Lock()


def known_phases() -> KnownPhases:
    """The shared, lazily loaded table (one per process)."""
    global _SINGLETON
    if _SINGLETON is None:
        with _SINGLETON_LOCK:
            if _SINGLETON is None:
                _SINGLETON = KnownPhases()
    return _SINGLETON
