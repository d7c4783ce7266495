"""Re-score a recall dump of ``benchmarks/recipes_literature.py --dump`` with other ranking weights.

Why: the planner's expensive part is the pathway prediction behind each candidate's
thermodynamic term; the weights that combine the terms (``THERMO_NATS_PER_100MEV``,
``THERMO_CAP_MEV``, ``PRIOR_WEIGHT``, ``DIVERSITY_NATS``) and the diversity pick are cheap. The
dump keeps every candidate's raw terms, so a grid of weights costs seconds instead of an hour
of planner time. This replicates ``RecipePlanner._score_terms`` and the full strategy's
``_diverse`` (checked: with the shipped constants it reproduces the dump's own picks, printed
as "reproduced"). Only for a TUNE dump (``--validation``) when choosing weights; on a held-out
dump it may only re-state a figure for weights already chosen.

Run: ``.venv/bin/python benchmarks/recipes_rescore.py /tmp/tune.json --thermo 0.5 1 2 --cap 300 600``
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import recipes.planner as P  # noqa: E402


def score(c: dict[str, Any], thermo: float, cap: float, prior_w: float) -> float:
    evidence = min(c["step"], cap)
    prior = min(c["prior"], c["df"], cap)
    mev = (1 - prior_w) * evidence + prior_w * prior
    return c["lit"] + thermo * mev / 100.0 + c["hand"]


def pick(cands: list[dict[str, Any]], n: int, thermo: float, cap: float, prior_w: float,
         diversity: float) -> list[dict[str, Any]]:
    """``RecipePlanner._diverse`` (full strategy, every candidate feasible before data)."""
    return pick_scored(cands, [score(c, thermo, cap, prior_w) for c in cands], n, diversity)


def pick_scored(cands: list[dict[str, Any]], scores: list[float], n: int, diversity: float) -> list[dict[str, Any]]:
    """The diverse pick for given scores (one per candidate); the picks in score order."""
    for c, s in zip(cands, scores, strict=True):
        c["_s"] = float(s)
        c["_f"] = set(c["k"].split("+"))
        c["_e"] = set(c["eff"])
    ranked = sorted(cands, key=lambda c: (-c["_s"], c["k"]))

    def sim(a: dict[str, Any], b: dict[str, Any]) -> float:
        j1 = len(a["_f"] & b["_f"]) / len(a["_f"] | b["_f"])
        j2 = len(a["_e"] & b["_e"]) / len(a["_e"] | b["_e"])
        return max(j1, j2)

    chosen: list[dict[str, Any]] = []
    m = min(n, len(ranked))
    while len(chosen) < m:
        rest = [c for c in ranked if not any(c is x for x in chosen)]
        common = set.intersection(*(x["_f"] for x in chosen)) if len(chosen) > 1 else set()
        if common and len(chosen) == m - 1:
            rest = [c for c in rest if not common <= c["_f"]] or rest
        chosen.append(max(rest, key=lambda c: c["_s"] - diversity * max((sim(c, x) for x in chosen), default=0.0)))
    order = {id(c): i for i, c in enumerate(ranked)}
    return sorted(chosen, key=lambda c: order[id(c)])


def recall(rows: list[dict[str, Any]], name: str, **w: float) -> tuple[int, int, int]:
    hits = hits1 = n = 0
    for r in rows:
        if not r["reachable"]:
            continue
        n += 1
        cands = r["planners"][name].get("cands") or []
        if not cands:
            continue
        chosen = pick(cands, 5, **w)
        hits += any(c["paper"] for c in chosen)
        hits1 += max(chosen, key=lambda c: c["_s"])["paper"]
    return hits, hits1, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump", type=Path)
    ap.add_argument("--planner", default="full + literature")
    ap.add_argument("--thermo", type=float, nargs="+", default=[P.THERMO_NATS_PER_100MEV])
    ap.add_argument("--cap", type=float, nargs="+", default=[P.THERMO_CAP_MEV])
    ap.add_argument("--prior-weight", type=float, nargs="+", default=[P.PRIOR_WEIGHT])
    ap.add_argument("--diversity", type=float, nargs="+", default=[P.DIVERSITY_NATS])
    args = ap.parse_args()
    rows = json.loads(args.dump.read_text())
    own = sum(r["planners"][args.planner]["hit5"] for r in rows if r["reachable"])
    k, _, n = recall(rows, args.planner, thermo=P.THERMO_NATS_PER_100MEV, cap=P.THERMO_CAP_MEV,
                     prior_w=P.PRIOR_WEIGHT, diversity=P.DIVERSITY_NATS)
    print(f"# {args.dump}: {n} reachable targets; the dump's own top-5 hits {own}, reproduced {k}")
    print("| nats/100 meV | cap (meV) | prior weight | diversity (nats) | top-5 recall | top-1 |")
    print("|---|---|---|---|---|---|")
    for th, cap, pw, dv in itertools.product(args.thermo, args.cap, args.prior_weight, args.diversity):
        k, k1, n = recall(rows, args.planner, thermo=th, cap=cap, prior_w=pw, diversity=dv)
        print(f"| {th:g} | {cap:g} | {pw:g} | {dv:g} | {k / n:.1%} ({k}/{n}) | {k1 / n:.1%} |")


if __name__ == "__main__":
    main()
