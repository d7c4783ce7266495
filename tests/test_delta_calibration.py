"""The kernel ``DeltaEnsemble``'s combined spread: weights fitted on held-back rows
(``fit_spread``), applied to the member table (``_widen``), saved, and old checkpoints (no
weights) keep the plain quadrature sum. Real SevenNet-0 features of real rock-salt cells where
a trained model is needed; the fitting rules are checked on synthetic errors of known law."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from surrogates.ensemble import EnsembleConfig, train_ensemble, validation_split
from surrogates.pretrained import (
    DEFAULT_SPREAD,
    DELTA_MAGIC,
    SPREADS,
    Z90,
    SpreadWeights,
    _widen,
    fit_spread,
)


def synthetic(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Held-back rows whose errors follow N(0, member_std): the members' calibration already
    holds the whole error, as when the members learn the out-of-fold prior's residual."""
    rng = np.random.default_rng(seed)
    member = rng.uniform(0.05, 0.2, n)
    prior = rng.uniform(0.05, 0.15, n)
    return {"err": rng.normal(0.0, member), "member_std": member, "prior_std": prior,
            "prior_std_all": rng.uniform(0.05, 0.15, 4 * n)}


def test_fixed_rules_need_no_fit() -> None:
    rows = synthetic(50)
    assert fit_spread("quadrature", **rows) == SpreadWeights(1.0, 1.0, 0.0)
    assert fit_spread("members", **rows) == SpreadWeights(1.0, 0.0, 0.0)
    w = fit_spread("excess", **rows)
    assert (w.member, w.prior) == (1.0, 1.0)
    assert w.floor == pytest.approx(np.mean(rows["prior_std_all"] ** 2))
    with pytest.raises(ValueError, match="unknown spread"):
        fit_spread("sum", **rows)


def test_excess_keeps_the_members_near_and_widens_far() -> None:
    w = SpreadWeights(1.0, 1.0, 0.01)
    member = np.array([0.1, 0.1, 0.1])
    prior = np.array([0.05, 0.1, 0.5])  # inside, at and far beyond the training-row spread
    out = w.combine(member, prior)
    assert out[0] == pytest.approx(0.1) and out[1] == pytest.approx(0.1)
    assert out[2] == pytest.approx(np.hypot(0.1, np.sqrt(0.25 - 0.01)))
    assert np.allclose(w.prior_term(prior), [0.0, 0.0, np.sqrt(0.24)])
    # the default weights are the plain quadrature sum
    assert np.allclose(SpreadWeights().combine(member, prior), np.hypot(member, prior))


@pytest.mark.parametrize("method", ["scaled", "excess-scaled"])
def test_scaled_rules_cover_90_percent_of_the_held_back_rows(method: str) -> None:
    rows = synthetic(200, seed=1)
    w = fit_spread(method, **rows)
    std = w.combine(rows["member_std"], rows["prior_std"])
    assert np.mean(np.abs(rows["err"]) <= Z90 * std) == pytest.approx(0.9, abs=0.01)
    assert w.member == w.prior < 1.0  # the plain sum counted the prior's error twice
    # too few rows to fit a factor on: the unscaled rule
    few = {k: v[:1] for k, v in rows.items()}
    assert fit_spread(method, **few).member == 1.0


def test_nll_weights_recover_the_error_law() -> None:
    rng = np.random.default_rng(2)
    n = 4000
    member, prior = rng.uniform(0.05, 0.3, n), rng.uniform(0.05, 0.3, n)
    err = rng.normal(0.0, np.sqrt(0.5 * member ** 2 + 2.0 * prior ** 2))
    w = fit_spread("nll", err, member, prior, prior)
    assert w.member == pytest.approx(0.5, rel=0.15) and w.prior == pytest.approx(2.0, rel=0.1)
    assert w.floor == 0.0


def test_map_weights_keep_both_terms_on_few_rows_and_follow_the_data_on_many() -> None:
    rng = np.random.default_rng(6)
    n = 4000
    member, prior = rng.uniform(0.05, 0.3, n), rng.uniform(0.05, 0.3, n)
    err = rng.normal(0.0, np.sqrt(0.5 * member ** 2 + 2.0 * prior ** 2))
    many = fit_spread("map", err, member, prior, prior)
    assert many.member == pytest.approx(0.5, rel=0.15) and many.prior == pytest.approx(2.0, rel=0.1)
    # 6 held-back rows (a 10 % split of 64 labels): the likelihood alone zeroes one term,
    # the prior keeps both near what the rows say
    few = fit_spread("map", err[:6], member[:6], prior[:6], prior)
    assert fit_spread("nll", err[:6], member[:6], prior[:6], prior).member < 1e-3
    assert 0.1 < few.member < 2.0 and 0.5 < few.prior < 5.0
    # no errors to fit on: the prior's median, (1/2, 1/2)
    none = fit_spread("map", err[:1], member[:1], prior[:1], prior)
    assert (none.member, none.prior, none.floor) == (0.5, 0.5, 0.0)


def test_widen_reaches_the_target_and_keeps_the_mean() -> None:
    rng = np.random.default_rng(3)
    column = rng.normal(size=(5, 7))
    column[:, 0] = 0.25  # members that agree exactly
    target = rng.uniform(0.1, 1.0, 7)
    out = _widen(column, target, inflation=2.0)
    assert np.allclose(out.mean(axis=0), column.mean(axis=0))
    assert np.allclose(2.0 * out.std(axis=0, ddof=1), target)
    assert np.array_equal(_widen(column[:1], target, 2.0), column[:1])  # one member: as is


def test_validation_split_is_train_ensembles() -> None:
    cells = [rocksalt(a) for a in np.linspace(5.0, 6.2, 12)]
    cfg = EnsembleConfig(members=2, hidden=8, layers=1, epochs=1, batch_size=8, workers=1,
                         cutoff=6.0, seed=4, aux_targets=())
    val, fit = validation_split(len(cells), cfg)
    assert len(val) == 1 and sorted(np.concatenate([val, fit]).tolist()) == list(range(12))
    assert np.array_equal(val, validation_split(12, cfg)[0])  # a function of n and the seed
    ens = train_ensemble(cells, np.linspace(-1, 1, 12), cfg)
    assert ens.metrics["n_val"] == len(val) and ens.metrics["n_train"] == len(fit)


def rocksalt(a: float, cation: str = "Na", anion: str = "Cl") -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()


PAIRS = [("Na", "Cl"), ("K", "Cl"), ("Li", "F"), ("Na", "F"), ("K", "Br"), ("Mg", "O"),
         ("Ca", "O"), ("Li", "Cl"), ("Rb", "Cl"), ("Na", "Br")]


@pytest.fixture(scope="module")
def trained():
    """A kernel DeltaEnsemble trained with the default combined spread, on real features."""
    pytest.importorskip("sevenn")
    from surrogates.pretrained import train_delta_ensemble
    from surrogates.prior_features import PotentialFeatures

    rng = np.random.default_rng(5)
    cells = [rocksalt(float(rng.uniform(4.2, 6.4)), c, x) for c, x in PAIRS for _ in range(2)]
    feats = PotentialFeatures(batch_size=4, pooling="site")
    y = 0.7 * feats.energies(cells) + 1.0 + 0.05 * rng.normal(size=len(cells))
    cfg = EnsembleConfig(members=3, hidden=8, layers=1, epochs=3, batch_size=8, workers=1,
                         cutoff=6.0, val_fraction=0.25)
    model = train_delta_ensemble(cells, y, cfg, potential=feats, prior="kernel", folds=4,
                                 combine_spread=True)
    return model, cells, y, feats, cfg


def test_default_spread_is_fitted_on_the_validation_rows(trained) -> None:
    model, cells, y, feats, cfg = trained
    m = model.metrics
    assert m["spread"] == DEFAULT_SPREAD and m["spread_n_fit"] == len(validation_split(20, cfg)[0])
    rows = model.spread_fit_rows
    fitted = fit_spread(DEFAULT_SPREAD, **rows)
    assert (m["spread_member"], m["spread_prior"]) == (fitted.member, fitted.prior)
    # the members' weight lives in their inflation, the prior's in ``spread``
    assert model.spread == SpreadWeights(1.0, fitted.prior, fitted.floor)
    assert model.inflation[0] == pytest.approx(m["inflation"][0] * np.sqrt(fitted.member))
    far = [rocksalt(5.0, "Cs", "I"), rocksalt(4.0, "Be", "S")]
    table = model.predict(cells + far)
    members = model.ensemble.predict(cells + far)
    own = members.raw_std[:, 0] * m["inflation"][0]  # the members' own calibrated spread
    gp = model.prior.std(cells + far, feats.descriptors(cells + far))
    assert np.allclose(table.std[:, 0], fitted.combine(own, gp))
    # what acquisition reads: the members' (weighted) spread and the prior's part add up
    assert np.allclose(table.std[:, 0], np.hypot(members.std[:, 0],
                                                 model.prior_std(cells + far)))
    assert np.allclose(table.mean[:, 0], members.mean[:, 0] + model.prior_predict(cells + far))
    assert (model.prior_std(far) > 0).all()  # unseen elements: the GP widens the interval


def test_checkpoints_keep_their_spread_and_old_ones_the_quadrature_sum(trained) -> None:
    from surrogates.pretrained import DeltaEnsemble

    model, cells, *_ = trained
    again = DeltaEnsemble.from_bytes(model.to_bytes())
    assert again.spread == model.spread and again.metrics["spread"] == DEFAULT_SPREAD
    assert np.array_equal(again.predict(cells).values, model.predict(cells).values)
    tuned = model.fine_tune(cells[:4], {"e_form": np.zeros(4)}, epochs=1)
    assert tuned.spread == model.spread and tuned.combine_spread
    # a file saved before the weights existed: its meta has no "spread" -> plain quadrature
    with np.load(io.BytesIO(model.to_bytes()[len(DELTA_MAGIC):])) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["spread"], meta["spread_metrics"]
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    old = DeltaEnsemble.from_bytes(DELTA_MAGIC + buf.getvalue())
    assert old.spread == SpreadWeights(1.0, 1.0, 0.0)
    own = model.ensemble.predict(cells).std[:, 0]
    assert np.allclose(old.predict(cells).std[:, 0], np.hypot(own, model.prior.std(
        cells, model.potential.descriptors(cells))))


def test_spread_choice_is_checked_and_quadrature_stays_available(trained) -> None:
    from surrogates.pretrained import train_delta_ensemble

    model, cells, y, feats, cfg = trained
    with pytest.raises(ValueError, match="combine_spread"):
        train_delta_ensemble(cells, y, cfg, potential=feats, prior="kernel", folds=4,
                             combine_spread="sum")
    quad = train_delta_ensemble(cells, y, cfg, potential=feats, prior="kernel", folds=4,
                                combine_spread="quadrature")
    assert quad.spread == SpreadWeights() and quad.metrics["spread"] == "quadrature"
    plain = train_delta_ensemble(cells, y, cfg, potential=feats, prior="kernel", folds=4)
    assert not plain.combine_spread and "spread" not in plain.metrics
    assert set(SPREADS) >= {"quadrature", "members", DEFAULT_SPREAD}
