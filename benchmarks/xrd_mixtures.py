"""XRD quantification on real scans of weighed precursor mixtures (Dara benchmark set).

Prints, per scan speed (2 and 8 min), phase-identification accuracy and the mean absolute error
of weight fractions (wt %), in two settings:
  known  - candidates are the weighed phases (TiO2 offered as both anatase and rutile);
  all    - candidates are all 11 precursor phases of the data set (identification matters).
Truth: the weighed mass fractions in the file names. Polymorphs are summed by formula.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/xrd_mixtures.py [--limit N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.xrd import analyze, bundled_cifs, load_phase, read_pattern  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "xrd" / "dara_precursor_mixtures"
PHASE_CIFS = {
    "Bi2O3": ["Bi2O3_14"],
    "In2O3": ["In2O3_206"],
    "La(OH)3": ["La(OH)3_176"],
    "Li2CO3": ["Li2CO3_15"],
    "MnCO3": ["MnCO3_167"],
    "NiO": ["NiO_225_sym"],
    "TiO2": ["TiO2_141", "TiO2_136"],
    "V2O5": ["V2O5_59"],
    "ZnO": ["ZnO_186"],
    "ZrO2": ["ZrO2_14"],
}


def parse_truth(name: str) -> tuple[dict[str, float], str]:
    """'NiO_0p6007-Bi2O3_0p4008--8min.xrdml' -> ({'NiO': .6007, 'Bi2O3': .4008}, '8min')."""
    stem, speed = name.removesuffix(".xrdml").split("--")
    truth = {}
    for part in stem.split("-"):
        formula, frac = part.rsplit("_", 1)
        truth[formula] = float(frac.replace("p", "."))
    total = sum(truth.values())
    return {k: v / total for k, v in truth.items()}, speed


def formula_of(cif_stem: str) -> str:
    return cif_stem.split("_")[0]


def run(limit: int | None = None, speed_only: str | None = None,
        mode_only: str | None = None) -> dict:
    files = sorted(DATA.glob("*.xrdml"))[: limit or None]
    available = bundled_cifs()
    phases = {stem: load_phase(stem) for cifs in PHASE_CIFS.values() for stem in cifs}
    assert set(phases) <= set(available)
    for ph in phases.values():  # reflections computed once, outside the timing
        ph.reflections()
    rows = []
    for f in files:
        truth, speed = parse_truth(f.name)
        if speed_only and speed != speed_only:
            continue
        pattern = read_pattern(f)
        for mode in ("known", "all"):
            if mode_only and mode != mode_only:
                continue
            if mode == "known":
                cands = [phases[s] for k in truth for s in PHASE_CIFS[k]]
            else:
                cands = list(phases.values())
            t0, c0 = time.perf_counter(), time.process_time()
            res = analyze(pattern, cands)
            dt = time.perf_counter() - t0
            dcpu = time.process_time() - c0
            found: dict[str, float] = {}
            var: dict[str, float] = {}
            for p in res.phases:
                key = formula_of(p.name)
                found[key] = found.get(key, 0.0) + p.weight_fraction
                var[key] = var.get(key, 0.0) + p.weight_fraction_std**2
            keys = set(truth) | set(found)
            errs = {k: abs(found.get(k, 0.0) - truth.get(k, 0.0)) * 100 for k in keys}
            rows.append(
                {
                    "file": f.name,
                    "speed": speed,
                    "mode": mode,
                    "truth": truth,
                    "found": found,
                    "abs_err_wt_pct": errs,
                    "std_wt_pct": {k: v**0.5 * 100 for k, v in var.items()},
                    "missed": sorted(set(truth) - set(found)),
                    "extra": sorted(set(found) - set(truth)),
                    "rwp": res.rwp,
                    "seconds": dt,
                    "cpu_seconds": dcpu,
                    "n_candidates": len(cands),
                    "unexplained_peaks": res.unexplained_peaks,
                    "delta_chi2": {p.name: p.delta_chi2 for p in res.phases},
                }
            )
            print(
                f"{mode:5s} {speed:4s} {f.name[:52]:52s} rwp={res.rwp:.3f} t={dt:.2f}s "
                + " ".join(f"{k}={found.get(k, 0) * 100:.1f}/{truth.get(k, 0) * 100:.1f}"
                           for k in sorted(keys))
                + "  dchi2 " + " ".join(f"{p.name.split('_')[0]}:{p.delta_chi2:.0f}"
                                        for p in res.phases),
                flush=True,
            )
    summary = {}
    for mode in ("known", "all"):
        for speed in ("2min", "8min"):
            sub = [r for r in rows if r["mode"] == mode and r["speed"] == speed]
            if not sub:
                continue
            errs = [e for r in sub for e in r["abs_err_wt_pct"].values()]
            weighed_errs = [r["abs_err_wt_pct"][k] for r in sub for k in r["truth"]]
            n_weighed = sum(len(r["truth"]) for r in sub)
            n_found = sum(len(r["truth"]) - len(r["missed"]) for r in sub)
            summary[f"{mode}/{speed}"] = {
                "patterns": len(sub),
                "exact_identification": sum(not r["missed"] and not r["extra"] for r in sub)
                / len(sub),
                "weighed_phases_found": f"{n_found}/{n_weighed}",
                "false_phases": sum(len(r["extra"]) for r in sub),
                "mae_wt_pct": statistics.fmean(errs),
                "mae_weighed_wt_pct": statistics.fmean(weighed_errs),
                "max_err_wt_pct": max(errs),
                "mean_std_wt_pct": statistics.fmean(
                    v for r in sub for v in r["std_wt_pct"].values()),
                "within_2_std": statistics.fmean(
                    float(r["abs_err_wt_pct"][k] <= 2 * r["std_wt_pct"][k])
                    for r in sub for k in r["std_wt_pct"]),
                "mean_seconds": statistics.fmean(r["seconds"] for r in sub),
                "max_seconds": max(r["seconds"] for r in sub),
                "mean_cpu_seconds": statistics.fmean(r["cpu_seconds"] for r in sub),
                "n_candidates": sub[0]["n_candidates"] if mode == "all" else "2-4",
            }
    return {"summary": summary, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N files")
    ap.add_argument("--json", type=Path, default=None, help="write all rows as JSON")
    ap.add_argument("--speed", choices=["2min", "8min"], default=None, help="only one speed")
    ap.add_argument("--mode", choices=["known", "all"], default=None, help="only one setting")
    args = ap.parse_args()
    out = run(args.limit, args.speed, args.mode)
    print()
    print(f"{'setting':12s} {'ident.acc':>9s} {'found':>7s} {'false':>5s} {'MAE wt%':>8s} "
          f"{'MAE(weighed)':>12s} {'max err':>7s} {'s/pattern':>9s} {'CPU s':>6s} {'mean σ':>6s} "
          f"{'|err|<=2σ':>9s}")
    for key, s in out["summary"].items():
        print(f"{key:12s} {s['exact_identification']:9.2f} {s['weighed_phases_found']:>7s} "
              f"{s['false_phases']:5d} {s['mae_wt_pct']:8.2f} {s['mae_weighed_wt_pct']:12.2f} "
              f"{s['max_err_wt_pct']:7.1f} {s['mean_seconds']:9.2f} {s['mean_cpu_seconds']:6.2f} "
              f"{s['mean_std_wt_pct']:6.2f} {s['within_2_std']:9.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
