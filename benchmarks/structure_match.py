"""How often does the brain's predicted structure of a target give the lab's XRD pattern?

For every makeable target of the bundled worlds (the truth picks the targets and scores; the
brain's inputs are only the ``PublicWorld``: known structures and published computed ones) this
compares the powder pattern of

  (a) the predicted structure (``surrogates.StructurePredictor``: substitution, else template
      decoration), unrelaxed;
  (b) the same structure relaxed with SevenNet-0 (``surrogates.relax.Relaxer``: FrechetCellFilter,
      a step cap; never the lab's CHGNet oracle);
  (c) the world's published computed structure, where it has one (alab-like-v2);

with the pattern of the lab's true structure.

Match rule (the one the XRD analysis needs to find a target): the analysis lets a target's cell
lengths move by ``target_lattice_range`` = 3 % each (a coarse isotropic strain search in ln(1/d),
then a local fit of a, b, c), and locks a reference onto a pattern by correlating the
square-rooted net signal with it (``controller.xrd.strain_search``). So a candidate matches when
the best cosine similarity of square-rooted, broadened profiles (Cu Kα1, 2θ 10-80°, Gaussian
FWHM of the world's instrument, crystallite size and microstrain at 2θ = 40°), over strains of
a, b, c within ±3 %, reaches the threshold. The threshold is set from a null distribution, not
from the predictions: the same best-strain similarity between the true structures of two
*different* targets of the same world with different anonymised formulas (different compounds
that the analysis must not confuse); threshold = the ``--null-quantile`` quantile (95 %) of
that distribution (pairs from all three worlds, whichever are scored), so about one in twenty
unrelated compounds would "match" by chance.

Why a miss happens, per target: ``wrong prototype`` when pymatgen's StructureMatcher (scale
allowed, loose tolerances) finds the predicted and the true structure to be different structure
types; ``cell`` when they are the same type but the peaks need more than the 3 % freedom (the
similarity with ±15 % isotropic freedom passes); else ``pattern`` (same type, cell within
reach, but intensities or splitting differ: another cation ordering, distortion).

Run: ``python benchmarks/structure_match.py [--worlds demo alab-like-v2 alab-like]
[--max-steps 60] [--fmax 0.1] [--optimizer BFGS] [--cache DIR]``. Relaxations are cached in ``--cache`` (JSON per
world and setting) so an interrupted run resumes. Single thread (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from pymatgen.core import Composition, Structure  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.loop.public_world import PublicWorld  # noqa: E402
from controller.xrd.fitting import d_spacings  # noqa: E402
from controller.xrd.reference import compute_reflections, lorentz_polarisation  # noqa: E402
from sim_lab.world import World, load_world  # noqa: E402
from surrogates.prototypes import StructurePredictor  # noqa: E402
from surrogates.relax import Relaxer  # noqa: E402

WAVELENGTH = 1.54056  # Cu Kα1, Å
TT_RANGE = (10.0, 80.0)
STEP = 0.02
CELL_FREEDOM = 0.03  # controller.xrd.analysis.AnalysisSettings.target_lattice_range
WIDE_FREEDOM = 0.15
NULL_WORLDS = ("demo", "alab-like-v2", "alab-like")  # isotropic, for telling a cell miss from a pattern miss
GRID = np.arange(TT_RANGE[0], TT_RANGE[1] + STEP / 2, STEP)


def world_fwhm(world: World) -> float:
    """Gaussian FWHM (deg) of the lab's peaks at 2θ = 40°: Scherrer size, microstrain and
    instrument added in quadrature, as sim_lab.xrd broadens them."""
    p = world.instruments.xrd
    theta = math.radians(20.0)
    size = math.degrees(0.9 * WAVELENGTH / (p.crystallite_nm * 10.0 * math.cos(theta)))
    strain = math.degrees(4 * p.microstrain * math.tan(theta))
    return math.sqrt(size**2 + strain**2 + p.instrument_fwhm_deg**2)


@dataclass
class Sticks:
    """Reflections of one structure: what is needed to re-render it under a cell strain."""

    hkl: np.ndarray
    f2m: np.ndarray
    lattice: np.ndarray


def sticks(structure: Structure) -> Sticks:
    s = structure.copy()
    s.remove_oxidation_states()
    r = compute_reflections(s, d_min=WAVELENGTH / (2 * math.sin(math.radians(TT_RANGE[1] * 1.2 / 2))))
    return Sticks(r.hkl, r.f2m, r.lattice)


def profile(st: Sticks, strain: np.ndarray, fwhm: float) -> np.ndarray:
    """√ of the broadened pattern (unit norm) after scaling a, b, c by 1 + strain."""
    d = d_spacings(st.hkl, st.lattice, strain)
    arg = WAVELENGTH / (2 * d)
    ok = arg < 1
    tt = np.degrees(2 * np.arcsin(arg[ok]))
    inten = st.f2m[ok] * lorentz_polarisation(tt)
    keep = (tt > TT_RANGE[0] - 1) & (tt < TT_RANGE[1] + 1)
    tt, inten = tt[keep], inten[keep]
    # sticks binned onto the grid (split linearly between neighbours), then one convolution
    # with the Gaussian: the same profile as a per-peak sum, at the cost of one FFT-free pass
    y = np.zeros_like(GRID)
    pos = (tt - GRID[0]) / STEP
    i0 = np.floor(pos).astype(int)
    frac = pos - i0
    for idx, w in ((i0, 1 - frac), (i0 + 1, frac)):
        ok = (idx >= 0) & (idx < GRID.size)
        np.add.at(y, idx[ok], inten[ok] * w[ok])
    y = np.convolve(y, _kernel(fwhm), mode="same")
    y = np.clip(y, 0.0, None)
    y = np.sqrt(y)
    n = np.linalg.norm(y)
    return y / n if n > 0 else y


_KERNELS: dict[float, np.ndarray] = {}


def _kernel(fwhm: float) -> np.ndarray:
    k = _KERNELS.get(fwhm)
    if k is None:
        s = fwhm / 2.3548 / STEP
        x = np.arange(-int(np.ceil(5 * s)), int(np.ceil(5 * s)) + 1)
        k = _KERNELS[fwhm] = np.exp(-0.5 * (x / s) ** 2)
    return k


def best_similarity(cand: Sticks, true_profile: np.ndarray, fwhm: float, freedom: float,
                    isotropic_only: bool = False) -> tuple[float, np.ndarray]:
    """Max cosine similarity over strains of a, b, c within ±freedom: an isotropic scan (the
    analysis' strain search), then per-axis coordinate sweeps (its local fit of a, b, c)."""
    best, best_e = -1.0, np.zeros(3)
    for e in np.linspace(-freedom, freedom, max(int(round(2 * freedom / 0.001)) + 1, 3)):
        v = float(profile(cand, np.full(3, e), fwhm) @ true_profile)
        if v > best:
            best, best_e = v, np.full(3, e)
    if isotropic_only:
        return best, best_e
    for _sweep in range(2):
        for axis in range(3):
            for delta in np.linspace(-0.01, 0.01, 21):
                e = best_e.copy()
                e[axis] = float(np.clip(e[axis] + delta, -freedom, freedom))
                v = float(profile(cand, e, fwhm) @ true_profile)
                if v > best + 1e-9:
                    best, best_e = v, e
    return best, best_e


def same_prototype(a: Structure, b: Structure) -> bool:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    sm = StructureMatcher(ltol=0.3, stol=0.5, angle_tol=10, primitive_cell=True, scale=True,
                          attempt_supercell=True)
    aa, bb = a.copy(), b.copy()
    aa.remove_oxidation_states()
    bb.remove_oxidation_states()
    try:
        return bool(sm.fit(aa, bb))
    except Exception:  # noqa: BLE001 - an unmatched supercell search counts as different
        return False


def makeable_targets(world: World) -> list[str]:
    out = []
    for f in world.target_formulas():
        t = world.truth(f)
        if t is not None and t.makeable:
            out.append(f)
    return out


def null_similarities(world: World, fwhm: float, max_pairs: int = 300, seed: int = 0) -> list[float]:
    """Best-strain similarity between true structures of different targets of one world whose
    anonymised formulas differ (ordered pairs: the candidate is strained, not the truth; at most
    ``max_pairs``, drawn with ``seed``)."""
    forms = world.target_formulas()
    st = {f: sticks(world.structure(f)) for f in forms}
    prof = {f: profile(st[f], np.zeros(3), fwhm) for f in forms}
    anon = {f: Composition(f).anonymized_formula for f in forms}
    pairs = [(f, g) for f in forms for g in forms if f != g and anon[f] != anon[g]]
    rng = np.random.default_rng(seed)
    if len(pairs) > max_pairs:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), max_pairs, replace=False))]
    return [best_similarity(st[g], prof[f], fwhm, CELL_FREEDOM)[0] for f, g in pairs]


def _digest(structure: Structure) -> str:
    return hashlib.sha1(json.dumps(structure.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _load_cache(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {}


def run_world(name: str, relaxer: Relaxer | None, cache_dir: Path, settings: str) -> dict:
    world = load_world(name)
    fwhm = world_fwhm(world)
    public = PublicWorld.from_world(world)  # the brain's inputs
    predictor = StructurePredictor(public.known_structures)
    cache_path = cache_dir / f"{name}-{settings}.json"
    cache = _load_cache(cache_path)
    rows = []
    for f in makeable_targets(world):
        true = world.structure(f)  # scoring only
        tprof = profile(sticks(true), np.zeros(3), fwhm)
        row: dict = {"world": name, "formula": f, "atoms_true": len(true)}
        made = predictor.guess(f)
        if made is None:
            row["predicted"] = None
        else:
            s, prov = made
            row["provenance"] = prov
            row["atoms"] = len(s)
            sim, strain = best_similarity(sticks(s), tprof, fwhm, CELL_FREEDOM)
            wide, _ = best_similarity(sticks(s), tprof, fwhm, WIDE_FREEDOM, isotropic_only=True)
            row["predicted"] = {"sim": sim, "wide_sim": max(wide, sim), "strain": strain.tolist(),
                                "same_type": same_prototype(s, true),
                                "volume_ratio": s.volume / len(s) / (true.volume / len(true))}
            if relaxer is not None:
                key = f"{f}:{_digest(s)}"  # a changed prediction is relaxed again
                hit = cache.get(key)
                if hit is None:
                    try:
                        done = relaxer.relax(s)
                        hit = {"structure": done.structure.as_dict(), "steps": done.steps,
                               "converged": done.converged, "seconds": done.seconds,
                               "cpu_seconds": done.cpu_seconds, "energy": done.energy_per_atom,
                               "atoms": len(done.structure)}
                    except ValueError as exc:
                        hit = {"error": str(exc)}
                    cache[key] = hit
                    cache_path.write_text(json.dumps(cache))
                if "error" in hit:
                    row["relaxed"] = {"error": hit["error"]}
                else:
                    r = Structure.from_dict(hit["structure"])
                    sim_r, strain_r = best_similarity(sticks(r), tprof, fwhm, CELL_FREEDOM)
                    wide_r, _ = best_similarity(sticks(r), tprof, fwhm, WIDE_FREEDOM, isotropic_only=True)
                    row["relaxed"] = {"sim": sim_r, "wide_sim": max(wide_r, sim_r),
                                      "strain": strain_r.tolist(), "same_type": same_prototype(r, true),
                                      "volume_ratio": r.volume / len(r) / (true.volume / len(true)),
                                      **{k: hit[k] for k in ("steps", "converged", "seconds", "cpu_seconds", "atoms")}}
        if f in public.computed_structures:
            c = public.computed_structures[f]
            sim_c, strain_c = best_similarity(sticks(c), tprof, fwhm, CELL_FREEDOM)
            row["computed"] = {"sim": sim_c, "strain": strain_c.tolist(),
                               "volume_ratio": c.volume / len(c) / (true.volume / len(true))}
        rows.append(row)
        print(_row_line(row), flush=True)
    return {"world": name, "fwhm": fwhm, "rows": rows}


def _row_line(row: dict) -> str:
    def part(key: str) -> str:
        v = row.get(key)
        if v is None:
            return f"{key}=-"
        if "error" in v:
            return f"{key}=error"
        extra = f" {v['steps']}st {v['cpu_seconds']:.0f}cpu-s" if "steps" in v else ""
        return f"{key}={v['sim']:.3f}{extra}"
    return (f"  {row['world']:<13} {row['formula']:<14} {part('predicted')} {part('relaxed')} "
            f"{part('computed')}  {row.get('provenance', 'no prediction')[:60]}")


def classify(v: dict | None, threshold: float) -> str:
    if v is None:
        return "no structure"
    if "error" in v:
        return "relaxation failed"
    if v["sim"] >= threshold:
        return "match"
    if not v["same_type"]:
        return "wrong prototype"
    return "cell" if v["wide_sim"] >= threshold else "pattern"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", nargs="+", default=["demo", "alab-like-v2", "alab-like"])
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--fmax", type=float, default=0.1)
    ap.add_argument("--optimizer", default="BFGS", choices=["FIRE", "BFGS"])
    ap.add_argument("--no-relax", action="store_true")
    ap.add_argument("--null-quantile", type=float, default=0.95)
    ap.add_argument("--cache", default="/tmp/synthloop-structure-match")
    ap.add_argument("--json", help="write every row and the summary here")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    relaxer = None if args.no_relax else Relaxer(fmax=args.fmax, max_steps=args.max_steps,
                                                 optimizer=args.optimizer)
    settings = f"{args.optimizer}-f{args.fmax}-s{args.max_steps}"
    cache_dir = Path(args.cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = [run_world(w, relaxer, cache_dir, settings) for w in args.worlds]
    # the threshold comes from all three bundled worlds whichever are scored, so a partial run
    # uses the same rule as a full one
    null = np.array([v for w in NULL_WORLDS for v in null_similarities(load_world(w), world_fwhm(load_world(w)))])
    threshold = float(np.quantile(null, args.null_quantile))
    print(f"\nnull (different compounds, best strain within ±{CELL_FREEDOM:.0%}): n={null.size}, "
          f"median {np.median(null):.3f}, q{args.null_quantile:.2f} = {threshold:.3f} -> threshold")
    print("FWHM (deg): " + ", ".join(f"{r['world']} {r['fwhm']:.3f}" for r in results))
    strict = float(np.quantile(null, 0.99))
    summary: dict = {"threshold": threshold, "strict_threshold": strict, "settings": settings,
                     "worlds": {}}
    rows_all = [row for r in results for row in r["rows"]]
    for label, thr in ((f"q{args.null_quantile:.2f} of the null = {threshold:.3f}", threshold),
                       (f"stricter, q0.99 of the null = {strict:.3f}", strict)):
        print(f"\nmatch rate, threshold {label} (denominator: every makeable target; no "
              f"structure = miss; computed: targets that publish one)")
        print(f"{'world':<13} {'targets':>7}  {'predicted':>12} {'relaxed':>12} {'computed':>12}")
        for name, rows in [(r["world"], r["rows"]) for r in results] + [("all", rows_all)]:
            line = {}
            for key in ("predicted", "relaxed", "computed"):
                have = rows
                if key == "relaxed" and relaxer is None:
                    have = []
                if key == "computed":
                    have = [row for row in rows if "computed" in row]
                hits = sum(classify(row.get(key), thr) == "match" for row in have)
                line[key] = (hits, len(have))
            summary["worlds"].setdefault(name, {})[f"{thr:.3f}"] = {
                k: {"match": h, "of": n} for k, (h, n) in line.items()}
            cells = "  ".join(f"{h:>4}/{n:<3} ({h / n:4.0%})" if n else f"{'-':>12}"
                              for h, n in line.values())
            print(f"{name:<13} {len(rows):>7}  {cells}")
    print("\nwhy a predicted structure misses (unrelaxed -> relaxed):")
    for key in ("predicted", "relaxed"):
        if key == "relaxed" and relaxer is None:
            continue
        counts: dict[str, int] = {}
        for row in rows_all:
            c = classify(row.get(key) if row.get("predicted") is not None else None, threshold)
            counts[c] = counts.get(c, 0) + 1
        summary[f"why_{key}"] = counts
        print(f"  {key:<9} " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    if relaxer is not None:
        pairs = [(classify(row.get("predicted"), threshold), classify(row.get("relaxed"), threshold),
                  row["formula"]) for row in rows_all if row.get("predicted") is not None]
        gained = [f for a, b, f in pairs if a != "match" and b == "match"]
        lost = [f for a, b, f in pairs if a == "match" and b != "match"]
        summary["gained"], summary["lost"] = gained, lost
        print(f"relaxation turned {len(gained)} misses into matches ({', '.join(gained) or '-'}) "
              f"and {len(lost)} matches into misses ({', '.join(lost) or '-'})")
        rel = [row["relaxed"] for row in rows_all if row.get("relaxed") and "error" not in row["relaxed"]]
        if rel:
            cpu = np.array([v["cpu_seconds"] for v in rel])
            wall = np.array([v["seconds"] for v in rel])
            steps = np.array([v["steps"] for v in rel])
            atoms = np.array([v["atoms"] for v in rel])
            conv = sum(v["converged"] for v in rel)
            summary["relax"] = {"n": len(rel), "cpu_median_s": float(np.median(cpu)),
                                "cpu_max_s": float(cpu.max()), "wall_median_s": float(np.median(wall)),
                                "steps_median": float(np.median(steps)), "converged": conv,
                                "cpu_per_atom_step_ms": float(1000 * np.sum(cpu) / np.sum(steps * atoms))}
            print(f"\nrelaxation ({settings}): {len(rel)} structures, {conv} converged within the cap; "
                  f"CPU s per structure median {np.median(cpu):.1f} (max {cpu.max():.1f}), wall median "
                  f"{np.median(wall):.1f}; steps median {np.median(steps):.0f}; "
                  f"{summary['relax']['cpu_per_atom_step_ms']:.1f} ms CPU per atom-step")
        vols = [(row["predicted"]["volume_ratio"], row["relaxed"]["volume_ratio"]) for row in rows_all
                if row.get("relaxed") and "error" not in row["relaxed"]]
        if vols:
            v = np.array(vols)
            print(f"volume per atom / true: unrelaxed median {np.median(v[:, 0]):.3f} "
                  f"(|dev| median {np.median(np.abs(v[:, 0] - 1)):.1%}), relaxed median "
                  f"{np.median(v[:, 1]):.3f} (|dev| median {np.median(np.abs(v[:, 1] - 1)):.1%})")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s wall")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
