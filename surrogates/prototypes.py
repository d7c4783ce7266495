"""Predicted crystal structures for compositions that have none, from public structures only.

Why: a wish-list composition needs a structure before the surrogate can rank it and before XRD
analysis can look for it. Two guesses, in order:

1. substitution (GNoME-style): a public structure whose composition becomes the wish-list one
   when one cation is swapped (Li2Ti3O7 -> Li2Mn3O7), volume scaled by the swapped ions' radii.
   Parents are the known structures given (the lab's public crystallography) before the generic
   seeds of :mod:`candidates`;
2. template decoration: a shipped template with the same anonymised formula
   (``data/templates.json.bz2``: textbook prototypes, reference CIFs, an Alexandria sample;
   attribution in ``data/README.md``), re-decorated and scaled to the density typical of the
   known structures.

Inputs are public: a mapping reduced formula -> known :class:`Structure` and the shipped
templates. :func:`predict_structure` is the one-off face; :class:`StructurePredictor` prepares
the parents and the density once for many formulas.

Optionally (``relax="sevenn"``, off by default) each prediction is relaxed with the offline
SevenNet-0 potential (:mod:`relax`; never the lab's oracle), so its cell, and with it its XRD
peaks, sit nearer what a lab would make. A relaxation that fails keeps the unrelaxed guess.
"""

from __future__ import annotations

import bz2
import json
import logging
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
from pymatgen.core import Composition, Element, Structure

from .candidates import seed_structures
from .relax import Relaxation, Relaxer, make_relaxer

log = logging.getLogger(__name__)

#: template kinds in order of preference for decoration
TEMPLATE_KINDS = ("prototype", "cif", "alexandria")


@cache
def template_library() -> tuple[dict[str, Any], ...]:
    """The shipped templates: dicts with ``kind``, ``id``, ``formula`` (reduced), ``anon``
    (anonymised formula) and ``structure`` (pymatgen dict, no oxidation states)."""
    raw = resources.files(__package__).joinpath("data/templates.json.bz2").read_bytes()
    return tuple(json.loads(bz2.decompress(raw))["templates"])


def predict_structure(formula: str, known: Mapping[str, Structure]) -> tuple[Structure, str] | None:
    """(structure, provenance) for ``formula`` by substitution into a known structure (or a
    seed), else by template decoration; None if neither has a structure of its kind. For many
    formulas over the same known structures, build one :class:`StructurePredictor`."""
    return StructurePredictor(known).predict(formula)


class StructurePredictor:
    """Substitution parents and decoration density prepared once over public structures.

    ``known``: reduced formula -> public structure of a known phase (not modified).
    ``templates``: decoration templates (default: :func:`template_library`).
    ``seeds``: generic substitution parents (default: the bundled seeds of :mod:`candidates`).
    ``relax``: ``"none"``/None (default), ``"sevenn"`` (:class:`relax.RelaxerUnavailable` here,
    at construction, when the package is missing), ``"auto"`` (SevenNet if installed) or a
    :class:`relax.Relaxer`; :attr:`relaxations` keeps each formula's outcome (steps, time).
    """

    def __init__(self, known: Mapping[str, Structure], *,
                 templates: Sequence[dict[str, Any]] | None = None,
                 seeds: Sequence[tuple[str, Structure]] | None = None,
                 relax: str | Relaxer | None = None) -> None:
        self.relaxer: Relaxer | None = make_relaxer(relax)
        #: reduced formula -> the relaxation of its prediction (only with a relaxer)
        self.relaxations: dict[str, Relaxation] = {}
        self.templates = tuple(template_library() if templates is None else templates)
        named = [(f"seed:{sid}", s) for sid, s in (seed_structures() if seeds is None else seeds)]
        named += [(f"known:{f}", known[f]) for f in sorted(known)]
        # de-oxidised copies built once (not once per formula: the copies were most of the work)
        self.parents: tuple[tuple[str, Structure, Composition], ...] = tuple(
            (name, *_plain_parent(s)) for name, s in named)
        ratios = [s.volume / _ionic_volume(s.composition) for _, s in sorted(known.items())]
        #: median cell volume per unit of ionic volume of the known structures (None without any):
        #: the density a decorated prototype or computed template is scaled to
        self.packing_ratio: float | None = float(np.median(ratios)) if ratios else None

    def predict(self, formula: str) -> tuple[Structure, str] | None:
        """Substitution first, then decoration (see the module docstring), then the relaxation
        when the predictor has a relaxer; the provenance says which."""
        made = self.guess(formula)
        if made is None or self.relaxer is None:
            return made
        return self.relaxed(formula, *made)

    def guess(self, formula: str) -> tuple[Structure, str] | None:
        """The unrelaxed prediction: substitution first, then decoration."""
        return self.substitute(formula) or self.decorate(formula)

    def relaxed(self, formula: str, structure: Structure, provenance: str) -> tuple[Structure, str]:
        """``structure`` relaxed by the predictor's relaxer; on failure the input, logged."""
        if self.relaxer is None:
            raise ValueError("this StructurePredictor has no relaxer (relax='none')")
        try:
            done = self.relaxer.relax(structure)
        except ValueError as exc:
            log.warning("predicted structure of %s kept unrelaxed: %s", formula, exc)
            return structure, f"{provenance}; relaxation failed"
        self.relaxations[Composition(formula).reduced_formula] = done
        state = "converged" if done.converged else "step cap"
        return done.structure, (f"{provenance}; relaxed with {self.relaxer.name} "
                                f"({done.steps} steps, {state}, volume {done.volume_change:+.1%})")

    def substitute(self, formula: str) -> tuple[Structure, str] | None:
        """Single-cation substitution into a parent whose composition becomes ``formula``.

        The closest swap wins: known parents before seeds, then same group and similar
        electronegativity, then fewer sites, then the parent's order.
        """
        want = Composition(formula).reduced_composition
        best = None
        for rank, (name, s0, tc) in enumerate(self.parents):
            if len(tc) != len(want):
                continue
            for a in tc.elements:
                for b in want.elements:
                    if (b in tc.elements and b != a) or not (a.is_metal and b.is_metal):
                        continue  # cation swaps only, as in ion-substitution
                    swapped = {(b if el == a else el).symbol: amt for el, amt in tc.items()}
                    if Composition(swapped).reduced_composition != want:
                        continue
                    similarity = abs(a.group - b.group) + abs((a.X or 0) - (b.X or 0))
                    key = (0 if name.startswith("known:") else 1, round(similarity, 2), len(s0), rank)
                    if best is None or key < best[0]:
                        best = (key, name, s0, a, b)
        if best is None:
            return None
        _, name, s0, a, b = best
        s = s0.copy()
        before = s.composition
        s.replace_species({a: b})
        s.scale_lattice(s.volume * _ionic_volume(s.composition) / _ionic_volume(before))
        return s, f"{name} with {a.symbol}->{b.symbol}"

    def decorate(self, formula: str) -> tuple[Structure, str] | None:
        """A template with the same anonymised formula (another chemistry), re-decorated.

        Preference: a textbook prototype, then a real CIF, then an Alexandria structure; within
        each, the smallest mismatch of the swapped atoms' radii. Species are matched by amount,
        then electronegativity. A real CIF keeps its measured density scaled by the swapped
        ions' sizes; a prototype or computed template takes :attr:`packing_ratio`.
        """
        comp = Composition(formula).reduced_composition
        anon = comp.anonymized_formula
        best = None
        for i, tpl in enumerate(self.templates):
            if tpl["anon"] != anon or tpl["formula"] == comp.reduced_formula:
                continue
            pairs = list(zip(_by_amount(Composition(tpl["formula"])), _by_amount(comp), strict=True))
            mismatch = sum(abs(_radius(a) - _radius(b)) for a, b in pairs)
            kind_rank = TEMPLATE_KINDS.index(tpl["kind"]) if tpl["kind"] in TEMPLATE_KINDS else len(TEMPLATE_KINDS)
            key = (kind_rank, round(mismatch, 3), i)
            if best is None or key < best[0]:
                best = (key, tpl, pairs)
        if best is None:
            return None
        _, tpl, pairs = best
        s = Structure.from_dict(tpl["structure"])
        before = s.composition
        s.replace_species({Element(a): Element(b) for a, b in pairs})
        if self.packing_ratio is not None and tpl["kind"] != "cif":
            s.scale_lattice(self.packing_ratio * _ionic_volume(s.composition))
        else:
            s.scale_lattice(s.volume * _ionic_volume(s.composition) / _ionic_volume(before))
        return s, f"{tpl['kind']} {tpl['id']} ({tpl['formula']}) decorated"


def _ionic_volume(comp: Composition) -> float:
    """Sum of amount x (average ionic radius)^3: the volume scale of a substituted cell."""
    total = 0.0
    for el, amt in comp.items():
        total += float(amt) * _radius(el.symbol) ** 3
    return max(total, 1e-6)


def _radius(symbol: str) -> float:
    el = Element(symbol)
    return float(el.average_ionic_radius or 0.0) or float(el.atomic_radius or 1.0)


def _by_amount(comp: Composition) -> list[str]:
    """Element symbols by amount, then electronegativity (how species are matched)."""
    return [el.symbol for el, _ in sorted(comp.items(), key=lambda kv: (kv[1], kv[0].X, kv[0].symbol))]


def _plain_parent(structure: Structure) -> tuple[Structure, Composition]:
    s = structure.copy()
    s.remove_oxidation_states()
    return s, s.composition.reduced_composition
