"""Candidate pool size per chemical system: whole-site substitution vs + partial substitution.

Usage:  OMP_NUM_THREADS=1 nice -n 10 python benchmarks/candidates.py [--systems Li-Mn-Ni-O,...]
Parents for partial substitution: whole-site substitution candidates including known
compositions (``novel_only=False``); every reported composition is novel (absent from the
Materials Project table shipped in surrogates/data). Prints one JSON object per system.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from surrogates.candidates import generate_candidates  # noqa: E402
from surrogates.partial import partial_substitutions  # noqa: E402

SYSTEMS = "Li-Mn-Ni-O,Li-Mn-Ti-O,La-Sr-Fe-O,Na-Fe-Mn-O,Li-Co-Ni-O,Ba-Sr-Ti-O"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default=SYSTEMS)
    ap.add_argument("--max-per-parent", type=int, default=12)
    args = ap.parse_args()
    for system in args.systems.split(","):
        t0 = time.perf_counter()
        whole = generate_candidates([system], max_candidates=1000)
        parents = generate_candidates([system], max_candidates=1000, novel_only=False)
        t1 = time.perf_counter()
        partial = partial_substitutions(parents, [system], max_per_parent=args.max_per_parent)
        t2 = time.perf_counter()
        novel_whole = {c.formula for c in whole}
        novel_partial = {c.formula for c in partial}
        print(json.dumps({
            "system": system, "whole_site_candidates": len(whole),
            "whole_site_novel_compositions": len(novel_whole),
            "partial_candidates": len(partial),
            "partial_novel_compositions": len(novel_partial),
            "novel_compositions_total": len(novel_whole | novel_partial),
            "examples": sorted(novel_partial)[:6],
            "whole_site_s": round(t1 - t0, 1), "partial_s": round(t2 - t1, 1),
            "date": time.strftime("%Y-%m-%d %H:%M")}), flush=True)


if __name__ == "__main__":
    main()
