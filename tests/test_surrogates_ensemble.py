"""Deep ensembles: training, calibrated tables, multi-task NaN labels, save/load, fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from surrogates import Ensemble, EnsembleConfig, PredictionTable, coverage, train_ensemble

A_SITES = ["Sr", "Ba", "Ca", "La", "K", "Na"]
B_SITES = ["Ti", "Zr", "Nb", "Mn", "Fe", "V"]


def toy_set(n: int, seed: int = 0) -> tuple[list[Structure], np.ndarray]:
    """Cubic ABO3 cells with a smooth synthetic target (lattice constant and species)."""
    rng = np.random.default_rng(seed)
    structures, y = [], []
    for _ in range(n):
        a, b = rng.choice(A_SITES), rng.choice(B_SITES)
        lat = rng.uniform(3.7, 4.3)
        structures.append(Structure(Lattice.cubic(lat), [a, b, "O", "O", "O"],
                                    [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]))
        y.append(0.5 * (lat - 4.0) + 0.1 * A_SITES.index(a) - 0.05 * B_SITES.index(b))
    return structures, np.array(y)


TINY = dict(hidden=8, layers=1, epochs=3, batch_size=16, workers=1, cutoff=6.0)


def test_train_predict_table_shapes_calibration_and_coverage() -> None:
    s, y = toy_set(60)
    ens = train_ensemble(s, y, EnsembleConfig(members=3, **TINY))
    table = ens.predict(s[:10])
    assert table.values.shape == (3, 10, 1)
    assert table.outputs == ("e_form",)
    assert np.all(table.std >= 0) and ens.inflation[0] > 0
    # the calibrated interval covers ~90 % of the validation split it was fitted on
    assert 0.7 <= ens.metrics["val_coverage_90"][0] <= 1.0
    lo, hi = table.interval(0.9)
    assert np.all(lo <= table.mean[:, 0]) and np.all(hi >= table.mean[:, 0])
    assert 0.0 <= coverage(table, y[:10]) <= 1.0


def test_members_differ_and_training_is_reproducible() -> None:
    s, y = toy_set(40)
    cfg = EnsembleConfig(members=2, **TINY)
    a = train_ensemble(s, y, cfg).predict(s[:5]).values
    b = train_ensemble(s, y, cfg).predict(s[:5]).values
    assert np.array_equal(a, b)  # same seed, same ensemble
    assert not np.allclose(a[0], a[1])  # different seeds and bootstraps per member


@pytest.mark.parametrize("epochs", [1, 10, 19])
def test_very_short_training_runs_do_not_crash(epochs: int) -> None:
    """A campaign's first fine-tune can have ~10 optimiser steps in all (one batch per epoch);
    a one-cycle schedule with a 10 % warm-up divided by zero there."""
    s, y = toy_set(30)
    cfg = EnsembleConfig(members=1, **{**TINY, "epochs": epochs, "batch_size": 256})
    table = train_ensemble(s, y, cfg).predict(s[:4])
    assert np.all(np.isfinite(table.values))


def test_save_load_gives_identical_predictions() -> None:
    s, y = toy_set(40)
    ens = train_ensemble(s, {"e_form": y, "yield": np.where(np.arange(40) % 3 == 0, 0.5, np.nan)},
                         EnsembleConfig(members=2, architecture="megnet", **TINY))
    blob = ens.to_bytes()
    loaded = Ensemble.from_bytes(blob)
    a, b = ens.predict(s), loaded.predict(s)
    assert np.array_equal(a.values, b.values)
    assert np.array_equal(a.std, b.std)
    assert loaded.outputs == ("e_form", "yield")
    assert loaded.to_bytes() == blob or np.array_equal(Ensemble.from_bytes(loaded.to_bytes()).predict(s).values, a.values)
    with pytest.raises(ValueError, match="not a saved"):
        Ensemble.from_bytes(b"garbage")


def test_fine_tune_moves_the_yield_head_towards_campaign_yields() -> None:
    s, y = toy_set(40)
    targets = {"e_form": y, "yield": np.full(40, np.nan)}
    ens = train_ensemble(s, targets, EnsembleConfig(members=2, **TINY))
    made = s[:8]
    truth = np.linspace(0.1, 0.9, 8)
    before = np.abs(ens.predict(made).mean[:, 1] - truth).mean()
    tuned = ens.fine_tune(made, {"yield": truth}, epochs=40, lr=1e-2, seed=1)
    after = np.abs(tuned.predict(made).mean[:, 1] - truth).mean()
    assert after < before
    assert tuned.metrics["fine_tuned_on"] == 8
    # the original ensemble is untouched, and formation energies barely move
    assert np.array_equal(ens.predict(made).values, ens.predict(made).values)
    e_shift = np.abs(tuned.predict(s).mean[:, 0] - ens.predict(s).mean[:, 0]).mean()
    assert e_shift < np.abs(y - y.mean()).mean()
    with pytest.raises(ValueError, match="unknown outputs"):
        ens.fine_tune(made, {"band_gap": truth})


def test_bad_inputs_are_named() -> None:
    s, y = toy_set(10)
    with pytest.raises(ValueError, match="target 'e_form' has 9 values for 10 structures"):
        train_ensemble(s, y[:9], EnsembleConfig(members=1, **TINY))
    with pytest.raises(ValueError, match="unknown architecture"):
        train_ensemble(s, y, EnsembleConfig(members=1, architecture="transformer", **{k: v for k, v in TINY.items()}))
    with pytest.raises(ValueError, match="members must be"):
        EnsembleConfig(members=0)
    with pytest.raises(KeyError, match="no output 'yield'"):
        PredictionTable(np.zeros((2, 3, 1)), ("e_form",), np.ones(1)).column("yield")


def test_parallel_training_matches_inline_training() -> None:
    """Members trained in spawned worker processes equal the same members trained inline."""
    s, y = toy_set(30)
    cfg = dict(TINY, epochs=2)
    par = train_ensemble(s, y, EnsembleConfig(members=2, **{**cfg, "workers": 2}))
    seq = train_ensemble(s, y, EnsembleConfig(members=2, **cfg))
    assert np.allclose(par.predict(s).values, seq.predict(s).values, atol=1e-5)


def test_norm_statistics_follow_the_weights_after_training() -> None:
    """Precise BN: the running statistics a member ships with are recomputed from its final
    weights, so eval mode on the training data equals batch statistics over the same data.
    With lagging momentum averages, one-composition polymorph sets read 2-34 std units in
    eval mode against 0.2-0.3 with batch statistics and early stopping kept epoch ~4."""
    import torch

    from surrogates.ensemble import _refresh_norm_stats
    from surrogates.graphs import build_graph, collate
    from surrogates.models import build_model

    s, _ = toy_set(24)
    graphs = [build_graph(x, 6.0, 12) for x in s]
    torch.manual_seed(0)
    model = build_model("cgcnn", 1, 8, 2, 6.0)
    for m in model.modules():  # stale statistics, as after a fast-moving high-LR phase
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.fill_(3.0)
            m.running_var.fill_(0.01)
    batch = collate(graphs)
    _refresh_norm_stats(model, graphs, np.arange(len(graphs)), batch_size=64, seed=0)
    assert not model.training
    with torch.no_grad():
        eval_out = model(batch)
        model.train()
        train_out = model(batch)
    # unbiased (running) vs biased (batch) variance over thousands of rows: ~1e-3 apart
    assert torch.allclose(eval_out, train_out, atol=2e-2)


@pytest.mark.parametrize("arch", ["schnet", "angular", "schnet+cgcnn"])
def test_new_architectures_train_save_and_load(arch: str) -> None:
    s, y = toy_set(30)
    ens = train_ensemble(s, y, EnsembleConfig(members=2, architecture=arch, **TINY))
    assert ens.cache.angular == (arch == "angular")
    assert [type(m).__name__ for m in ens.members] == (
        ["SchNet", "CGCNN"] if arch == "schnet+cgcnn" else [type(ens.members[0]).__name__] * 2)
    table = ens.predict(s[:6], use_cache=False)
    assert table.values.shape == (2, 6, 1) and np.isfinite(table.values).all()
    again = Ensemble.from_bytes(ens.to_bytes()).predict(s[:6])
    np.testing.assert_allclose(again.values, table.values, rtol=1e-5, atol=1e-6)


def test_light_large_cell_config_trains_saves_loads_and_rejects_unknown_activations() -> None:
    """The light CGCNN (cheap edge activations, fewer neighbours) is a config option: its
    members carry the activation, it survives save/load, and configs saved before the option
    existed load with the published activation."""
    from surrogates.ensemble import LIGHT_LARGE_CELLS

    s, y = toy_set(30)
    light = {k: v for k, v in LIGHT_LARGE_CELLS.items() if k != "hidden"}  # tiny hidden here
    cfg = EnsembleConfig(members=2, **{**TINY, **light})
    ens = train_ensemble(s, y, cfg)
    assert {c.edge_activation for m in ens.members for c in m.convs} == {"hard"}
    table = ens.predict(s[:6], use_cache=False)
    again = Ensemble.from_bytes(ens.to_bytes())
    assert again.config.edge_activation == "hard" and again.config.max_neighbors == 8
    np.testing.assert_allclose(again.predict(s[:6]).values, table.values, rtol=1e-5, atol=1e-6)
    old = {k: v for k, v in EnsembleConfig().to_dict().items() if k != "edge_activation"}
    assert EnsembleConfig.from_dict(old).edge_activation == "softplus"
    with pytest.raises(ValueError, match="edge_activation"):
        EnsembleConfig(edge_activation="gelu")


def test_predictions_do_not_depend_on_the_edge_capped_batching() -> None:
    """Large cells are predicted in batches capped by edges (memory-bound inference); the
    table must equal one-batch prediction, and every graph lands in exactly one batch."""
    from surrogates.ensemble import _edge_capped_batches

    s, y = toy_set(30)
    ens = train_ensemble(s, y, EnsembleConfig(members=2, **TINY))
    graphs = ens.graphs(s)
    whole = ens.predict_graphs(graphs, batch_size=len(graphs), max_edges=10**9).values
    edges = [int(g.src.shape[0]) for g in graphs]
    cap = 3 * max(edges)
    slices = _edge_capped_batches(graphs, 128, cap)
    assert [i for a, b in slices for i in range(a, b)] == list(range(len(graphs)))
    assert all(sum(edges[a:b]) <= cap for a, b in slices) and len(slices) > 1
    capped = ens.predict_graphs(graphs, max_edges=cap).values
    np.testing.assert_allclose(capped, whole, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="max_edges must be >= 1"):
        ens.predict_graphs(graphs, max_edges=0)
