"""Crash drill at 100 points: SIGKILL the controller at seeded random moments of a campaign.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/crash.py [--points 100] [--seed 0] [--world demo]

Prints one JSON object (kills, restarts, duplicate executions, lost experiments, ...) and exits
non-zero when the drill found a duplicate execution or a lost experiment.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

# benchmarks/ holds scripts named like the packages (recipes.py, sim_lab.py): keep it off the path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--world", default="demo")
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--max-offset-s", type=float, default=2.0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--exec", dest="exec_", action="store_true",
                    help="exec `synthloop run` for every restart instead of forking (slower: imports each time)")
    args = ap.parse_args()

    from controller.loop.drill import run_drill

    with tempfile.TemporaryDirectory(prefix="synthloop-crash-") as tmp:
        report = run_drill(args.workdir or Path(tmp), world=args.world, points=args.points, seed=args.seed,
                           budget=args.budget, max_offset_s=args.max_offset_s, fork=not args.exec_,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(report.to_dict()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
