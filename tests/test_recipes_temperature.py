"""Heating temperatures from the literature: the shipped tree ensembles (recipes/temperature_model.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recipes import literature_model
from recipes.literature import LiteratureModel
from recipes.temperature_model import FEATURES, TreeEnsemble, load_models, precursor_kind


def test_shipped_ensembles_load_and_give_chemists_temperatures() -> None:
    """A user relies on a calcination below the firing (sintering) step, and on the usual
    ranges: BaTiO3 from BaCO3 + TiO2 calcines around 1000-1200 °C, LiFePO4 from Li2CO3 +
    FeC2O4 + NH4H2PO4 well below 800 °C (carbon-coated, reducing, low-temperature route)."""
    models = load_models()
    assert set(models) == {"calcination", "firing"}
    lit = literature_model()
    bto = lit.temperature("BaTiO3", ("BaCO3", "TiO2"))
    assert bto is not None and bto.kind == "calcination" and bto.method == "tree ensemble"
    assert 900 <= bto.temperature_c <= 1250
    fired = lit.temperature("BaTiO3", ("BaCO3", "TiO2"), "firing")
    assert fired is not None and fired.temperature_c >= bto.temperature_c
    lfp = lit.temperature("LiFePO4", ("Li2CO3", "FeC2O4", "NH4H2PO4"))
    assert lfp is not None and 450 <= lfp.temperature_c <= 800
    with pytest.raises(ValueError, match="unknown temperature kind"):
        lit.temperature("BaTiO3", ("BaCO3", "TiO2"), "sintering")


def test_tree_ensemble_json_matches_scikit_learn_including_missing_values() -> None:
    sklearn = pytest.importorskip("sklearn.ensemble")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    x[rng.random(x.shape) < 0.15] = np.nan
    y = np.nansum(x, axis=1) * 100 + 900
    model = sklearn.HistGradientBoostingRegressor(loss="absolute_error", max_iter=30, random_state=0).fit(x, y)
    ours = TreeEnsemble(TreeEnsemble.from_sklearn(model, ["a", "b", "c", "d"]).to_doc())  # JSON round trip
    np.testing.assert_allclose([ours.predict(r) for r in x], model.predict(x), atol=1e-6)


def test_features_exclude_the_target_itself_and_fall_back_without_trees() -> None:
    """The ensemble must never read a target's own papers (held-out honesty), and a model
    without the shipped trees still answers with its neighbour median."""
    rows = [("BaTiO3", ("BaCO3", "TiO2"), 1300.0, 4.0)] + [
        (f"Ba{x}Sr{1 - x:.2f}TiO3".replace("Sr0.00", ""), ("BaCO3", "SrCO3", "TiO2"), 1100.0, 4.0)
        for x in (0.1, 0.2, 0.3, 0.4, 0.5)
    ]
    lit = LiteratureModel(rows, calcination=[900.0, 1000.0, 1000.0, 1000.0, 1000.0, 1000.0])
    guess = lit.temperature("BaTiO3", ("BaCO3", "TiO2"))
    assert guess is not None and guess.method == "neighbour median" and guess.temperature_c == 1000.0
    row = lit.features("calcination").row("BaTiO3", ("BaCO3", "TiO2"))
    assert len(row) == len(FEATURES)
    assert row[FEATURES.index("knn_median")] == 1000.0  # its own 900 °C is not among the neighbours
    assert math.isnan(row[FEATURES.index("same_set_nearest_temp")])  # no neighbour used BaCO3 + TiO2 alone


def test_precursor_families() -> None:
    assert [precursor_kind(f) for f in ("BaCO3", "LiNO3", "LiOH", "NH4H2PO4", "TiO2", "Fe", "LiF", "FeC2O4")] == [
        "carbonate", "nitrate", "hydroxide", "ammonium", "oxide", "metal", "halide", "organic"]
