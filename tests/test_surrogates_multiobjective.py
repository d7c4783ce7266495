"""Multi-objective, cost-aware selection: closed-form 2-D hypervolume improvement against
brute force and against BoTorch's qNEHVI with every member enumerated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surrogates.multiobjective import (
    botorch_qlognehvi,
    hvi_2d,
    pareto_front_2d,
    select_pareto_batch,
)


def hv_brute(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D hypervolume by sweeping the union of boxes [ref, p] over a grid of x cuts."""
    p = points[(points[:, 0] > ref[0]) & (points[:, 1] > ref[1])]
    if len(p) == 0:
        return 0.0
    xs = np.unique(np.concatenate([[ref[0]], p[:, 0]]))
    total = 0.0
    for lo, hi in zip(xs[:-1], xs[1:], strict=True):
        top = p[p[:, 0] >= hi, 1]
        total += (hi - lo) * (top.max() - ref[1] if len(top) else 0.0)
    return total


@pytest.mark.parametrize("seed", range(5))
def test_hypervolume_improvement_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = np.array([-1.0, -0.5])
    base = rng.normal(size=(12, 2))
    base[3] = base[4]  # duplicates and ties must not break the staircase
    base[5, 0] = base[6, 0]
    front = pareto_front_2d(base, ref)
    assert np.all(np.diff(front[:, 0]) > 0) and np.all(np.diff(front[:, 1]) < 0)
    y = np.vstack([rng.normal(size=(40, 2)), front[:2], [[-2.0, 3.0], [5.0, -5.0]]])
    got = hvi_2d(front, ref, y)
    want = [hv_brute(np.vstack([base, row]), ref) - hv_brute(base, ref) for row in y]
    np.testing.assert_allclose(got, want, atol=1e-10)
    np.testing.assert_allclose(hvi_2d(front[:0], ref, y[:3]),
                               [hv_brute(row[None], ref) for row in y[:3]], atol=1e-12)


def table(seed: int, s: int = 4, n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(1, n, 2))
    return centre + 0.3 * rng.normal(size=(s, n, 2))


def test_ehvi_equals_botorch_qnehvi_with_members_enumerated() -> None:
    vals = table(0)
    ref = np.array([-2.5, -2.5])
    baseline, pending = [0, 1, 2, 3], [4]
    sel = select_pareto_batch(vals, q=1, baseline=baseline, pending=pending, ref_point=ref)
    acqf = botorch_qlognehvi(vals, baseline=baseline, pending=pending, ref_point=ref, log=False)
    cand = torch.arange(5, 40, dtype=torch.float64).view(-1, 1, 1)
    with torch.no_grad():
        bt = acqf(cand).numpy()
    # ours for every candidate: the value of a 1-pick batch with the same front
    from surrogates.multiobjective import hvi_2d as h

    ours = np.mean([h(pareto_front_2d(vals[k, baseline + pending], ref), ref, vals[k, 5:])
                    for k in range(vals.shape[0])], axis=0)
    np.testing.assert_allclose(ours, bt, rtol=1e-6, atol=1e-9)
    assert sel[0].index == 5 + int(np.argmax(bt))
    assert sel[0].ehvi == pytest.approx(float(bt.max()), rel=1e-6)


def test_greedy_batch_matches_optimize_acqf_discrete() -> None:
    from botorch.optim import optimize_acqf_discrete

    vals = table(1, n=30)
    ref = np.array([-2.5, -2.5])
    baseline, pending = [0, 1, 2], [3, 4]
    ours = [p.index for p in select_pareto_batch(vals, q=3, baseline=baseline, pending=pending,
                                                  ref_point=ref)]
    acqf = botorch_qlognehvi(vals, baseline=baseline, pending=pending, ref_point=ref, log=False)
    choices = torch.arange(5, 30, dtype=torch.float64).view(-1, 1)
    x, _ = optimize_acqf_discrete(acqf, q=3, choices=choices, unique=True)
    assert ours == [int(v) for v in x.view(-1).round().tolist()]
    assert not set(ours) & set(baseline + pending)


def test_cost_constraint_and_cost_per_unit() -> None:
    rng = np.random.default_rng(2)  # a trade-off arc: most candidates are Pareto-optimal
    angle = rng.uniform(0, np.pi / 2, 50)
    arc = np.stack([np.cos(angle), np.sin(angle)], axis=1) * rng.uniform(0.9, 1.0, (50, 1))
    vals = arc[None] + 0.02 * rng.normal(size=(4, 50, 2))
    cost = rng.uniform(1.0, 10.0, 50)
    sel = select_pareto_batch(vals, q=5, cost=cost, cost_mode="constraint", max_cost=4.0)
    assert all(cost[p.index] <= 4.0 for p in sel) and len(sel) == 5
    cheap = select_pareto_batch(vals, q=5, cost=cost, cost_mode="per_cost", cost_power=2.0)
    plain = select_pareto_batch(vals, q=5)
    assert np.mean([p.cost for p in cheap]) < np.mean([cost[p.index] for p in plain])


def test_bad_inputs_are_named() -> None:
    vals = table(3, n=10)
    with pytest.raises(ValueError, match="members × candidates × 2"):
        select_pareto_batch(vals[:, :, :1])
    with pytest.raises(ValueError, match="max_cost"):
        select_pareto_batch(vals, cost=np.ones(10), cost_mode="constraint")
    with pytest.raises(ValueError, match="cost_mode"):
        select_pareto_batch(vals, cost_mode="cheap")
    with pytest.raises(ValueError, match="positive"):
        select_pareto_batch(vals, cost=-np.ones(10), cost_mode="per_cost")
    with pytest.raises(IndexError, match="pending"):
        select_pareto_batch(vals, pending=[10])
    bad = vals.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        select_pareto_batch(bad)
