"""ARROWS3-style pathway reasoning: which pairwise reactions happen, what they leave behind.

Why: a precursor set with a large overall driving force can still fail when two of its
precursors first react to a very stable intermediate, leaving too little energy for the
step that forms the target (Szymanski et al., ARROWS3, 2023). From every analysed
experiment we record which intermediates formed at which temperature and attribute each to
the pair (or single precursor) that can make it; those *learned* reactions then predict the
intermediates of untested sets that share the pair, and sets are re-ranked by the driving
force left at the target-forming step.

Before anything is learned, the "thermodynamic prior" assumes each pair of precursors first
forms its most downhill product on the tie line (if any); learned reactions always take
precedence over that prior for their pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .library import PrecursorLibrary
from .thermo import GAS_FORMULAS, Thermo, amounts_of, rf
from .types import Observation, RecipeError, TargetSpec

DETECTION_LIMIT = 0.02  # weight fraction below which a phase is treated as absent
MAX_STEPS = 12


@dataclass(frozen=True)
class PairReaction:
    """Reactants (1 or 2 phases) that formed ``product`` at ``temperature_c``."""

    reactants: tuple[str, ...]
    product: str
    temperature_c: float
    source: str  # "observed" or "thermodynamic prior"
    energy_mev_per_atom: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "reactants": list(self.reactants),
            "product": self.product,
            "temperature_c": self.temperature_c,
            "source": self.source,
            "energy_mev_per_atom": self.energy_mev_per_atom,
        }


@dataclass
class Pathway:
    """Predicted course of one precursor set at one temperature."""

    steps: list[PairReaction] = field(default_factory=list)
    final_phases: dict[str, float] = field(default_factory=dict)
    remaining_mev_per_atom: float | None = None  # ΔG of the target-forming step; None: target made by a step
    target_formed_by_step: bool = False

    def intermediates(self, start: Iterable[str], target: str) -> list[str]:
        start = set(start)
        return sorted(f for f in self.final_phases if f not in start and f != target)


def _rf(formula: str) -> str:
    return rf(formula)


def effective_phases(
    reactants: Sequence[tuple[str, float]], library: PrecursorLibrary, temperature_c: float
) -> dict[str, float]:
    """Amounts of solids present once each precursor has decomposed at ``temperature_c``.

    Moles of a residue follow from its first non-O, non-gas element (e.g. 1 MnO2 → ½ Mn2O3;
    MnO2 → Mn2O3 → Mn3O4 is followed as a chain)."""
    out: dict[str, float] = {}
    for formula, amount in reactants:
        current, moles = _rf(formula), amount
        for _ in range(4):
            p = library.describe(current)
            residue = p.residue_at(temperature_c)
            if residue is None or residue == current:
                break
            moles = moles * _ratio(current, residue)
            current = residue
        out[current] = out.get(current, 0.0) + moles
    return out


def _ratio(parent: str, child: str) -> float:
    pc, cc = amounts_of(parent), amounts_of(child)
    for el, n in pc.items():
        if el not in {"O", "C", "H", "N", "F"} and cc.get(el, 0.0) > 0:
            return n / cc[el]
    return 1.0


class PathwayKnowledge:
    """Pairwise reactions learned from observations (rebuilt from history: a pure function)."""

    def __init__(self, thermo: Thermo, library: PrecursorLibrary, *, use_prior: bool = True) -> None:
        self.thermo = thermo
        self.library = library
        self.use_prior = use_prior
        self.learned: dict[tuple[str, ...], list[PairReaction]] = {}

    # ------------------------------------------------------------------ learning
    def learn(self, observation: Observation) -> list[PairReaction]:
        """Attribute each observed intermediate to the single phase or pair that makes it."""
        recipe = observation.recipe
        temp = recipe.temperature_c
        target = _rf(recipe.target)
        start = effective_phases(
            [(p.formula, max(p.moles, 1e-12)) for p in recipe.precursors], self.library, temp
        )
        originals = {_rf(p.formula) for p in recipe.precursors}
        present = {
            _rf(f): w for f, w in observation.phases.items() if w >= DETECTION_LIMIT
        }
        found: list[PairReaction] = []
        for phase in sorted(present):
            if phase == target or phase in start or phase in originals or phase in GAS_FORMULAS:
                continue
            if self.thermo.formation_energy(phase) is None:
                # an observed phase the table does not know (e.g. another campaign target):
                # it exists, so place it on the known hull and reason with that estimate
                try:
                    self.thermo.register_target(TargetSpec(phase))
                except RecipeError:
                    continue
            best: PairReaction | None = None
            names = sorted(start)
            groups: list[tuple[str, ...]] = [(n,) for n in names]
            groups += [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
            for group in groups:
                rxn = self.thermo.balance(group, phase, temp)
                if rxn is None:
                    continue
                cand = PairReaction(group, phase, temp, "observed", rxn.energy_mev_per_atom)
                # prefer the smallest group (a decomposition explains more simply), then ΔG
                rank = (len(group), cand.energy_mev_per_atom)
                if best is None or rank < (len(best.reactants), best.energy_mev_per_atom):
                    best = cand
            if best is not None:
                self._add(best)
                found.append(best)
        return found

    def _add(self, rxn: PairReaction) -> None:
        bucket = self.learned.setdefault(tuple(sorted(rxn.reactants)), [])
        for old in bucket:
            if old.product == rxn.product:
                if rxn.temperature_c < old.temperature_c:
                    bucket.remove(old)
                    break
                return
        bucket.append(rxn)

    def learned_reactions(self) -> list[PairReaction]:
        return [r for bucket in self.learned.values() for r in bucket]

    # ------------------------------------------------------------------ prediction
    def _reaction_for(
        self, group: tuple[str, ...], temperature_c: float, prior: bool = True
    ) -> PairReaction | None:
        """Learned reaction of this group valid at this temperature, else the prior."""
        key = tuple(sorted(group))
        if key in self.learned:
            valid = [r for r in self.learned[key] if r.temperature_c <= temperature_c + 1e-6]
            if valid:
                # the most downhill observed product at the current temperature
                best = None
                for r in valid:
                    rxn = self.thermo.balance(key, r.product, temperature_c)
                    if rxn is not None and (best is None or rxn.energy_mev_per_atom < best[0]):
                        best = (rxn.energy_mev_per_atom, r)
                if best is not None:
                    r = best[1]
                    return PairReaction(key, r.product, temperature_c, "observed", best[0])
            # the pair was seen, but only at higher temperature: nothing known here
            return None
        if not (prior and self.use_prior) or len(key) != 2:
            return None
        rxn = self.thermo.pair_reaction(key[0], key[1], temperature_c)
        if rxn is None:
            return None
        return PairReaction(key, rxn.product, temperature_c, "thermodynamic prior", rxn.energy_mev_per_atom)

    def predict(
        self,
        reactants: Sequence[tuple[str, float]],
        target: str,
        temperature_c: float,
        *,
        prior: bool = True,
    ) -> Pathway:
        """Apply pairwise reactions (most downhill first) until none applies; report what is
        left and the driving force of the final, target-forming step. ``prior=False`` uses
        only reactions learned from observations (evidence, for skipping sets)."""
        target = _rf(target)
        phases = effective_phases(reactants, self.library, temperature_c)
        path = Pathway()
        for _ in range(MAX_STEPS):
            names = sorted(f for f, x in phases.items() if x > 1e-9 and f != target)
            options: list[PairReaction] = []
            for n in names:
                if (n,) in self.learned:
                    r = self._reaction_for((n,), temperature_c, prior)
                    if r is not None:
                        options.append(r)
            for i, a in enumerate(names):
                for b in names[i + 1 :]:
                    r = self._reaction_for((a, b), temperature_c, prior)
                    if r is not None:
                        options.append(r)
            applied = False
            for r in sorted(options, key=lambda r: r.energy_mev_per_atom):
                rxn = self.thermo.balance(r.reactants, r.product, temperature_c)
                if rxn is None:
                    continue
                extent = min(phases[f] / c for f, c in rxn.reactants)
                if extent <= 1e-9:
                    continue
                for f, c in rxn.reactants:
                    phases[f] -= c * extent
                    if phases[f] < 1e-9:
                        del phases[f]
                phases[rxn.product] = phases.get(rxn.product, 0.0) + extent
                path.steps.append(r)
                applied = True
                break
            if not applied:
                break
        path.final_phases = {f: x for f, x in phases.items() if x > 1e-9}
        if path.final_phases.get(target, 0.0) >= 1.0 - 1e-6:
            path.target_formed_by_step = True
            path.remaining_mev_per_atom = min(
                (s.energy_mev_per_atom for s in path.steps if s.product == target), default=0.0
            )
        else:
            rest = dict(path.final_phases)
            made = rest.pop(target, 0.0)
            if made > 0:
                # the target already formed in part: the rest must still make (1 - made) of it
                scaled = {f: x / (1.0 - made) for f, x in rest.items()}
            else:
                scaled = rest
            path.remaining_mev_per_atom = self.thermo.phases_energy_to(scaled, target, temperature_c)
        return path
