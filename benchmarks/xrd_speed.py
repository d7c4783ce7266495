"""Simulated mixtures: accuracy of weight fractions and speed with 10 candidate phases.

Patterns come from controller.xrd.simulate_mixture (seeded; its own profile law, strain, zero
shift, background and Poisson noise), shaped like the simulated XRD station's output: Cu K-alpha
1.5406 A, 2theta 10-80 deg, step 0.02. Every pattern is analysed against the same 10
candidates, 2-3 of which are present (5-90 wt %).

Prints MAE (wt %, over all candidates, absent ones counted at 0), the largest weight fraction
reported for an absent phase, phases missed, and seconds per pattern (mean, max).
Goals: MAE <= 2 wt %, no absent phase > 5 wt %, <= 1 s per pattern.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/xrd_speed.py [--n 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.xrd import analyze, load_phase, simulate_mixture  # noqa: E402

CANDIDATES = [
    "Bi2O3_14", "In2O3_206", "La(OH)3_176", "Li2CO3_15", "MnCO3_167",
    "NiO_225_sym", "TiO2_141", "V2O5_59", "ZnO_186", "ZrO2_14",
]


def mixtures(n: int, seed: int) -> list[tuple[list[int], np.ndarray, int]]:
    """n random mixtures: (phase indices, weight fractions, pattern seed)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        m = int(rng.integers(2, 4))
        idx = sorted(rng.choice(len(CANDIDATES), size=m, replace=False).tolist())
        while True:
            w = rng.dirichlet(np.ones(m))
            if w.min() >= 0.05:
                break
        out.append((idx, w, seed * 1000 + k))
    return out


def run(n: int, seed: int) -> dict:
    phases = [load_phase(c) for c in CANDIDATES]
    for p in phases:
        p.reflections()
    errs, present_errs, absent_max, missed, times, cpu = [], [], 0.0, 0, [], []
    for idx, w, pseed in mixtures(n, seed):
        pat = simulate_mixture([phases[i] for i in idx], list(w), seed=pseed)
        t0, c0 = time.perf_counter(), time.process_time()
        res = analyze(pat, phases)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        found = res.weight_fractions()
        truth = {CANDIDATES[i]: float(v) for i, v in zip(idx, w, strict=True)}
        for name in CANDIDATES:
            errs.append(abs(found.get(name, 0.0) - truth.get(name, 0.0)) * 100)
            if name in truth:
                present_errs.append(errs[-1])
            if name not in truth:
                absent_max = max(absent_max, found.get(name, 0.0) * 100)
        missed += sum(1 for k in truth if k not in found)
        print(f"seed {pseed}: rwp {res.rwp:.3f} t {times[-1]:.2f}s  "
              + " ".join(f"{k.split('_')[0]}={found.get(k, 0) * 100:.1f}/{truth.get(k, 0) * 100:.1f}"
                         for k in CANDIDATES if k in truth or k in found), flush=True)
    return {
        "patterns": n,
        "mae_wt_pct": statistics.fmean(errs),
        "mae_present_wt_pct": statistics.fmean(present_errs),
        "max_present_err_wt_pct": max(present_errs),
        "max_absent_wt_pct": absent_max,
        "missed_phases": missed,
        "mean_seconds": statistics.fmean(times),
        "max_seconds": max(times),
        "mean_cpu_seconds": statistics.fmean(cpu),
        "max_cpu_seconds": max(cpu),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    s = run(args.n, args.seed)
    print(
        f"\nsimulated mixtures (10 candidates, {s['patterns']} patterns): "
        f"MAE {s['mae_wt_pct']:.2f} wt % (present phases only {s['mae_present_wt_pct']:.2f}, "
        f"max {s['max_present_err_wt_pct']:.2f}), largest absent phase {s['max_absent_wt_pct']:.2f} wt %, "
        f"missed {s['missed_phases']}, wall {s['mean_seconds']:.2f} s/pattern "
        f"(max {s['max_seconds']:.2f}), CPU {s['mean_cpu_seconds']:.2f} s/pattern "
        f"(max {s['max_cpu_seconds']:.2f})"
    )


if __name__ == "__main__":
    main()
