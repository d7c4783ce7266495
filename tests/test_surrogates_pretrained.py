"""The optional pretrained prior (SevenNet-0): linear prior + residual ensemble, relaxation."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

pytest.importorskip("sevenn")

from surrogates.ensemble import EnsembleConfig  # noqa: E402
from surrogates.pretrained import (  # noqa: E402
    LinearPrior,
    PretrainedEnergy,
    train_delta_ensemble,
)


@pytest.fixture(scope="module")
def potential() -> PretrainedEnergy:
    return PretrainedEnergy()


@pytest.fixture(scope="module")
def features():
    from surrogates.prior_features import PotentialFeatures

    return PotentialFeatures(batch_size=2)


def rocksalt(a: float, cation: str = "Na", anion: str = "Cl") -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()


def test_relaxation_moves_a_strained_cell_towards_equilibrium(potential: PretrainedEnergy) -> None:
    strained = rocksalt(6.3)  # NaCl: a = 5.64 Å
    e0 = potential.energies([strained])[0]
    relaxed, e1, steps = potential.relax(strained, fmax=0.05, steps=150)
    a = (relaxed.volume * 4) ** (1 / 3)  # conventional cubic cell from the primitive one
    assert e1 < e0 and steps >= 1
    assert 5.4 < a < 5.95


def test_delta_ensemble_predicts_prior_plus_residual(potential: PretrainedEnergy) -> None:
    rng = np.random.default_rng(0)
    pairs = [("Na", "Cl"), ("K", "Cl"), ("Li", "F"), ("Na", "F"), ("K", "Br"), ("Mg", "O")]
    structures = [rocksalt(float(rng.uniform(4.2, 6.4)), c, x) for c, x in pairs for _ in range(2)]
    e = potential.energies(structures)
    y = 0.7 * e + 1.0 + 0.01 * rng.normal(size=len(e))
    prior = LinearPrior.fit(structures, e, y)
    assert np.abs(prior.predict(structures, e) - y).mean() < 0.05
    model = train_delta_ensemble(structures, y, EnsembleConfig(
        members=2, hidden=8, layers=1, epochs=2, batch_size=8, workers=1, cutoff=6.0),
        potential=potential)
    table = model.predict(structures[:3])
    assert table.values.shape == (2, 3, 1)
    assert np.abs(table.mean[:, 0] - y[:3]).max() < 0.5
    from surrogates.pretrained import DeltaEnsemble

    again = DeltaEnsemble.from_bytes(model.to_bytes())  # the linear prior saves too
    assert isinstance(again.potential, PretrainedEnergy)
    assert np.array_equal(again.predict(structures[:3]).values, table.values)
    with pytest.raises(ValueError, match="labels for"):
        train_delta_ensemble(structures, y[:-1], potential=potential)


def test_potential_features_match_the_calculator_and_ignore_site_order(
        potential: PretrainedEnergy, features) -> None:
    from surrogates.prior_features import layout

    feats = features
    cells = [rocksalt(5.64), rocksalt(4.6, "Li", "F"), rocksalt(4.2, "Mg", "O")]
    rows = feats.compute(cells)
    parts = layout(128)
    assert rows.shape == (3, parts["atomic_energy"].stop)
    # the batched, force-free pass gives the calculator's energy per atom
    assert np.allclose(rows[:, 0], potential.energies(cells), atol=1e-4)
    assert np.allclose(rows[:, parts["atomic_energy"]][:, 0], rows[:, 0], atol=1e-4)
    swapped = Structure(cells[0].lattice, list(reversed(cells[0].species)),
                        list(reversed(cells[0].frac_coords)))
    again = feats.compute([swapped])[0]  # another site order, another cache key: recomputed
    assert np.allclose(again, rows[0], atol=1e-4)
    assert not np.allclose(rows[0, parts["mean"]], rows[1, parts["mean"]], atol=1e-2)


def test_kernel_delta_ensemble_trains_on_out_of_fold_residuals(features) -> None:
    from surrogates.kernel_prior import KernelPrior

    rng = np.random.default_rng(1)
    pairs = [("Na", "Cl"), ("K", "Cl"), ("Li", "F"), ("Na", "F"), ("K", "Br"), ("Mg", "O")]
    structures = [rocksalt(float(rng.uniform(4.2, 6.4)), c, x) for c, x in pairs for _ in range(2)]
    feats = features
    y = 0.7 * feats.energies(structures) + 1.0
    model = train_delta_ensemble(structures, y, EnsembleConfig(
        members=2, hidden=8, layers=1, epochs=2, batch_size=8, workers=1, cutoff=6.0),
        potential=feats, prior="kernel", folds=3, prior_options={"lengthscale": 1.0})
    assert isinstance(model.prior, KernelPrior)
    assert np.abs(model.prior_predict(structures) - y).mean() < 0.1
    assert model.predict(structures[:2]).values.shape == (2, 2, 1)
    with pytest.raises(ValueError, match="unknown prior"):
        train_delta_ensemble(structures, y, potential=feats, prior="gp")


def perovskite(a_el: str, b_el: str, x_el: str = "O", a: float = 3.95) -> Structure:
    """Cubic ABX3: A at the corner (12 X neighbours), B at the body centre (6)."""
    return Structure(Lattice.cubic(a), [a_el, b_el, x_el, x_el, x_el],
                     [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])


def test_site_groups_find_a_b_and_anions() -> None:
    from surrogates.prior_features import site_groups

    a, b, x = site_groups(perovskite("Sr", "Ti"))
    assert a.tolist() == [0] and b.tolist() == [1] and x.tolist() == [2, 3, 4]
    # the same cell listed in another order: the roles follow the atoms, not the row order
    cell = perovskite("Sr", "Ti")
    shuffled = Structure(cell.lattice, [cell.species[i] for i in (3, 1, 4, 0, 2)],
                         [cell.frac_coords[i] for i in (3, 1, 4, 0, 2)])
    a, b, x = site_groups(shuffled)
    assert a.tolist() == [3] and b.tolist() == [1] and sorted(x.tolist()) == [0, 2, 4]
    # one cation (rock salt): it is both groups; no anion (a metal): every atom in every group
    a, b, x = site_groups(rocksalt(4.2, "Mg", "O"))
    assert a.tolist() == b.tolist() == [0] and x.tolist() == [1]
    metal = Structure(Lattice.cubic(3.0), ["Cu", "Zn"], [[0, 0, 0], [.5, .5, .5]])
    assert all(g.tolist() == [0, 1] for g in site_groups(metal))


def test_site_pooled_features_tell_which_cation_is_where(features) -> None:
    from surrogates.prior_features import PotentialFeatures, site_layout

    site = PotentialFeatures(batch_size=2, pooling="site", layers=(0, 1))
    cells = [perovskite("Sr", "Ti"), perovskite("Ti", "Sr")]
    rows = site.compute(cells)
    parts = site_layout((0, 1))
    assert rows.shape == (2, 1 + 4 * 2 * 128)
    assert np.allclose(rows[:, 0], features.compute(cells)[:, 0], atol=1e-4)  # same energy
    # three symmetry-equivalent O atoms: no spread among the anions
    assert np.abs(rows[0, parts["1_X_std"]]).max() < 1e-3
    # swapping the cations between the sites changes the A-site block
    assert not np.allclose(rows[0, parts["0_A"]], rows[1, parts["0_A"]], atol=1e-2)
    # block 0 of the A-site in SrTiO3 ≈ block 0 of the A-site of another Sr perovskite
    other = site.compute([perovskite("Sr", "Zr", a=4.1)])[0]
    near = np.abs(rows[0, parts["0_A"]] - other[parts["0_A"]]).mean()
    far = np.abs(rows[0, parts["0_A"]] - rows[1, parts["0_A"]]).mean()
    assert near < 0.5 * far
    with pytest.raises(ValueError, match="pooling"):
        PotentialFeatures(pooling="max")
    with pytest.raises(ValueError, match="layers"):
        PotentialFeatures(pooling="site", layers=(5,))
