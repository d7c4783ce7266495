"""The kernel-ridge prior on pooled potential features (no potential needed: synthetic rows)."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from surrogates.kernel_prior import KernelPrior, out_of_fold
from surrogates.pretrained import LinearPrior

WIDTH = 6


def data(n: int, seed: int) -> tuple[list[Structure], np.ndarray, np.ndarray]:
    """Rock-salt cells; descriptor rows [energy, mean (6), std (6), atomic-energy stats (3)];
    the target is linear in the energy plus a non-linear function of the mean block."""
    rng = np.random.default_rng(seed)
    pairs = [("Na", "Cl"), ("K", "Cl"), ("Li", "F"), ("Mg", "O")]
    structures = [Structure(Lattice.cubic(4.0), list(pairs[i % 4]), [[0, 0, 0], [.5, .5, .5]])
                  for i in range(n)]
    desc = rng.normal(size=(n, 4 + 2 * WIDTH))
    y = 0.5 * desc[:, 0] + np.sin(2 * desc[:, 1]) * desc[:, 2] + 0.3 * desc[:, 3] ** 2
    return structures, desc, y


def test_kernel_prior_learns_what_the_linear_prior_cannot() -> None:
    s, d, y = data(400, 0)
    s2, d2, y2 = data(200, 1)
    lin = LinearPrior.fit(s, d[:, 0], y)
    head = KernelPrior.fit(s, d, y, blocks=("mean",), lengthscale=0.5, ridge=1e-2,
                           composition_scale=None)
    mae_lin = np.abs(lin.predict(s2, d2) - y2).mean()
    mae_ker = np.abs(head.predict(s2, d2) - y2).mean()
    assert mae_ker < 0.7 * mae_lin
    # in-sample fits far better than held-out rows: why the ensemble gets out-of-fold residuals
    oof = out_of_fold(s, d, y, folds=4, seed=0, blocks=("mean",), lengthscale=0.5, ridge=1e-2,
                      composition_scale=None)
    assert np.abs(head.predict(s, d) - y).mean() < 0.5 * np.abs(oof - y).mean()
    assert np.abs(oof - y).mean() < mae_lin


def test_kernel_prior_rejects_bad_settings() -> None:
    s, d, y = data(20, 2)
    with pytest.raises(ValueError, match="unknown descriptor blocks"):
        KernelPrior.fit(s, d, y, blocks=("nodes",))
    with pytest.raises(ValueError, match="not potential features"):
        KernelPrior.fit(s, d[:, :5], y, blocks=("mean",))
    with pytest.raises(ValueError, match="no features"):
        KernelPrior.fit(s, d[:, :1], y)
    with pytest.raises(ValueError, match="lengthscale"):
        KernelPrior.fit(s, d, y, ridge=0.0)
    with pytest.raises(ValueError, match="composition_scale"):
        KernelPrior.fit(s, d, y, composition_scale=0.0)
    with pytest.raises(ValueError, match="labels"):
        KernelPrior.fit(s, d, y[:-1])
    with pytest.raises(ValueError, match="folds"):
        out_of_fold(s, d, y, folds=1)


def test_calibrated_spread_covers_new_rows_and_grows_away_from_the_data() -> None:
    s, d, y = data(400, 3)
    s2, d2, y2 = data(300, 4)
    head, oof = KernelPrior.fit_calibrated(s, d, y, folds=4, seed=0, blocks=("mean",),
                                           lengthscale=0.5, composition_scale=None)
    assert oof.shape == y.shape and head.inflation > 0
    std = head.std(s2, d2)
    inside = np.abs(head.predict(s2, d2) - y2) <= 1.645 * std
    assert 0.8 <= inside.mean() <= 0.98
    far = d2.copy()
    far[:, 1:1 + WIDTH] += 6.0  # node features unlike any training row
    assert np.median(head.std(s2, far)) > 2 * np.median(std)


CATIONS = ["Sr", "Ti", "Ba", "Zr", "Ca", "Nb", "La", "Al"]
ANIONS = ["O", "S", "N"]


def perovskite(a_el: str, b_el: str, x_el: str = "O", a: float = 3.9) -> Structure:
    """Cubic ABX3: A at the corner, B at the body centre, X on the face centres."""
    return Structure(Lattice.cubic(a), [a_el, b_el, x_el, x_el, x_el],
                     [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])


def site_data(pairs, emb: np.ndarray, seed: int):
    """Synthetic 'potential' rows for ABO3 cells: each cation has a fixed feature vector; the
    target depends on which cation is on which site (not symmetric under A↔B)."""
    rng = np.random.default_rng(seed)
    s, site, mean, y = [], [], [], []
    for ia, ib, ix in pairs:
        s.append(perovskite(CATIONS[ia], CATIONS[ib], ANIONS[ix]))
        ea, eb, ex = emb[ia], emb[ib], np.full(WIDTH, 0.5 * ix)
        energy = -5.0 + 0.1 * (ia + ib)
        site.append(np.concatenate([[energy], ea, eb, ex, np.zeros(WIDTH)]))
        atoms = np.stack([ea, eb, ex, ex, ex])
        mean.append(np.concatenate([[energy], atoms.mean(0), atoms.std(0), [energy, 0.0, 0.0]]))
        y.append(np.sin(2 * ea[0]) + 0.5 * eb[1] ** 2 - eb[0] + 0.3 * ix
                 + 0.02 * rng.normal())
    return s, np.array(site), np.array(mean), np.array(y)


def test_site_pooled_rows_learn_which_cation_sits_where() -> None:
    """The default kernel on site-pooled rows separates SrTiO3 from 'TiSrO3' (same
    composition, same mean over atoms); on mean-pooled rows the two are one point."""
    emb = np.random.default_rng(5).normal(size=(len(CATIONS), WIDTH))
    pairs = [(i, j, x) for i in range(len(CATIONS)) for j in range(len(CATIONS))
             for x in range(len(ANIONS)) if i != j]
    order = np.random.default_rng(6).permutation(len(pairs))
    train = [pairs[k] for k in order[:108]]
    test = [pairs[k] for k in order[108:]]
    s, site, mean, y = site_data(train, emb, 0)
    s2, site2, mean2, y2 = site_data(test, emb, 1)
    head = KernelPrior.fit(s, site, y)  # defaults: every feature column, composition factor
    mae_site = np.abs(head.predict(s2, site2) - y2).mean()
    mae_mean = np.abs(KernelPrior.fit(s, mean, y).predict(s2, mean2) - y2).mean()
    mae_const = np.abs(y2 - y.mean()).mean()
    assert mae_site < 0.6 * mae_mean
    assert mae_site < 0.4 * mae_const
    # the calibrated 90 % interval of the default kernel covers about 90 % of new cells
    head, _ = KernelPrior.fit_calibrated(s, site, y, folds=4, seed=0)
    inside = np.abs(head.predict(s2, site2) - y2) <= 1.645 * head.std(s2, site2)
    assert 0.75 <= inside.mean() <= 1.0


@pytest.mark.parametrize("composition_scale", [0.6, None])
def test_kernel_prior_state_round_trips_bit_identically(composition_scale) -> None:
    s, d, y = data(60, 3)
    s2, d2, _ = data(30, 4)
    head, _ = KernelPrior.fit_calibrated(s, d, y, folds=3, seed=1, blocks=("mean",),
                                         composition_scale=composition_scale)
    # through npz without pickle, as a campaign checkpoint stores it
    import io

    buf = io.BytesIO()
    np.savez(buf, **head.state())
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=False) as z:
        again = KernelPrior.from_state({k: z[k] for k in z.files})
    assert again.composition_scale == composition_scale and again.inflation == head.inflation
    assert np.array_equal(again.predict(s2, d2), head.predict(s2, d2))
    assert np.array_equal(again.std(s2, d2), head.std(s2, d2))
    with pytest.raises(ValueError, match="missing"):
        KernelPrior.from_state({k: v for k, v in head.state().items() if k != "kp_alpha"})
