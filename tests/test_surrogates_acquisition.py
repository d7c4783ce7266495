"""Acquisition over members × candidates tables: valid distinct picks, pending never again,
sequential greedy qEI/qUCB equal to BoTorch's optimize_acqf_discrete, objectives."""

from __future__ import annotations

import typing
import warnings

import numpy as np
import pytest
import torch

from controller.config import AcquisitionSection
from surrogates import (
    OBJECTIVE_KINDS,
    STRATEGIES,
    MemberSampler,
    PredictionTable,
    StableAndMakeable,
    TableEnsembleModel,
    objective_for,
    objective_table,
    select_batch,
)


def table(n: int = 400, s: int = 5, seed: int = 0, spread: float = 0.3) -> PredictionTable:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(1, n, 1)) + spread * rng.normal(size=(s, n, 1))
    return PredictionTable(values, ("y",), np.ones(1))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("q", [1, 4, 12])
def test_strategies_return_q_valid_distinct_picks_never_pending(strategy: str, q: int) -> None:
    t = table()
    rng = np.random.default_rng(q)
    pending = set(rng.choice(400, 30, replace=False).tolist())
    exclude = set(rng.choice(400, 10, replace=False).tolist())
    picks = select_batch(t, strategy=strategy, q=q, pending=pending, exclude=exclude, seed=1)
    idx = [p.index for p in picks]
    assert len(idx) == q == len(set(idx))
    assert all(0 <= i < 400 for i in idx)
    assert not set(idx) & pending and not set(idx) & exclude
    assert all(np.isfinite(p.mean) and p.std >= 0 for p in picks)


def test_pending_grows_over_rounds_and_is_never_proposed_again() -> None:
    t = table(n=60)
    pending: set[int] = set()
    for round_no in range(7):
        picks = select_batch(t, strategy="qlogei", q=8, pending=pending, seed=round_no)
        new = {p.index for p in picks}
        assert not new & pending
        pending |= new
    assert len(pending) == 56
    last = select_batch(t, strategy="thompson", q=8, pending=pending, seed=0)
    assert len(last) == 4 and not {p.index for p in last} & pending  # only 4 remain


def _botorch_discrete(acqf_cls, t: PredictionTable, pending: list[int], q: int, **kw) -> list[int]:
    from botorch.optim import optimize_acqf_discrete

    obj = objective_table(t, calibrated=False)
    model = TableEnsembleModel(obj)
    x_pending = torch.tensor(pending, dtype=torch.float64).view(-1, 1)
    acq = acqf_cls(model, sampler=MemberSampler(obj.shape[0]), X_pending=x_pending, **kw)
    choices = torch.tensor([i for i in range(obj.shape[1]) if i not in pending],
                           dtype=torch.float64).view(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, _ = optimize_acqf_discrete(acq, q=q, choices=choices)
    return x.view(-1).long().tolist()


@pytest.mark.filterwarnings("ignore::botorch.exceptions.warnings.NumericsWarning")
def test_qei_and_qucb_picks_equal_botorch_sequential_greedy() -> None:
    from botorch.acquisition.monte_carlo import qExpectedImprovement, qUpperConfidenceBound

    # members disagree strongly, so every one of the q picks still improves some member
    t = table(n=300, seed=0, spread=1.0)
    pending = [5, 17, 42]
    ours = [p.index for p in select_batch(t, strategy="qlogei", q=5, pending=pending, best_f=1.5,
                                          calibrated=False)]
    assert ours == _botorch_discrete(qExpectedImprovement, t, pending, 5, best_f=1.5)
    ours = [p.index for p in select_batch(t, strategy="qucb", q=4, pending=pending, beta=2.0,
                                          calibrated=False)]
    assert ours == _botorch_discrete(qUpperConfidenceBound, t, pending, 4, beta=2.0)


def test_degenerate_qei_falls_back_to_thompson_instead_of_arbitrary_picks() -> None:
    """One candidate dominating every member leaves zero marginal EI for all others; BoTorch
    would then return the first choices in the list; we sample by member instead."""
    values = np.zeros((3, 50, 1))
    values[:, 7, 0] = 10.0
    values[:, :, 0] += np.random.default_rng(0).normal(size=(3, 50)) * 0.1
    picks = select_batch(PredictionTable(values, ("y",), np.ones(1)), strategy="qlogei", q=3,
                         calibrated=False, seed=0)
    idx = [p.index for p in picks]
    assert idx[0] == 7
    member_best = {int(np.argsort(-values[k, :, 0])[1]) for k in range(3)}
    assert set(idx[1:]) <= member_best


def test_acquisition_values_are_botorch_values_with_pending() -> None:
    t = table(n=100, seed=4)
    picks = select_batch(t, strategy="qlogei", q=3, pending=[1, 2], best_f=1.0, calibrated=False)
    values = [p.acquisition_value for p in picks]
    assert values == sorted(values)  # log EI of a growing batch never decreases
    assert all(np.isfinite(values))


def test_greedy_is_top_mean_and_thompson_uses_member_argmaxes() -> None:
    t = table(n=200, seed=5)
    mean = t.mean[:, 0]
    picks = select_batch(t, strategy="greedy", q=5)
    assert [p.index for p in picks] == list(np.argsort(-mean)[:5])
    th = select_batch(t, strategy="thompson", q=5, seed=2, calibrated=False)
    member_best = set(np.argmax(t.values[:, :, 0], axis=1).tolist())
    assert {p.index for p in th} == member_best or len(member_best) < 5


def test_objectives_minimise_and_stable_makeable_probability() -> None:
    values = np.zeros((4, 3, 2))
    values[:, 0, 0], values[:, 1, 0], values[:, 2, 0] = -0.2, 0.2, 0.0  # e_above_hull
    values[:, :, 1] = [[0.9, 0.9, 0.1]] * 4  # yield
    t = PredictionTable(values, ("e_above_hull", "yield"), np.ones(2))
    p = objective_table(t, StableAndMakeable(yield_column="yield")).mean(axis=0)
    assert p[0] > 0.95 and p[1] < 0.05 and p[2] < 0.1
    assert select_batch(t, strategy="greedy", q=1, objective="-e_above_hull")[0].index == 0
    with pytest.raises(ValueError, match="unknown strategy"):
        select_batch(t, strategy="ei", q=1)
    with pytest.raises(IndexError, match="pending index out of range"):
        select_batch(t, strategy="greedy", q=1, pending=[7])


def _brain_objective_before_the_merge(table: PredictionTable, values: np.ndarray, refs: np.ndarray,
                                      kind: str, use_yield: bool) -> np.ndarray:
    """The campaign objective as controller/loop/brain.py computed it (threshold 0.05 eV/atom,
    yield threshold 0.5, tau 0.02 and 0.08) before it moved to surrogates."""
    e_decomp = values[:, :, table.column("e_form")] - refs[None, :]
    y = values[:, :, table.column("yield")]
    if kind == "stability":
        return -e_decomp
    if kind == "expected_yield":
        return y
    p = 1.0 / (1.0 + np.exp(-np.clip((0.05 - e_decomp) / 0.02, -50, 50)))
    return p / (1.0 + np.exp(-np.clip((y - 0.5) / 0.08, -50, 50))) if use_yield else p


@pytest.mark.parametrize("kind", OBJECTIVE_KINDS)
@pytest.mark.parametrize("use_yield", [False, True])
def test_campaign_objectives_keep_the_values_of_the_brains_formula(kind: str, use_yield: bool) -> None:
    rng = np.random.default_rng(11)
    values = np.stack([rng.normal(-1.5, 0.3, (5, 40)), rng.uniform(-0.2, 1.2, (5, 40))], axis=-1)
    values[:, :2, 0] = [[-40.0, 40.0]] * 5  # far tails, where the logistic is clipped
    t = PredictionTable(values, ("e_form", "yield"), np.array([1.7, 1.2]))
    refs = rng.normal(-1.5, 0.3, 40)
    objective = objective_for(kind, refs=refs, threshold=0.05, yield_threshold=0.5, use_yield=use_yield)
    np.testing.assert_array_equal(objective(t, values),
                                  _brain_objective_before_the_merge(t, values, refs, kind, use_yield))
    calibrated = objective_table(t, objective)  # what select_batch hands to the acquisition
    spread = values.mean(axis=0) + t.inflation * (values - values.mean(axis=0))
    np.testing.assert_array_equal(calibrated, _brain_objective_before_the_merge(t, spread, refs, kind, use_yield))
    with pytest.raises(ValueError, match="unknown objective"):
        objective_for("stable", refs=refs)


def test_the_campaign_config_offers_exactly_the_objective_kinds() -> None:
    assert typing.get_args(AcquisitionSection.model_fields["objective"].annotation) == OBJECTIVE_KINDS


def test_calibrated_members_use_the_inflation_factor() -> None:
    t = table(n=50, seed=6)
    wide = PredictionTable(t.values, t.outputs, np.array([3.0]))
    a, b = objective_table(t), objective_table(wide)
    assert np.allclose(a.mean(axis=0), b.mean(axis=0))
    assert np.allclose(b.std(axis=0), 3.0 * a.std(axis=0))


def test_qehvi_picks_the_pareto_trade_offs_and_respects_pending_and_measured() -> None:
    """Two objectives, members agreeing: the picks are the non-dominated candidates not yet
    measured or in flight; a candidate dominated by a measured one adds no hypervolume."""
    rng = np.random.default_rng(0)
    n = 40
    base = rng.uniform(0.0, 0.5, size=(n, 2))  # dominated filler
    base[3] = (1.0, 0.1)    # pareto: best first objective
    base[8] = (0.1, 1.0)    # pareto: best second objective
    base[12] = (0.8, 0.8)   # pareto: balanced
    base[20] = (0.85, 0.85)  # measured: dominates 12
    values = np.repeat(base[None], 3, axis=0) + 1e-4 * rng.normal(size=(3, n, 2))
    t = PredictionTable(values, ("a", "b"), np.ones(2))
    picks = select_batch(t, strategy="qehvi", q=2, objective=("a", "b"), exclude=[20], pending=[3],
                         calibrated=False)
    idx = [p.index for p in picks]
    assert idx[0] == 8 and not {3, 20} & set(idx)
    # after 8 nothing improves any member's front (12 is dominated by the measured 20): the
    # second pick is the fallback, with zero hypervolume improvement
    assert picks[0].acquisition_value > 0 and picks[1].acquisition_value == 0
    # one objective: EHVI is the expected improvement over the best measured/pending value
    one = select_batch(t, strategy="qehvi", q=1, objective="a", exclude=[20], calibrated=False)
    assert one[0].index == 3
    with pytest.raises(ValueError, match="one or two objectives"):
        select_batch(t, strategy="qehvi", q=1, objective=("a", "b", "a"))
