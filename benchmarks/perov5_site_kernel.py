"""perov_5 heat_ref: the kernel prior on site-pooled SevenNet-0 features (issue 22).

``features``: one pass of SevenNet-0 over every cell of data_perov_5_val and _test, keeping the
per-atom invariant features of all five interaction blocks and the atom energies
(artifacts/sevennet_perov5_atoms.npz, ~3.4 min CPU), and writing from the same pass the
mean-pooled rows (artifacts/sevennet_perov5_features.npz, what ``surrogate_arch.py`` reads)
and the site-pooled rows of the default blocks (artifacts/sevennet_perov5_site.npz).

``grid``: tune split only (train on val buckets 1-4, score bucket 0, as ``surrogate_arch.py``):
the kernel prior's MAE (no network) over pooling × blocks × lengthscale × composition scale.
``compare --split tune|heldout``: mean predictor, linear prior, the previous default (mean
pooling of the last block, ℓ 1.4, w 0.45) and the shipped default (``KernelPrior`` and
``PotentialFeatures(pooling="site")`` defaults), each with 90 % coverage from
``fit_calibrated`` and its CPU time, in one run. ``heldout`` trains on all of val and scores
test; run it once per final candidate.

Usage:  OMP_NUM_THREADS=1 nice -n 5 python benchmarks/perov5_site_kernel.py features
        OMP_NUM_THREADS=1 nice -n 5 python benchmarks/perov5_site_kernel.py grid
        OMP_NUM_THREADS=1 nice -n 5 python benchmarks/perov5_site_kernel.py compare --split tune
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
SHARED = ROOT.parent / "shared" / "data" / "structures"
ATOM_CACHE = ROOT / "artifacts" / "sevennet_perov5_atoms.npz"
FEATURE_CACHE = ROOT / "artifacts" / "sevennet_perov5_features.npz"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from polymorphs import machine  # noqa: E402
from surrogate_arch import splits  # noqa: E402

from surrogates.datasets import read_structure_csv  # noqa: E402
from surrogates.graphs import structure_key  # noqa: E402
from surrogates.prior_features import DEFAULT_SITE_LAYERS, site_row  # noqa: E402

SITE_CACHE = ROOT / "artifacts" / "sevennet_perov5_site.npz"
Z90 = 1.6448536269514722


def pooled(atoms: np.ndarray) -> np.ndarray:
    """The pooled descriptor row of ``PotentialFeatures.compute`` from last-block atom rows."""
    a = atoms.astype(np.float64)
    x, e = a[:, -129:-1], a[:, -1]
    n = len(a)
    return np.concatenate([[e.sum() / n], x.mean(0), x.std(0), [e.mean(), e.std(),
                                                                e.max() - e.min()]]).astype(np.float32)


def compute_features(log) -> None:
    from surrogates.prior_features import PotentialFeatures

    pot = PotentialFeatures(batch_size=64)
    keys, rows, per_atom = [], [], []
    for name in ("val", "test"):
        s, _, ids = read_structure_csv(SHARED / f"data_perov_5_{name}.csv.gz", "heat_ref")
        t0 = time.process_time()
        for start in range(0, len(s), 512):
            part = s[start:start + 512]
            arr = pot.atom_features(part)
            per_atom.extend(arr)
            keys.extend(structure_key(x, 0.0, 0) for x in part)
            rows.extend(pooled(a) for a in arr)
            log(f"{name}: {start + len(part)}/{len(s)} cells, "
                f"{time.process_time() - t0:.0f} s CPU")
    counts = np.array([len(a) for a in per_atom])
    ATOM_CACHE.parent.mkdir(exist_ok=True)
    np.savez_compressed(ATOM_CACHE, keys=np.array(keys), counts=counts,
                        atoms=np.concatenate(per_atom).astype(np.float32))
    np.savez_compressed(FEATURE_CACHE, keys=np.array(keys), rows=np.stack(rows))
    write_site_cache()


def write_site_cache() -> None:
    """Site-pooled rows of every perov_5 cell, keyed as ``PotentialFeatures(pooling="site")``
    keys them (``surrogate_arch.py`` loads them into that cache)."""
    from surrogates.prior_features import PotentialFeatures

    prefix = PotentialFeatures(pooling="site")._prefix
    atoms = _atoms()
    keys, rows = [], []
    for name in ("val", "test"):
        s, _, _ = read_structure_csv(SHARED / f"data_perov_5_{name}.csv.gz", "heat_ref")
        keys += [prefix + structure_key(x, 0.0, 0) for x in s]
        rows.append(descriptors(s, atoms, "site").astype(np.float32))
    np.savez_compressed(SITE_CACHE, keys=np.array(keys), rows=np.concatenate(rows))


def _atoms() -> dict[str, np.ndarray]:
    blob = np.load(ATOM_CACHE)
    off = np.concatenate([[0], np.cumsum(blob["counts"])])
    atoms = blob["atoms"]
    return {k: atoms[off[i]:off[i + 1]] for i, k in enumerate(blob["keys"].tolist())}


def descriptors(structures, atoms: dict, pooling: str, layers=DEFAULT_SITE_LAYERS) -> np.ndarray:
    """Descriptor rows from the per-atom cache: exactly what ``PotentialFeatures(pooling=...,
    layers=...)`` computes (the same forward pass, pooled here)."""
    out = []
    for s in structures:
        a = atoms[structure_key(s, 0.0, 0)]
        if pooling == "mean":
            out.append(pooled(a[:, -129:]))
        else:
            cols = np.concatenate([np.arange(128 * i, 128 * (i + 1)) for i in layers] + [[640]])
            out.append(site_row(s, a[:, cols], layers))
    return np.stack(out).astype(np.float64)


def score(name: str, structures_tr, d_tr, y_tr, structures_te, d_te, y_te, **options) -> dict:
    from surrogates.kernel_prior import KernelPrior

    t0 = time.process_time()
    head, _ = KernelPrior.fit_calibrated(structures_tr, d_tr, y_tr, **options)
    pred, std = head.predict(structures_te, d_te), head.std(structures_te, d_te)
    err = pred - y_te
    return {"model": name, **{k: (list(v) if isinstance(v, tuple) else v)
                              for k, v in options.items()},
            "mae": round(float(np.abs(err).mean()), 4),
            "rmse": round(float(np.sqrt((err ** 2).mean())), 4),
            "coverage_90": round(float((np.abs(err) <= Z90 * std).mean()), 3),
            "cpu_s": round(time.process_time() - t0, 1), **machine()}


def compare(split: str) -> None:
    from surrogates.pretrained import LinearPrior

    s_tr, y_tr, s_te, y_te = splits(split, None, None)
    atoms = _atoms()
    print(json.dumps({"model": "mean predictor", "split": split, "n_train": len(y_tr),
                      "n_test": len(y_te), "mae": round(float(np.abs(y_te - y_tr.mean()).mean()), 4)}),
          flush=True)
    m_tr, m_te = descriptors(s_tr, atoms, "mean"), descriptors(s_te, atoms, "mean")
    lin = LinearPrior.fit(s_tr, m_tr[:, 0], y_tr)
    print(json.dumps({"model": "linear prior (energy + fractions)",
                      "mae": round(float(np.abs(lin.predict(s_te, m_te) - y_te).mean()), 4)}),
          flush=True)
    print(json.dumps(score("kernel prior, previous default (mean pooling, last block)",
                           s_tr, m_tr, y_tr, s_te, m_te, y_te, blocks=("features",),
                           lengthscale=1.4, composition_scale=0.45, ridge=0.01)), flush=True)
    t0 = time.process_time()
    d_tr, d_te = descriptors(s_tr, atoms, "site"), descriptors(s_te, atoms, "site")
    pool_s = time.process_time() - t0
    out = score("kernel prior, shipped default (site pooling, blocks 0-3)",
                s_tr, d_tr, y_tr, s_te, d_te, y_te)
    print(json.dumps({**out, "site_pooling_cpu_s": round(pool_s, 1)}), flush=True)


def grid() -> None:
    from surrogates.kernel_prior import KernelPrior

    s_tr, y_tr, s_te, y_te = splits("tune", None, None)
    atoms = _atoms()
    for pooling, layers in [("mean", None), ("site", (4,)), ("site", (3,)), ("site", (2,)),
                            ("site", (1,)), ("site", (0,)), ("site", (0, 1)),
                            ("site", (0, 1, 2)), ("site", (0, 1, 2, 3))]:
        d_tr = descriptors(s_tr, atoms, pooling, layers)
        d_te = descriptors(s_te, atoms, pooling, layers)
        for ell in (1.0, 1.4, 2.0):
            for w in (0.45, 0.6, 0.9):  # MAE only (one fit; coverage needs five more)
                t0 = time.process_time()
                head = KernelPrior.fit(s_tr, d_tr, y_tr, blocks=("features",), lengthscale=ell,
                                       composition_scale=w)
                mae = float(np.abs(head.predict(s_te, d_te) - y_te).mean())
                print(json.dumps({"pooling": pooling, "layers": layers, "lengthscale": ell,
                                  "composition_scale": w, "mae": round(mae, 4),
                                  "cpu_s": round(time.process_time() - t0, 1), **machine()}),
                      flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["features", "site-cache", "grid", "compare"])
    ap.add_argument("--split", choices=["tune", "heldout"], default="tune")
    args = ap.parse_args()
    torch.set_num_threads(1)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.command == "features":
        compute_features(log)
    elif args.command == "site-cache":  # from an existing per-atom cache
        write_site_cache()
    elif args.command == "grid":
        grid()
    else:
        compare(args.split)


if __name__ == "__main__":
    main()
