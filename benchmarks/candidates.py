"""Candidate pool per chemical system: the old generator vs the pipeline, with a recall check.

Usage:  OMP_NUM_THREADS=1 nice -n 5 python benchmarks/candidates.py [--systems A-B-C-O,...]
        [--tune-systems ...] [--tolerances 0.2,0.3,0.4] [--skip-tune] [--skip-recall]

Old generator = whole-site substitution (``generate_candidates``) + isovalent partial
substitution with its original defaults (``partial_substitutions``). New = the pipeline of
``surrogates.candidate_pool`` (adds prototype enumeration, aliovalent substitution, finer
fractions in supercells, radius rules, odd-chemistry rules, StructureMatcher de-duplication).

1. **Pool size** (report systems): novel compositions (absent from the shipped Materials Project
   table) old vs new, before and after the odd-chemistry rules, per source, wall and CPU seconds.
2. **Recall** (is it junk?): the MP compositions of the system with at least two cations are
   held out — treated as unknown and never used as seeds or templates — and each generator
   is asked to re-discover them. Reported: hits, recall, the number of multi-cation
   compositions generated (N), precision = hits / N, and the recall expected of N compositions
   drawn at random from the charge-balanced small-formula space of the system (each element in
   one of its states, ≤ 8 of each cation per formula, ≤ 40 atoms): ``chance recall``.
   Also the share of recalled known compounds the odd-chemistry rules strike out (their false
   rejections) next to the share of all generated compositions they strike out.
3. **Tuning** (tune systems only, never the report systems): the per-site radius tolerance is
   swept and the one with the best Fowlkes-Mallows index sqrt(precision × recall) is printed;
   the library default (``enumeration.DEFAULT_TOLERANCE``) was set from this sweep.

``--variants`` names the pipeline variants compared in the same run (tune and report):
``current`` = the pool without the perovskite families (the generator before issue 22's
families step), ``families`` = the default pool (every source and family), ``layered`` / ``ordered``
= only the layered (RP, DJ, oxygen-deficient) / only the ordered double-perovskite families,
``b_lower`` / ``widen_all`` = the families with the site tolerance widening only the lower B bound /
also the A bound (``plausibility.perovskite_role_ok``). Each variant's recall row and
pool size is printed; the tune split prints each variant's Fowlkes-Mallows index at the
default rules and over ``RULE_GRID``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymatgen.core import Composition  # noqa: E402

from surrogates.candidate_pool import SOURCES, PoolSettings, build_candidate_pool  # noqa: E402
from surrogates.candidates import generate_candidates, is_known  # noqa: E402
from surrogates.enumeration import DEFAULT_TOLERANCE  # noqa: E402
from surrogates.partial import partial_substitutions  # noqa: E402
from surrogates.perovskite_families import FAMILIES  # noqa: E402
from surrogates.plausibility import ANIONS, cation_states, oddities, species_amounts  # noqa: E402
from surrogates.thermo import known_phases  # noqa: E402

SYSTEMS = "Li-Mn-Ni-O,Li-Mn-Ti-O,La-Sr-Fe-O,Na-Fe-Mn-O,Li-Co-Ni-O,Ba-Sr-Ti-O"
TUNE_SYSTEMS = "Li-Fe-Mn-O,Na-Co-Ni-O,Ca-Sr-Ti-O,La-Ca-Mn-O,K-Nb-Ta-O"


def n_cations(formula: str) -> int:
    return sum(1 for el in Composition(formula).elements if el.symbol not in ANIONS)


def held_out(system: str) -> set[str]:
    """MP compositions of ``system`` with ≥ 2 cation elements (the recall targets)."""
    return {p.formula for p in known_phases().phases(system) if n_cations(p.formula) >= 2}


def random_space(system: str, max_each: int = 8, max_atoms: int = 40) -> set[str]:
    """Charge-balanced reduced formulas with ≥ 2 cations: each cation element in one of its
    states, 0..max_each per formula unit, the anion count that balances the charge."""
    els = system.split("-")
    anion = next(el for el in els if el in ANIONS)
    charge = -ANIONS[anion]
    cations = [el for el in els if el not in ANIONS]
    out: set[str] = set()
    for counts in itertools.product(range(max_each + 1), repeat=len(cations)):
        if sum(1 for c in counts if c) < 2:
            continue
        present = [(el, c) for el, c in zip(cations, counts, strict=True) if c]
        for states in itertools.product(*[cation_states(el) for el, _ in present]):
            total = sum(c * s for (_, c), s in zip(present, states, strict=True))
            if total % charge:
                continue
            n_anion = total // charge
            if n_anion < 1 or sum(counts) + n_anion > max_atoms:
                continue
            out.add(Composition({**dict(present), anion: n_anion}).reduced_formula)
    return out


def old_generator(system: str, holdout: set[str], novel_only: bool = True) -> tuple[set[str], float, float]:
    """(novel compositions, wall s, CPU s) of whole-site + isovalent partial substitution."""
    t0, c0 = time.perf_counter(), time.process_time()
    whole = generate_candidates([system], max_candidates=100_000, novel_only=novel_only, holdout=holdout)
    parents = generate_candidates([system], max_candidates=100_000, novel_only=False, holdout=holdout)
    partial = partial_substitutions(parents, [system], holdout=holdout, novel_only=novel_only)
    out = {c.formula for c in whole} | {c.formula for c in partial}
    return out, time.perf_counter() - t0, time.process_time() - c0


def recall_row(name: str, generated: set[str], odd: set[str], held: set[str], space: set[str]) -> dict:
    multi = {f for f in generated if n_cations(f) >= 2}
    hits = multi & held
    held_in_space = held & space
    chance = min(1.0, len(multi) / len(space)) * len(held_in_space) / len(held) if held and space else 0.0
    kept = multi - odd
    return {"generator": name, "held_out": len(held), "N": len(multi), "hits": len(hits),
            "recall": round(len(hits) / len(held), 3) if held else None,
            "precision": round(len(hits) / len(multi), 4) if multi else None,
            "chance_recall": round(chance, 3),
            "N_after_rules": len(kept), "hits_after_rules": len(kept & held),
            "recall_after_rules": round(len(kept & held) / len(held), 3) if held else None,
            "rules_strike_hits": round(len(hits & odd) / len(hits), 3) if hits else None,
            "rules_strike_all": round(len(multi & odd) / len(multi), 3) if multi else None,
            "examples_hit": sorted(hits)[:8]}


#: pipeline variants: name -> PoolSettings fields
LAYERED = ("RP1", "RP2", "RP3", "DJ2", "DJ3", "A_layered_O5", "brownmillerite")
VARIANTS = {"current": {"sources": tuple(s for s in SOURCES if s != "families")},
            "families": {},
            "layered": {"families": LAYERED},
            "ordered": {"families": tuple(f for f in FAMILIES if f not in LAYERED)},
            "b_lower": {"family_widen": "B_lower"},
            "widen_all": {"family_widen": "all"}}


def new_recall(system: str, held: set[str], tolerance: float, variant: dict | None = None,
               ) -> tuple[set[str], set[str], dict[str, dict], float, float]:
    """(compositions, those the default rules call odd, formula -> species amounts, wall, CPU)
    of the pipeline with the odd ones kept (max_per_formula = 1: one structure a formula)."""
    t0, c0 = time.perf_counter(), time.process_time()
    pool, _ = build_candidate_pool([system], holdout=held, max_candidates=10**6,
                                   settings=PoolSettings(tolerance=tolerance, keep_odd=True, **(variant or {})))
    gen = {c.formula for c in pool}
    odd = {c.formula for c in pool if c.provenance["oddities"]}
    amounts = {c.formula: species_amounts(c.structure) for c in pool}
    return gen, odd, amounts, time.perf_counter() - t0, time.process_time() - c0


#: rule thresholds swept on the tune systems: (min valence share, redox margin V); 0 / inf = off
RULE_GRID = [(0.0, float("inf")), (0.02, float("inf")), (0.05, float("inf")), (0.0, 0.5),
             (0.02, 0.5), (0.05, 0.5), (0.05, 0.3), (0.02, 0.3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default=SYSTEMS)
    ap.add_argument("--tune-systems", default=TUNE_SYSTEMS)
    ap.add_argument("--tolerances", default=str(DEFAULT_TOLERANCE))
    ap.add_argument("--variants", default="current,families", help=f"of {list(VARIANTS)}")
    ap.add_argument("--skip-tune", action="store_true")
    ap.add_argument("--skip-report", action="store_true")
    ap.add_argument("--skip-recall", action="store_true")
    args = ap.parse_args()
    variants = args.variants.split(",")
    if any(v not in VARIANTS for v in variants):
        raise SystemExit(f"unknown variant in {variants}; choose from {list(VARIANTS)}")
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      "load": os.getloadavg(), "default_tolerance": DEFAULT_TOLERANCE}), flush=True)
    kp = known_phases()
    if not args.skip_tune:
        for tol in [float(t) for t in args.tolerances.split(",")]:
            totals = {(v, rules): [0, 0] for v in variants for rules in RULE_GRID}  # hits, N after the rules
            cpu_total = dict.fromkeys(variants, 0.0)
            held_total = 0
            for system in args.tune_systems.split(","):
                held = held_out(system)
                space = random_space(system)
                held_total += len(held)
                for v in variants:
                    gen, odd, amounts, wall, cpu = new_recall(system, held, tol, VARIANTS[v])
                    cpu_total[v] += cpu
                    row = recall_row(v, gen, odd, held, space)
                    multi = {f for f in gen if n_cations(f) >= 2}
                    for rules in RULE_GRID:  # re-judged after the fact (parents were judged by the defaults)
                        kept = {f for f in multi
                                if not oddities(amounts[f], min_share=rules[0], redox_margin=rules[1])}
                        totals[(v, rules)][0] += len(kept & held)
                        totals[(v, rules)][1] += len(kept)
                    print(json.dumps({"split": "tune", "system": system, "tolerance": tol, "space": len(space),
                                      **row, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                                      "load": os.getloadavg()[0]}), flush=True)
            for (v, rules), (hits, n) in totals.items():
                fm = (hits / max(n, 1) * hits / max(held_total, 1)) ** 0.5
                print(json.dumps({"split": "tune", "variant": v, "tolerance": tol,
                                  "min_valence_share": rules[0], "redox_margin_v": str(rules[1]),
                                  "default_rules": rules == (0.05, 0.5), "hits": hits, "N": n,
                                  "held_out": held_total, "recall": round(hits / max(held_total, 1), 3),
                                  "precision": round(hits / max(n, 1), 4),
                                  "fowlkes_mallows": round(fm, 4), "cpu_s": round(cpu_total[v], 1)}), flush=True)
    if args.skip_report:
        return
    for system in args.systems.split(","):
        old, old_wall, old_cpu = old_generator(system, set())
        row = {"split": "report", "system": system, "old_novel": len(old),
               "old_wall_s": round(old_wall, 1), "old_cpu_s": round(old_cpu, 1)}
        for v in variants:
            t0, c0 = time.perf_counter(), time.process_time()
            pool, reps = build_candidate_pool([system], max_candidates=10**6,
                                              settings=PoolSettings(**VARIANTS[v]))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            novel = {c.formula for c in pool if not is_known(c.formula, (), kp)}
            rep = reps[0].as_dict()
            row |= {f"{v}_novel_before_rules": rep["novel_before_rules"],
                    f"{v}_novel_after_rules": len(novel), f"{v}_structures": len(pool),
                    f"{v}_per_source": rep["novel_compositions"], f"{v}_odd": rep["odd"],
                    f"{v}_wall_s": round(wall, 1), f"{v}_cpu_s": round(cpu, 1),
                    f"{v}_steps_s": rep["seconds"], f"{v}_examples": sorted(novel)[:12]}
            if v != "current":
                row["families_only_examples"] = sorted(
                    {c.formula for c in pool if c.source == "perovskite_family" and c.formula in novel})[:20]
        print(json.dumps(row | {"load": os.getloadavg()[0]}), flush=True)
        if args.skip_recall:
            continue
        held = held_out(system)
        space = random_space(system)
        gen_old, _, _ = old_generator(system, held)
        print(json.dumps({"split": "report", "system": system, "space": len(space),
                          **recall_row("old", gen_old, set(), held, space)}), flush=True)
        for v in variants:
            gen, odd, _, wall, cpu = new_recall(system, held, DEFAULT_TOLERANCE, VARIANTS[v])
            print(json.dumps({"split": "report", "system": system, "space": len(space),
                              **recall_row(v, gen, odd, held, space),
                              "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                              "load": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
