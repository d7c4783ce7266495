"""Does the brain's target ranking know which targets are makeable? (issue 19 diagnosis)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/target_ranking.py [--world alab-like-v2]
        [--campaigns DIR ...]

Prints the AUC (probability that a makeable target ranks above an unmakeable one; 0.5 = chance)
of (a) the public Materials Project energy above the known hull, the "plain thermodynamic
ranking" a chemist would use, and (b) for each kept campaign directory
(``benchmarks/campaign.py --keep-dir``), the decomposition energy the campaign's surrogate
predicted for each target when it chose it (stored with the target). Makeability is the world's
truth (builder's recipe search) — read here for scoring only, never by the brain.

Why it matters: in a budget-bound campaign on a small world the first round picks most targets
before any result is in (on ``alab-like-v2`` 17 of 24: 16 furnace slots + 1), so what the brain
knows a priori is what target choice can add over a random order.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def auc(score: dict[str, float], makeable: dict[str, bool]) -> float | None:
    """P(score of a makeable > score of an unmakeable), ties count half; None without both."""
    pos = [v for f, v in score.items() if makeable[f]]
    neg = [v for f, v in score.items() if not makeable[f]]
    if not pos or not neg:
        return None
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="alab-like-v2")
    ap.add_argument("--campaigns", type=Path, nargs="*", default=[])
    args = ap.parse_args()

    import surrogates
    from sim_lab import load_world

    world = load_world(args.world)
    kp = surrogates.known_phases()
    formulas = list(world.target_formulas())
    makeable = {f: bool(world.truth(f).makeable) for f in formulas}
    public = {f: -(kp.formation_energy(f) - kp.hull_reference_energy(f)) for f in formulas
              if kp.formation_energy(f) is not None}
    print(f"{args.world}: {len(formulas)} targets, {sum(makeable.values())} makeable, "
          f"{len(public)} with a public (MP) formation energy")
    a = auc(public, makeable)
    print(f"AUC public MP energy above the known hull: {a:.3f}" if a is not None else "AUC public: n/a")
    for d in args.campaigns:
        db = sqlite3.connect(d / "campaign.db")
        rows = db.execute("SELECT formula, predicted FROM target").fetchall()
        pred = {f: -json.loads(p)["e_decomp"] for f, p in rows if p and f in makeable}
        a = auc(pred, makeable)
        print(f"AUC surrogate's predicted decomposition energy at pick, {d.name}: "
              f"{'n/a' if a is None else f'{a:.3f}'} over {len(pred)} targets chosen")
    return 0


if __name__ == "__main__":
    sys.exit(main())
